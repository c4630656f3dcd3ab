import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes small private files atomically: temp file (mode 0600) + fsync + rename + fsync of the directory.
///
/// A crash leaves either the old or the new file, never a torn one, and the secret never exists on
/// disk with a wider mode. File I/O is blocking, so async callers use ``BlockingIO``.
public enum AtomicFile {
    public static func write(_ data: [UInt8], to path: String, mode: mode_t = 0o600) throws(NetdiskError) {
        let directory = (path as NSString).deletingLastPathComponent
        try ensureDirectory(directory)
        let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw NetdiskError.localIO("cannot create \(temporary): \(errnoText())") }
        var ok = fchmod(fd, mode) == 0
        var written = 0
        while ok, written < data.count {
            let result = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, data.count - written) }
            if result < 0 { if errno == EINTR { continue }; ok = false } else { written += result }
        }
        ok = ok && fsync(fd) == 0
        let reason = errnoText()
        close(fd)
        guard ok, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw NetdiskError.localIO("cannot write \(path): \(reason)")
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 { fsync(directoryFD); close(directoryFD) }
    }

    public static func read(_ path: String) throws(NetdiskError) -> [UInt8]? {
        guard let data = FileManager.default.contents(atPath: path) else {
            if FileManager.default.fileExists(atPath: path) { throw NetdiskError.localIO("cannot read \(path)") }
            return nil
        }
        return [UInt8](data)
    }

    /// Creates the directory (and parents) with mode 0700 when missing.
    public static func ensureDirectory(_ directory: String) throws(NetdiskError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue { return }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw NetdiskError.localIO("cannot create \(directory): \(error)")
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// Runs blocking work (file I/O, fsync) on a fresh dedicated thread, never on the cooperative pool.
public enum BlockingIO {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () -> Result<T, NetdiskError>) async throws(NetdiskError) -> T {
        try await runOnDedicatedThread(name: "nd.io") { () throws(NetdiskError) -> T in try work().get() }
    }
}
