#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NetdiskEmulator
import Testing
import Uploader

/// Real-mount tests need /dev/fuse. Locally they are skipped without it; with CI=true they run
/// (and fail if the mount cannot be made), never skip.
enum FuseSupport {
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }
    static var deviceUsable: Bool { access("/dev/fuse", R_OK | W_OK) == 0 }
    static var shouldRun: Bool { deviceUsable || isCI }
}

struct CommandResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum TestFailure: Error, CustomStringConvertible {
    case message(String)
    var description: String {
        switch self { case .message(let text): return text }
    }
}

/// Runs blocking work (syscalls on the mount, waiting for processes) on a plain thread, so the
/// cooperative pool stays free for the in-process emulator the mount is talking to.
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            do { continuation.resume(returning: try work()) } catch { continuation.resume(throwing: error) }
        }
    }
}

/// Runs `bash -c script` without blocking the cooperative pool.
///
/// posix_spawn + waitpid on a plain thread, output to temp files: Foundation's Process missed the
/// exit of a child whose own child (the mount daemon) outlives it, and hung in waitUntilExit.
@discardableResult
func shell(_ script: String, environment: [String: String]? = nil, check: Bool = true) async throws -> CommandResult {
    let result = try await onThread { () throws -> CommandResult in try spawnAndWait(["/bin/bash", "-c", script], environment: environment) }
    if check && result.status != 0 {
        throw TestFailure.message("`\(script)` exited \(result.status): \(result.stderr)\(result.stdout.suffix(2000))")
    }
    return result
}

/// A started child process (for commands the test kills or waits on later).
struct Spawned: Sendable {
    let pid: pid_t

    static func start(_ arguments: [String], environment: [String: String]? = nil, output: String = "/dev/null") throws -> Spawned {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let env = environment ?? ProcessInfo.processInfo.environment
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, arguments[0], &actions, nil, argv, envp)
        guard rc == 0 else { throw TestFailure.message("spawn \(arguments[0]): \(rc)") }
        return Spawned(pid: pid)
    }

    /// Blocks (call on a plain thread) until the child exits; its exit status, or 128+signal.
    func wait() -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    var isRunning: Bool {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }
}

func spawnAndWait(_ arguments: [String], environment: [String: String]?) throws -> CommandResult {
    let base = NSTemporaryDirectory() + "netdiskfs-shell-\(UUID().uuidString)"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, base + ".out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, base + ".err", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let env = environment ?? ProcessInfo.processInfo.environment
    let argv = arguments.map { strdup($0) } + [nil]
    let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, arguments[0], &actions, nil, argv, envp)
    guard rc == 0 else { throw TestFailure.message("spawn \(arguments[0]): \(rc)") }
    let status = Spawned(pid: pid).wait()
    defer { unlink(base + ".out"); unlink(base + ".err") }
    let out = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
    let err = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
    return CommandResult(status: status, stdout: out, stderr: err)
}

/// The `netdiskfs` binary built next to this test bundle.
enum Binary {
    static var path: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("netdiskfs").path,
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("netdiskfs").path,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/netdiskfs").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }
}

func isMounted(_ mountpoint: String) -> Bool {
    guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
    return table.split(separator: "\n").contains { $0.split(separator: " ").count > 4 && $0.split(separator: " ")[4] == mountpoint }
}

/// An in-process emulator, a logged-in config directory and a foreground `netdiskfs mount` on a temp mountpoint.
final class MountFixture: @unchecked Sendable {
    let directory: URL
    let mountpoint: String
    let emulator: EmulatorServer
    let environment: [String: String]
    let client: BaiduClient
    let remoteRoot: String
    private(set) var daemon: Spawned?

    /// The emulator's reading of Baidu: on `documented`, empty files stay in the mount's overlay.
    let profile: EmulatorProfile

    private init(directory: URL, emulator: EmulatorServer, client: BaiduClient, remoteRoot: String, environment: [String: String],
                 profile: EmulatorProfile) {
        self.profile = profile
        self.directory = directory
        self.mountpoint = directory.appendingPathComponent("mnt").path
        self.emulator = emulator
        self.client = client
        self.remoteRoot = remoteRoot
        self.environment = environment
    }

    var path: String { directory.path }
    func local(_ name: String) -> String { directory.appendingPathComponent("local").appendingPathComponent(name).path }
    func mounted(_ name: String) -> String { mountpoint + "/" + name }

