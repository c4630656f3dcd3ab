import Foundation
import Logging

/// What was learned about an account's streaming, as kept under `$XDG_STATE_HOME/netdiskfs/`.
public struct LearnedStreaming: Codable, Sendable, Equatable {
    public var strategy: StreamingStrategy
    /// When the probe ran (seconds since 1970).
    public var learnedAt: Double
    /// Why each strategy tried before it was refused, by strategy name.
    public var refusals: [String: String]

    public init(strategy: StreamingStrategy, learnedAt: Double = Date().timeIntervalSince1970, refusals: [String: String] = [:]) {
        self.strategy = strategy
        self.learnedAt = learnedAt
        self.refusals = refusals
    }
}

/// The file that remembers ``LearnedStreaming`` for one account and API endpoint (mode 0600, atomic).
public struct StreamingStrategyStore: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// `$XDG_STATE_HOME/netdiskfs/streaming-<uk>-<endpoint hash>.json`: an emulator and the real
    /// service under one account id never share a belief.
    public static func forAccount(uk: Int64, endpoint: String) -> StreamingStrategyStore {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in endpoint.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let name = "streaming-\(uk)-\(String(hash, radix: 16)).json"
        return StreamingStrategyStore(path: XDGDirectories.netdiskfs(.state) + "/" + name)
    }

    public func load() -> LearnedStreaming? {
        guard let bytes = try? AtomicFile.read(path) else { return nil }
        return try? JSONDecoder().decode(LearnedStreaming.self, from: Data(bytes))
    }

    public func save(_ learned: LearnedStreaming) throws(NetdiskError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(learned) else { throw .localIO("cannot encode \(path)") }
        try AtomicFile.write([UInt8](data), to: path)
    }
}

/// The streaming strategy this account takes, shared by every file of a mount (or a `put`).
///
/// It is learned once, by probing the strategies in order, at the first file that needs one, and
/// remembered on disk for `maxAge`. A strategy that a real file's precreate refuses is forgotten
/// and learned again before that file goes on, so the file in hand never fails for it.
public final class StreamingStrategies: @unchecked Sendable {
    private let probe: StreamingStrategyProbe
    private let store: StreamingStrategyStore?
    private let maxAge: TimeInterval
    private let logger: Logger
    private let lock = NSLock()
    private var learned: LearnedStreaming?
    /// After a probe that could not finish (network down, rate limited): no streaming until then.
    private var retryAfter: Date?

    public init(probe: StreamingStrategyProbe, store: StreamingStrategyStore?, maxAge: TimeInterval = 7 * 86_400,
                logger: Logger) {
        self.probe = probe
        self.store = store
        self.maxAge = maxAge
        self.logger = logger
        if let known = store?.load(), Date().timeIntervalSince1970 - known.learnedAt < Self.lifetime(of: known, maxAge: maxAge) {
            learned = known
        }
    }

    /// "Nothing streams" is asked again after an hour: a probe that failed on a fluke must not cost
    /// a week of spooling. A strategy that works is kept for `maxAge`.
    static func lifetime(of learned: LearnedStreaming, maxAge: TimeInterval) -> TimeInterval {
        learned.strategy == .none ? min(maxAge, 3600) : maxAge
    }

    /// What is known now, without probing.
    public var known: LearnedStreaming? { lock.withLock { learned } }

    /// The strategy to use now. Blocks the calling thread (never a cooperative one) for the probe
    /// when nothing is known; other callers wait for that one probe.
    public func current() -> StreamingStrategy {
        lock.lock()
        defer { lock.unlock() }
        if let learned, Date().timeIntervalSince1970 - learned.learnedAt < Self.lifetime(of: learned, maxAge: maxAge) {
            return learned.strategy
        }
        if let retryAfter, retryAfter > Date() { return .none }
        let probe = self.probe
        let outcome = (try? awaitBlocking { () async throws(NetdiskError) -> LearnOutcome in
            await Self.learn(probe)
        }) ?? LearnOutcome(learned: nil, reasons: [:])
        guard let result = outcome.learned else {
            retryAfter = Date().addingTimeInterval(60)
            logger.warning("could not learn how this account streams (\(outcome.reasons.values.joined(separator: "; "))); files take the cached path for now and the probe runs again in a minute")
            return .none
        }
        learned = result
        persist(result)
        if result.strategy == .none {
            let why = StreamingStrategy.probeOrder.map { "\($0.rawValue): \(result.refusals[$0.rawValue] ?? "?")" }
                .joined(separator: "; ")
            logger.warning("this account refuses every streaming upload (\(why)); files are cached on local disk before they upload. Learned once; `netdiskfs selftest` shows the details")
        } else {
            logger.info("this account streams with \(result.strategy.label) (learned by a probe, kept for \(Int(maxAge / 86_400)) days)")
        }
        return result.strategy
    }

    /// A real file's precreate refused `strategy`: forget it, so the next `current()` learns again.
    public func refused(_ strategy: StreamingStrategy, because error: NetdiskError) {
        lock.withLock {
            guard learned?.strategy == strategy else { return }
            logger.warning("streaming with \(strategy.label) was refused (\(error)); learning again")
            learned = nil
            retryAfter = nil
        }
    }

    struct LearnOutcome: Sendable {
        var learned: LearnedStreaming?
        var reasons: [String: String]
    }

    /// Probes (a) then (b). A refusal rules a strategy out; a failure that says nothing about the
    /// strategy (network, rate limit, token) leaves nothing learned.
    static func learn(_ probe: StreamingStrategyProbe) async -> LearnOutcome {
        var reasons: [String: String] = [:]
        for strategy in StreamingStrategy.probeOrder {
            guard let error = await probe.run(strategy) else {
                return LearnOutcome(learned: LearnedStreaming(strategy: strategy, refusals: reasons), reasons: reasons)
            }
            reasons[strategy.rawValue] = "\(error)"
            if !error.refuses(strategy) { return LearnOutcome(learned: nil, reasons: reasons) }
        }
        return LearnOutcome(learned: LearnedStreaming(strategy: .none, refusals: reasons), reasons: reasons)
    }

    private func persist(_ result: LearnedStreaming) {
        guard let store else { return }
        do throws(NetdiskError) {
            try store.save(result)
        } catch {
            logger.warning("cannot remember the streaming strategy in \(store.path): \(error)")
        }
    }
}

extension NetdiskError {
    /// True when the server refused `strategy` as such, as opposed to a failure that says nothing
    /// about it: network, 5xx, rate limit, quota, our own disk. A rejected token refuses only the
    /// web API (which wants a cookie login); on xpan it means the login itself is bad.
    public func refuses(_ strategy: StreamingStrategy) -> Bool {
        switch self {
        case .transport, .rateLimited, .quotaExceeded, .localIO, .localDiskFull, .cancelled, .notLoggedIn: return false
        case .http(let status): return status < 500
        case .tokenInvalid: return strategy == .webPlaceholder
        default: return true
        }
    }
}
