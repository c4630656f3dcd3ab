import Foundation

/// How many parts one stream needs on the wire to hide the cloud's round trip: the stream's
/// bandwidth-delay product, in parts, from what it measures as it goes.
///
/// Why: a stream used to hold as many slices as the memory budget allowed, whatever the network.
/// Where the cloud answers at once, that memory bought nothing (a `cp` of 1 GiB ran as fast with
/// 40 MiB as with 64), yet it was what took the daemon past its RSS promise. Each part pays a round
/// trip once; while it waits for its answer, others must be sending. So a stream needs the part
/// sending, `⌈bandwidth × round trip / slice⌉` more awaiting answers, and one for jitter: three
/// where the cloud is near, every buffer the budget holds at 100 ms per call. The budget stays the
/// ceiling either way.
///
/// - round trip: the stream's precreate, a call with no payload. Parts are not timed for it: on a
///   loaded machine a part's time is mostly its share of the CPU (hashing, copying), and more parts
///   in flight only stretch each one; such a measure asks for ever more memory while buying nothing.
///   Where a part waits longer than a call does, the measured bandwidth below is what grows.
/// - bandwidth: the rate at which the stream's recent parts were acknowledged; 1 GB/s until enough
///   have been. Too few parts in flight deliver too little, and the answer is then more parts than
///   now, so the target climbs until the link or the CPU, not the round trip, bounds it.
final class UploadPace: @unchecked Sendable {
    private let lock = NSLock()
    private let slice: Int
    private let maximum: Int
    private var roundTrip: Double?
    /// The latest answers, oldest first: when each came and the bytes it acknowledged.
    private var answers: [(at: ContinuousClock.Instant, bytes: Int)] = []
    private static let window = 16
    static let assumedBandwidth = 1e9

    /// `maximum`: parts the stream may ever have on the wire (its upload threads).
    init(slice: Int, maximum: Int) {
        self.slice = max(1, slice)
        self.maximum = max(1, maximum)
    }

    /// Parts this stream should have on the wire now, at most the maximum. Until the precreate
    /// answered, the maximum: nothing is known, and parts cannot go yet anyway.
    var partsInFlight: Int {
        lock.withLock {
            guard let roundTrip else { return maximum }
            let awaiting = (bandwidth() * roundTrip / Double(slice)).rounded(.up)
            guard awaiting.isFinite else { return maximum }
            return min(maximum, 2 + Int(min(max(awaiting, 0), 1e6)))
        }
    }

    /// Bytes per second acknowledged over the latest answers (after the first of them).
    private func bandwidth() -> Double {
        guard answers.count >= 4, let first = answers.first, let last = answers.last else { return Self.assumedBandwidth }
        let span = (last.at - first.at).seconds
        guard span > 0 else { return Self.assumedBandwidth }
        return Double(answers.dropFirst().reduce(0) { $0 + $1.bytes }) / span
    }

    /// What the precreate took, once it answered.
    var precreateRoundTrip: Double? { lock.withLock { roundTrip } }

    /// The stream's precreate took `seconds`.
    func precreateAnswered(after seconds: Double) {
        lock.withLock { roundTrip = seconds }
    }

    /// A part of `bytes` was acknowledged (`now`: when, for tests).
    func acknowledged(bytes: Int, now: ContinuousClock.Instant = .now) {
        lock.withLock {
            answers.append((now, bytes))
            if answers.count > Self.window { answers.removeFirst() }
        }
    }
}

extension Duration {
    /// In seconds, as a Double.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
