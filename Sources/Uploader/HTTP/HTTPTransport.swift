import Logging
import Synchronization

/// Async HTTP on libcurl: requests are queued to dedicated curl threads and awaited through continuations.
///
/// Every URL passes ``URLPolicy`` (https, or http to loopback only) before it is sent, including each
/// redirect hop. Requests are spread round-robin over a few ``CurlMultiLoop`` threads; each keeps its own
/// connection cache, so connections are reused. URLs are logged only after ``Redaction``.
public final class HTTPTransport: Sendable {
    /// One transport for the whole process: threads and connection caches are shared by every client.
    public static let shared = HTTPTransport(threads: 2)

    private let loops: [CurlMultiLoop]
    private let nextLoop = Counter()
    private let logger: Logger
    public let userAgent: String

    public init(threads: Int = 2, userAgent: String = BaiduProtocol.downloadUserAgent,
                maxConnectionsPerThread: Int = 32,
                logger: Logger = Logger(label: "netdiskfs.http")) {
        self.userAgent = userAgent
        self.logger = logger
        loops = (0..<max(1, threads)).map {
            CurlMultiLoop(name: "nd.curl\($0)", userAgent: userAgent, maxConnections: maxConnectionsPerThread)
        }
    }

    /// Lets the in-flight transfers finish and stops the threads; later requests fail with `.cancelled`.
    public func shutdown() {
        for loop in loops { loop.stop() }
    }

    /// Sends one request; follows redirects when the request asks for it.
    public func send(_ request: HTTPRequest, logger: Logger? = nil) async throws(NetdiskError) -> HTTPResponse {
        let logger = logger ?? self.logger
        var current = request
        var hops = 0
        while true {
            let response = try await sendOnce(current, logger: logger)
            guard current.followRedirects, [301, 302, 303, 307, 308].contains(response.status),
                  let target = response.redirectURL else { return response }
            hops += 1
            guard hops <= 5 else { throw NetdiskError.protocolViolation("more than 5 redirects") }
            current.url = target
            current.method = .get
            current.body = .empty
        }
    }

    private func sendOnce(_ request: HTTPRequest, logger: Logger) async throws(NetdiskError) -> HTTPResponse {
        try URLPolicy.check(request.url)
        if Task.isCancelled { throw NetdiskError.cancelled }
        let transfer = CurlTransfer(request: request)
        let loop = loops[nextLoop.next() % loops.count]
        request.sink?.resume = { [weak transfer] in if let transfer { loop.resume(transfer) } }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<HTTPResponse, NetdiskError>, Never>) in
                transfer.continuation = continuation
                loop.submit(transfer)
            }
        } onCancel: {
            transfer.cancel()
            loop.wake()
        }
        let elapsed = ContinuousClock.now - transfer.startedAt
        let millis = elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000
        switch result {
        case .success(let response):
            logger.debug("HTTP \(request.method.rawValue) \(Redaction.redact(request.url)) -> \(response.status) in \(millis) ms, sent \(request.body.count) B, received \(response.body.count) B")
        case .failure(let error):
            logger.debug("HTTP \(request.method.rawValue) \(Redaction.redact(request.url)) failed after \(millis) ms: \(error)")
        }
        return try result.get()
    }
}

/// A relaxed counter for round-robin choice.
final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
