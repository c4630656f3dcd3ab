#if canImport(Glibc)
import Glibc
#endif
import Uploader

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

/// A file's upload failed (or its session did): what write, close and fsync report.
///
/// Why its own type: a failed session must answer EIO, never the errno of its cause, so a program
/// that retries on EAGAIN (rate limiting inside the session) does not spin on a dead upload. Only
/// conditions a user can act on keep their own errno: a full account or cache disk (ENOSPC), a name Baidu refuses (EINVAL), and a file past the
/// tier's limit (EFBIG). The engine has logged the reason when it failed.
public struct UploadFailure: Error, Sendable, CustomStringConvertible {
    public let underlying: NetdiskError

    public init(underlying: NetdiskError) { self.underlying = underlying }

    public var errno: Int32 {
        switch underlying {
        case .quotaExceeded, .localDiskFull: return ENOSPC
        case .fileTooLarge: return EFBIG
        // A name Baidu refuses: the program can pick another.
        case .invalidName: return EINVAL
        default: return EIO
        }
    }

    public var description: String { "upload failed: \(underlying)" }

    /// Wraps an engine error; plain filesystem conditions pass through unchanged.
    static func wrap(_ error: any Error) -> any Error {
        if let error = error as? NetdiskError { return UploadFailure(underlying: error) }
        return error
    }
}
