#if canImport(Glibc)
import Glibc
#endif
import CFuseShim
import Foundation

/// The process behind the current FUSE request.
///
/// FUSE gives the calling *thread's* id. A multi-threaded program may open a file in one thread
/// and close it in another, and must still get its commit at close, so handles compare thread
/// groups (processes): `Tgid` in /proc/TID/status. A thread whose status cannot be read (it has
/// gone) stands for itself.
enum FuseCaller {
    static func process() -> pid_t {
        let tid = netdiskfs_fuse_caller_pid()
        guard tid > 0 else { return tid }
        return threadGroup(of: tid) ?? tid
    }

    /// Who the caller is: what it creates is theirs (with --allow-other, other users create too).
    static func owner() -> (uid: UInt32, gid: UInt32) {
        var uid = uid_t(0), gid = gid_t(0)
        netdiskfs_fuse_caller_ids(&uid, &gid)
        return (UInt32(uid), UInt32(gid))
    }

    static func threadGroup(of tid: pid_t) -> pid_t? {
        let fd = open("/proc/\(tid)/status", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        let text = String(decoding: buffer[0..<n], as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Tgid:") }) else { return nil }
        return pid_t(line.dropFirst(5).trimmingCharacters(in: .whitespaces))
    }
}
