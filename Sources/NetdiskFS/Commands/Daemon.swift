#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Starts `netdiskfs mount … -f` as a session leader with its output in the log file, and waits
/// until it reports the mount live (exit 0) or the one-line reason it failed (printed, exit 1).
enum Daemon {
    static func start(mountpoint: String) -> Int32 {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else { return fail("cannot create a pipe: \(String(cString: strerror(errno)))") }
        // Only the dup2'd fd 3 may reach the child: a stray copy of the write end would keep the pipe open.
        for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let logFD: Int32
        do { logFD = try MountLogging.openLogFile(for: mountpoint) } catch { return fail("cannot open the log file: \(error)") }
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, devNull, STDIN_FILENO)
        posix_spawn_file_actions_adddup2(&actions, logFD, STDOUT_FILENO)
        posix_spawn_file_actions_adddup2(&actions, logFD, STDERR_FILENO)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        let setsid: Int16 = 0x80  // POSIX_SPAWN_SETSID (glibc ≥ 2.26): detach from the terminal's session.
        posix_spawnattr_setflags(&attributes, setsid)

        let arguments = ["netdiskfs"] + CommandLine.arguments.dropFirst() + ["-f"]
        var environment = ProcessInfo.processInfo.environment
        environment[MountCommand.readyFDVariable] = "3"
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv, envp)
        close(pipeFDs[1])
        close(devNull)
        close(logFD)
        guard rc == 0 else { return fail("cannot start the daemon: \(String(cString: strerror(rc)))") }

        var answer = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            if count > 0 {
                answer += buffer[0..<count]
                if answer.contains(UInt8(ascii: "\n")) { break }
                continue
            }
            if count < 0 && errno == EINTR { continue }
            break
        }
        close(pipeFDs[0])
        let text = String(decoding: answer, as: UTF8.self)
        if text.hasPrefix("READY") { return 0 }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        if text.isEmpty {
            return fail("the mount daemon exited before mounting; see \(MountLogging.logFile(for: mountpoint).path)")
        }
        FileHandle.standardError.write(Data(text.utf8))
        return 1
    }

    private static func fail(_ message: String) -> Int32 {
        FileHandle.standardError.write(Data("netdiskfs: \(message)\n".utf8))
        return 1
    }
}
