import Synchronization
/// The request and response types of the libcurl transport.
public enum HTTPMethod: String, Sendable {
    case get = "GET"
    case post = "POST"
}

/// A request body the transport streams to curl from memory.
///
/// `multipart` sends prefix + part + suffix as one body without concatenating them, so a part
/// (up to 32 MiB) is read by curl straight from the caller's buffer: no copy on our side.
public enum HTTPBody: Sendable {
    case empty
    case bytes([UInt8])
    case multipart(prefix: [UInt8], part: PartBytes, suffix: [UInt8])

    public var count: Int {
        switch self {
        case .empty: return 0
        case .bytes(let bytes): return bytes.count
        case .multipart(let prefix, let part, let suffix): return prefix.count + part.count + suffix.count
        }
    }
}

/// Memory a successful (2xx) response body is written into, instead of a growing array.
///
/// Why: a read-ahead window (up to 16 MiB) grown in a Swift array lives in malloc's arenas, which
/// glibc does not give back while other windows sit above it; a 1 GiB `cat` then kept ~100 MiB
/// resident past its budget. The reader hands in an mmapped buffer it reserved in the budget.
/// Only the transport's loop thread calls `write` while the transfer runs.
public class ResponseSink: @unchecked Sendable {
    enum Answer {
        case accepted
        /// Not now: curl pauses the transfer and hands the same bytes again after ``resume``.
        case pause
        case refused
    }

    private let resumer = Mutex<(@Sendable () -> Void)?>(nil)
    /// Set by the transport for each transfer: un-pauses it (callable from any thread).
    var resume: (@Sendable () -> Void)? {
        get { resumer.withLock { $0 } }
        set { resumer.withLock { $0 = newValue } }
    }

    init() {}

    /// A new attempt (or redirect hop) starts.
    func attemptStarted() {}

    /// A 206 answer's bytes, in order.
    func write(_ bytes: UnsafeRawBufferPointer) -> Answer { .refused }
}

/// A sink of fixed capacity: one ranged read into a buffer the caller owns.
public final class BufferSink: ResponseSink, @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    /// Bytes received so far (reset when an attempt starts over).
    public internal(set) var count = 0

    public init(base: UnsafeMutableRawPointer, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    override func attemptStarted() { count = 0 }

    override func write(_ bytes: UnsafeRawBufferPointer) -> Answer {
        guard let source = bytes.baseAddress else { return .accepted }
        guard count + bytes.count <= capacity else { return .refused }
        (base + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
        return .accepted
    }
}

public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var url: String
    /// Complete header lines, `Name: value`.
    public var headers: [String]
    public var body: HTTPBody
    /// Whole-transfer limit in seconds; 0 means none (large parts rely on the stall limit instead).
    public var timeout: Double
    /// Abort when less than ``stallRate`` flows for this many seconds.
    public var stallTimeout: Int
    /// Bytes per second under which a transfer counts as stalled: a trickle is a stall.
    public static let stallRate = 1024
    /// Capacity to reserve for the response body (a download's range length).
    public var expectedResponseSize: Int
    /// Responses larger than this are refused rather than buffered without bound.
    public var maxResponseSize: Int
    /// Follow 3xx answers (downloads: dlink → CDN); each hop is checked by ``URLPolicy``.
    public var followRedirects: Bool
    /// Where a 206 answer's body goes (nil: into ``HTTPResponse/body``). Other answers, errors
    /// and redirects included, still arrive in `body`.
    public var sink: ResponseSink?

    public init(method: HTTPMethod, url: String, headers: [String] = [], body: HTTPBody = .empty,
                timeout: Double = 120, stallTimeout: Int = 60, expectedResponseSize: Int = 0,
                maxResponseSize: Int = 64 << 20, followRedirects: Bool = false) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.stallTimeout = stallTimeout
        self.expectedResponseSize = expectedResponseSize
        self.maxResponseSize = maxResponseSize
        self.followRedirects = followRedirects
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    /// The target of a 3xx answer, as curl resolved it against the request URL.
    public var redirectURL: String?
    /// New connections this exchange had to open (0 when it reused a kept-alive one).
    public var connectionsOpened: Int

    public init(status: Int, body: [UInt8], redirectURL: String? = nil, connectionsOpened: Int = 0) {
        self.status = status
        self.body = body
        self.redirectURL = redirectURL
        self.connectionsOpened = connectionsOpened
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}