    static func make(emulatorOptions: EmulatorOptions = EmulatorOptions()) async throws -> MountFixture {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("netdiskfs-mount-\(UUID().uuidString.prefix(8))")
        for sub in ["mnt", "local", "config", "state", "cache", "data", "emulator"] {
            try FileManager.default.createDirectory(at: directory.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        var options = emulatorOptions
        options.dataDirectory = directory.appendingPathComponent("emulator").path
        // `NETDISKFS_TEST_PROFILE=documented scripts/test`: the whole mount suite against the strict
        // reading of Baidu (a test that picked a profile itself keeps it).
        if options.profile == .default, let name = ProcessInfo.processInfo.environment["NETDISKFS_TEST_PROFILE"] {
            guard let profile = EmulatorProfile.named(name) else { throw TestFailure.message("unknown NETDISKFS_TEST_PROFILE \(name)") }
            options.profile = profile
        }
        let emulator = try await EmulatorServer.start(options)
        var environment = ProcessInfo.processInfo.environment
        environment["XDG_CONFIG_HOME"] = directory.appendingPathComponent("config").path
        environment["XDG_STATE_HOME"] = directory.appendingPathComponent("state").path
        environment["XDG_CACHE_HOME"] = directory.appendingPathComponent("cache").path
        environment["XDG_DATA_HOME"] = directory.appendingPathComponent("data").path
        environment["XDG_RUNTIME_DIR"] = directory.appendingPathComponent("state").path
        environment["NETDISKFS_ENDPOINT"] = nil
        environment["NETDISKFS_CONFIG_DIR"] = nil
        let settings = try ResolvedSettings.resolve(configDirectory: directory.appendingPathComponent("config/netdiskfs").path,
                                                    endpoint: emulator.baseURL, environment: environment)
        let client = try await ClientFactory.loginToEmulator(settings: settings)
        return MountFixture(directory: directory, emulator: emulator, client: client, remoteRoot: settings.remoteRoot,
                            environment: environment, profile: options.profile)
    }

    /// Starts `netdiskfs mount -f` and waits until the kernel shows the mount.
    func mount(_ extra: [String] = []) async throws {
        let arguments = [Binary.path, "mount", "-f", "--endpoint", emulator.baseURL, "--cache-dir", path + "/cache"] + extra + [mountpoint]
        let daemon = try Spawned.start(arguments, environment: environment, output: path + "/mount.stderr")
        self.daemon = daemon
        let deadline = Date().addingTimeInterval(30)
        while !isMounted(mountpoint) {
            if !daemon.isRunning { throw TestFailure.message("netdiskfs mount exited: \(daemonLog())") }
            if Date() > deadline { throw TestFailure.message("mount did not appear within 30 s: \(daemonLog())") }
            try await Task.sleep(for: .milliseconds(50))
        }
        // A writable mount learns how the account streams in the background (a probe upload): let it
        // finish, so tests that count calls or sample the cloud see only their own work.
        if !extra.contains("--read-only") {
            let state = path + "/state/netdiskfs"
            let learnBy = Date().addingTimeInterval(20)
            while Date() < learnBy && daemon.isRunning {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: state)) ?? []
                if names.contains(where: { $0.hasPrefix("streaming-") }) || daemonLog().contains("could not learn how this account streams") { break }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    func daemonLog() -> String {
        (try? String(contentsOfFile: path + "/mount.stderr", encoding: .utf8)) ?? ""
    }

    /// Unmounts and waits for the daemon to exit (it commits pending closes first).
    func unmount() async {
        if isMounted(mountpoint) { _ = try? await shell("fusermount3 -u \(mountpoint) || fusermount3 -u -z \(mountpoint)", check: false) }
        if let daemon {
            let deadline = Date().addingTimeInterval(60)
            while daemon.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if daemon.isRunning { kill(daemon.pid, SIGKILL); _ = try? await onThread { daemon.wait() } }
            self.daemon = nil
        }
        if isMounted(mountpoint) { _ = try? await shell("fusermount3 -u -z \(mountpoint)", check: false) }
    }

    func tearDown() async {
        await unmount()
        await emulator.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `/__emulator/files`: every path in the cloud with its true content MD5.
    func cloudFiles() async throws -> [String: (size: Int64, md5: String?)] {
        let data = Data(try await shell("curl -sf \(emulator.baseURL)/__emulator/files").stdout.utf8)
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let files = object["files"] as? [[String: Any]] else { throw TestFailure.message("bad /__emulator/files answer") }
        var result: [String: (Int64, String?)] = [:]
        for file in files {
            guard let path = file["path"] as? String else { continue }
            result[path] = ((file["size"] as? NSNumber)?.int64Value ?? -1, file["md5"] as? String)
        }
        return result
    }

    func remote(_ name: String) -> String { remoteRoot == "/" ? "/" + name : remoteRoot + "/" + name }
}

/// Runs `body` against a fresh mounted fixture and always unmounts.
func withMount(_ extra: [String] = [], emulatorOptions: EmulatorOptions = EmulatorOptions(),
               _ body: (MountFixture) async throws -> Void) async throws {
    let fixture = try await MountFixture.make(emulatorOptions: emulatorOptions)
    do {
        try await fixture.mount(extra)
        try await body(fixture)
    } catch {
        await fixture.tearDown()
        throw error
    }
    await fixture.tearDown()
}
