/// Bounded exponential backoff with full jitter for transient failures (5xx, connection errors, 31034/20012).
public struct RetryPolicy: Sendable {
    /// Retries after the first attempt; 0 disables retrying.
    public var maxRetries: Int
    public var baseDelay: Double
    public var maxDelay: Double

    public init(maxRetries: Int = 5, baseDelay: Double = 0.25, maxDelay: Double = 8) {
        self.maxRetries = maxRetries
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    public static let none = RetryPolicy(maxRetries: 0)

    /// The wait before retry number `retry` (1-based): uniform in [cap/2, cap], cap = min(max, base·2^(retry-1)).
    /// Half-jitter keeps retries spread out without ever retrying immediately.
    public func delay(beforeRetry retry: Int) -> Double {
        let cap = min(maxDelay, baseDelay * Double(1 << min(max(retry - 1, 0), 20)))
        return Double.random(in: (cap / 2)...max(cap, cap / 2))
    }

    public func shouldRetry(_ error: NetdiskError, afterRetries retries: Int) -> Bool {
        error.isTransient && retries < maxRetries
    }
}
