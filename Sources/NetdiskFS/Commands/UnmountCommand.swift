#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation

/// `netdiskfs unmount MOUNTPOINT`: unmount, then wait until the daemon has committed what was
/// being closed and exited, so a script can rely on its files being in the cloud afterwards.
public struct UnmountCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "unmount",
        abstract: "Unmount a netdiskfs mount and wait for its pending uploads.")

    @Argument(help: "The mountpoint.")
    var mountpoint: String

    @Flag(name: .customShort("z"), help: "Detach now even if files are open; they finish in the background.")
    var lazy = false

    public init() {}

    public func run() throws {
        let mountpoint = MountCommand.absolute(self.mountpoint)
        guard MountTable.isMounted(mountpoint) else {
            FileHandle.standardError.write(Data("netdiskfs: \(mountpoint) is not mounted\n".utf8))
            throw ExitCode(1)
        }
        let daemon = StatusReader.read(mountpoint: mountpoint)?.pid
        let rc = FuseMount.unmount(mountpoint, lazy: lazy)
        guard rc == 0 else {
            let why = rc == EBUSY ? "it is busy (files open; use -z to detach lazily)" : String(cString: strerror(rc))
            FileHandle.standardError.write(Data("netdiskfs: cannot unmount \(mountpoint): \(why)\n".utf8))
            throw ExitCode(1)
        }
        if let daemon {
            while kill(daemon, 0) == 0 && !Self.hasExited(daemon) { usleep(50_000) }
        }
    }

    /// A daemon that exited but was not reaped yet by its parent (a zombie) has exited.
    static func hasExited(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }
}
