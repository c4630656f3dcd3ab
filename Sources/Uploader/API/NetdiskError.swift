#if canImport(Glibc)
import Glibc
#endif

/// Every failure the client, engine and filesystem can report, typed once.
///
/// Baidu's numeric `errno`/`error_code` values are decoded here (``fromBaidu(code:message:)``)
/// and turned into POSIX errno here (``posixErrno``): the two mappings live in one place so
/// the CLI, the engine and the FUSE adapter can never disagree about what a failure means.
public enum NetdiskError: Error, Sendable, Equatable, CustomStringConvertible {
    /// -6, 111, 31045: the access token is invalid or expired (after one refresh was tried).
    case tokenInvalid(code: Int)
    /// No credentials on disk, or the refresh token was refused.
    case notLoggedIn(String)
    /// 31034, 20012: too many requests.
    case rateLimited(code: Int)
    /// -7, 31062: a name Baidu refuses.
    case invalidName(code: Int)
    /// -8, 31061: the target exists.
    case alreadyExists(code: Int)
    /// -9, 31066: no such file or directory.
    case notFound(code: Int)
    /// -10: the account is full.
    case quotaExceeded
    /// 2, 31023: a parameter the server refused.
    case badParameter(code: Int, message: String)
    /// 10, 31190: create failed because parts, block list or size disagree.
    case createFailed(code: Int)
    /// 31299: the first part of a multi-part file is under 4 MiB.
    case firstPartTooSmall
    /// 31355: the server does not know this uploadid.
    case unknownUploadID
    /// 31363: parts are missing or the upload state expired.
    case uploadExpired
    /// 31364: a part exceeds the tier's slice size.
    case partTooLarge
    /// 31365 or a local check: the file exceeds the tier's maximum size.
    case fileTooLarge(limit: Int64)
    /// 31326: the download was refused for lack of the `pan.baidu.com` User-Agent.
    case badUserAgent
    /// 31360: the dlink expired.
    case dlinkExpired
    /// The server answered a part upload with an MD5 that is not the part's.
    case partChecksumMismatch(partseq: Int, expected: String, received: String)
    /// Any other Baidu errno.
    case server(code: Int, message: String)
    /// An HTTP status that is not a Baidu JSON error (5xx, 403 on a CDN, ...).
    case http(status: Int)
    /// The connection failed (DNS, reset, timeout, TLS).
    case transport(String)
    /// The local disk (the cache directory) is full: ENOSPC, which a user can act on.
    case localDiskFull(String)
    /// The server's answer could not be understood.
    case protocolViolation(String)
    /// Local I/O on the cache or journal failed.
    case localIO(String)
    /// The operation was cancelled (unlink of a file being written, shutdown).
    case cancelled
    /// The account refuses 0-byte files (xpan errno 2, OpenList #264): the mount keeps them locally.
    case emptyFileRefused(code: Int)

    /// Decodes a Baidu `errno` (xpan) or `error_code` (pcs) into a typed error.
    public static func fromBaidu(code: Int, message: String = "") -> NetdiskError {
        switch code {
        case -6, 111, 31045: return .tokenInvalid(code: code)
        case 31034, 20012: return .rateLimited(code: code)
        case -7, 31062: return .invalidName(code: code)
        case -8, 31061: return .alreadyExists(code: code)
        case -9, 31066: return .notFound(code: code)
        case -10: return .quotaExceeded
        case 2, 31023: return .badParameter(code: code, message: message)
        case 10, 31190: return .createFailed(code: code)
        case 31299:
            // One code, three meanings, told apart only by the text (DESIGN.md research): an expired
            // uploadid on superfile2 ("Expried Time Not Match", Baidu's spelling), too many parts
            // ("Invalid param keylist"), and a first part under 4 MiB.
            let lowered = message.lowercased()
            if lowered.contains("time not match") || lowered.contains("expried") || lowered.contains("expired") {
                return .uploadExpired
            }
            if lowered.contains("keylist") { return .badParameter(code: code, message: message) }
            return .firstPartTooSmall
        case 31355: return .unknownUploadID
        case 31363: return .uploadExpired
        case 31364: return .partTooLarge
        case 31365: return .fileTooLarge(limit: 0)
        case 31326: return .badUserAgent
        case 31360: return .dlinkExpired
        default: return .server(code: code, message: message)
        }
    }

