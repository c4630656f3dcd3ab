#if canImport(Glibc)
import Glibc
#endif

/// A failure that is a plain POSIX condition of the filesystem itself (not the cloud's):
/// ENOTEMPTY, EISDIR, EROFS, ENOTSUP... Cloud failures stay `NetdiskError`; the FUSE adapter maps
/// both to errno in one place (`FuseErrno`).
public struct FileSystemError: Error, Sendable, Equatable, CustomStringConvertible {
    public let code: Int32
    public let reason: String

    public init(_ code: Int32, _ reason: String = "") {
        self.code = code
        self.reason = reason
    }

    public var description: String {
        let name = String(cString: strerror(code))
        return reason.isEmpty ? name : "\(name): \(reason)"
    }

    static let notFound = FileSystemError(ENOENT)
    static let notEmpty = FileSystemError(ENOTEMPTY)
    static let isDirectory = FileSystemError(EISDIR)
    static let notDirectory = FileSystemError(ENOTDIR)
    static let readOnly = FileSystemError(EROFS)
    static let notSupported = FileSystemError(ENOTSUP)
    static let badHandle = FileSystemError(EBADF)
    static let busy = FileSystemError(EBUSY)
}
