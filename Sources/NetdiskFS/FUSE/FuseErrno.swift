#if canImport(Glibc)
import Glibc
#endif
import Logging
import Uploader

/// The one place where a Swift error becomes an errno for the kernel.
enum FuseErrno {
    /// The negative errno FUSE expects, logging the reason once for failures that are not routine.
    static func code(for error: any Error, operation: StaticString, path: String?, logger: Logger) -> Int32 {
        switch error {
        case let error as NetdiskError:
            switch error {
            case .notFound, .alreadyExists:
                break
            default:
                logger.error("\(operation) \(path ?? "(unlinked)") failed: \(error)")
            }
            return -error.posixErrno
        case let error as FileSystemError:
            return -error.code
        case let error as UploadFailure:
            // The engine logged why the upload failed; say once which call was told.
            logger.debug("\(operation) \(path ?? "(unlinked)"): \(error)")
            return -error.errno
        default:
            logger.error("\(operation) \(path ?? "(unlinked)") failed: \(error)")
            return -EIO
        }
    }
}
