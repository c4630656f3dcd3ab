#if canImport(Glibc)
import Glibc
#endif
import CFuseShim
import Foundation
import Logging

/// One mounted filesystem: libfuse handle, mount, multi-threaded loop, unmount.
///
/// Lifecycle: `init` creates the handle and mounts (so start errors surface before we report
/// success), `run` serves requests until the kernel ends the connection (fusermount3 -u,
/// `netdiskfs unmount`, or `requestUnmount` from a signal), then tears down. libfuse's loop joins
/// its workers after each finishes the request it holds, so a close() being committed completes.
final class FuseMount: @unchecked Sendable {
    enum MountError: Error, CustomStringConvertible {
        case badOptions
        case mountFailed(String)
        var description: String {
            switch self {
            case .badOptions: return "libfuse refused the mount options"
            case .mountFailed(let mountpoint): return "cannot mount on \(mountpoint)"
            }
        }
    }

    let mountpoint: String
    private let fuse: OpaquePointer
    private let retainedFileSystem: Unmanaged<NetdiskFileSystem>

    init(fileSystem: NetdiskFileSystem, mountpoint: String, mountOptions: [String]) throws {
        self.mountpoint = mountpoint
        self.retainedFileSystem = Unmanaged.passRetained(fileSystem)
        // libfuse copies the table in fuse_new.
        var operations = FuseCallbacks.operations()
        var arguments = ["netdiskfs"]
        for option in mountOptions where !option.isEmpty { arguments += ["-o", option] }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        let userData = retainedFileSystem.toOpaque()
        let made = argv.withUnsafeMutableBufferPointer { argv in
            netdiskfs_fuse_new(Int32(arguments.count), argv.baseAddress, &operations, userData)
        }
        guard let made else {
            retainedFileSystem.release()
            throw MountError.badOptions
        }
        fuse = made
        guard netdiskfs_fuse_mount(fuse, mountpoint) == 0 else {
            fuse_destroy(fuse)
            retainedFileSystem.release()
            throw MountError.mountFailed(mountpoint)
        }
    }

    /// Serves requests on up to `threads` libfuse workers; returns after unmount.
    func run(threads: Int) -> Int32 {
        let rc = netdiskfs_fuse_loop_mt(fuse, UInt32(max(1, threads)), 16)
        retainedFileSystem.takeUnretainedValue().shutdown()
        netdiskfs_fuse_teardown(fuse)
        retainedFileSystem.release()
        return rc
    }

    /// Detaches the mount (lazily: open files keep working until closed, then the loop ends).
    static func unmount(_ mountpoint: String, lazy: Bool) -> Int32 {
        if geteuid() == 0 {
            if umount2(mountpoint, lazy ? Int32(MNT_DETACH) : 0) == 0 { return 0 }
            return errno
        }
        return runFusermount(lazy ? ["-u", "-z", mountpoint] : ["-u", mountpoint])
    }

    private static func runFusermount(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        process.arguments = arguments
        do {
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus == 0 ? 0 : EBUSY
        } catch {
            return ENOENT
        }
    }
}