    /// True for failures worth retrying with backoff: 5xx, connection errors and rate limits.
    public var isTransient: Bool {
        if case .rateLimited = self { return true }
        return isHostFailure
    }

    /// This failure ends one uploadid, not the file: the uploadid expired or is unknown, or its host
    /// (every part of an uploadid must reach the same one) stopped answering. The parts still at
    /// hand can go again under a fresh uploadid on a freshly located host.
    public var endsOnlyTheUploadID: Bool {
        self == .uploadExpired || self == .unknownUploadID || isHostFailure
    }

    /// The host did not answer usefully: a connection error or a 5xx (not a refusal it sent).
    public var isHostFailure: Bool {
        switch self {
        case .transport: return true
        case .http(let status): return status >= 500
        default: return false
        }
    }

    /// The POSIX errno the filesystem returns for this failure.
    public var posixErrno: Int32 {
        switch self {
        case .tokenInvalid, .notLoggedIn: return EACCES
        case .rateLimited: return EAGAIN
        case .invalidName: return EINVAL
        case .alreadyExists: return EEXIST
        case .notFound: return ENOENT
        case .quotaExceeded, .localDiskFull: return ENOSPC
        case .fileTooLarge: return EFBIG
        case .cancelled: return ECANCELED
        case .emptyFileRefused: return EIO
        case .badParameter, .createFailed, .firstPartTooSmall, .unknownUploadID, .uploadExpired,
             .partTooLarge, .badUserAgent, .dlinkExpired, .partChecksumMismatch, .server, .http,
             .transport, .protocolViolation, .localIO:
            return EIO
        }
    }

    public var description: String {
        switch self {
        case .tokenInvalid(let code): return "access token invalid or expired (errno \(code)); run `netdiskfs login`"
        case .notLoggedIn(let why): return "not logged in: \(why)"
        case .rateLimited(let code): return "rate limited by the server (errno \(code))"
        case .invalidName(let code): return "name not allowed by Baidu (errno \(code))"
        case .alreadyExists(let code): return "already exists (errno \(code))"
        case .notFound(let code): return "no such file or directory (errno \(code))"
        case .quotaExceeded: return "quota exceeded (errno -10)"
        case .badParameter(let code, let message): return "bad parameter (errno \(code)) \(message)"
        case .emptyFileRefused(let code): return "Baidu refuses empty files on this account (errno \(code))"
        case .createFailed(let code): return "create failed: parts, block list or size disagree (errno \(code))"
        case .firstPartTooSmall: return "first part under 4 MiB (errno 31299)"
        case .unknownUploadID: return "unknown uploadid (errno 31355)"
        case .uploadExpired: return "upload state expired or parts missing (errno 31363)"
        case .partTooLarge: return "part larger than the account's slice size (errno 31364)"
        case .fileTooLarge(let limit):
            return limit > 0 ? "file too large: the account allows at most \(limit) bytes" : "file too large (errno 31365)"
        case .badUserAgent: return "download refused: wrong User-Agent (errno 31326)"
        case .dlinkExpired: return "download link expired (errno 31360)"
        case .partChecksumMismatch(let partseq, let expected, let received):
            return "part \(partseq) checksum mismatch: sent \(expected), server stored \(received)"
        case .server(let code, let message): return "server error \(code)\(message.isEmpty ? "" : ": \(message)")"
        case .http(let status): return "HTTP \(status)"
        case .transport(let why): return "connection failed: \(why)"
        case .protocolViolation(let why): return "unexpected server answer: \(why)"
        case .localIO(let why): return "local I/O failed: \(why)"
        case .localDiskFull(let why): return "local disk full: \(why)"
        case .cancelled: return "cancelled"
        }
    }
}
