import Foundation
import Logging

/// One account-wide pause when Baidu answers 31034 ("hit the frequency control").
///
/// Why account-wide: the limit is the account's, not the call's. With 64 writers each backing off
/// on its own, the other 63 keep hitting the limit and it never lifts. Here the first 31034 pauses
/// every call of the client; a hit after a pause ended doubles the next one (1 s up to 60 s), and a
/// success resets it. It says so once in the log each time it engages, not once per call.
public actor FrequencyControl {
    private let logger: Logger
    private var resumeAt: ContinuousClock.Instant?
    private var pause: Duration = .zero
    private var engaged = false
    private let minimum: Duration
    private let maximum: Duration

    public init(logger: Logger, minimum: Duration = .seconds(1), maximum: Duration = .seconds(60)) {
        self.logger = logger
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Waits out a pause in force (bounded by `maximum`).
    func waitTurn() async {
        while let resumeAt, resumeAt > .now {
            do { try await Task.sleep(until: resumeAt, clock: .continuous) } catch { return }
        }
    }

    func limited(code: Int) {
        // Calls already in flight when the pause began answer 31034 too: they do not lengthen it.
        if let resumeAt, resumeAt > .now { return }
        pause = pause == .zero ? minimum : min(pause * 2, maximum)
        resumeAt = .now + pause
        if !engaged {
            engaged = true
            logger.warning("Baidu frequency control (errno \(code)): every call of this account pauses, \(pause) at first, longer if it goes on")
        }
    }

    func succeeded() {
        guard engaged || pause != .zero else { return }
        if engaged { logger.info("Baidu frequency control lifted") }
        engaged = false
        pause = .zero
        resumeAt = nil
    }

    public var isEngaged: Bool { engaged }
    /// The pause the last engagement set.
    var currentPause: Duration { pause }
}
