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

public struct HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var url: String
    /// Complete header lines, `Name: value`.
    public var headers: [String]
    public var body: HTTPBody
    /// Whole-transfer limit in seconds; 0 means none (large parts rely on the stall limit instead).
    public var timeout: Double
    /// Abort when fewer than 1 byte/s flows for this many seconds.
    public var stallTimeout: Int
    /// Capacity to reserve for the response body (a download's range length).
    public var expectedResponseSize: Int
    /// Responses larger than this are refused rather than buffered without bound.
    public var maxResponseSize: Int
    /// Follow 3xx answers (downloads: dlink → CDN); each hop is checked by ``URLPolicy``.
    public var followRedirects: Bool

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
