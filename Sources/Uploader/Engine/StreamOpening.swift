import Foundation

/// The streaming precreate of one file, run on its own thread while the writer goes on filling
/// the next parts.
///
/// Why: the precreate is a round trip, and the writer used to wait for it with its first full part
/// in hand (100 ms of a 4.7 s SVIP copy at 100 ms per call) while the window had room for three
/// more. The writer waits for it only when it must: before it would wait for memory (a file never
/// waits for memory while holding a part it could send, unless the write now waiting is about to
/// change that part), past the widened window, and at the commit.
final class StreamOpening: @unchecked Sendable {
    enum Outcome: Sendable {
        case opened(uploadID: String, strategy: StreamingStrategy)
        /// The account streams no way, or kept refusing: this file takes another path.
        case refused
    }

    private let condition = NSCondition()
    private var result: Result<Outcome, NetdiskError>?

    /// Starts `work` at once on a dedicated thread (it may block on the network, within the
    /// client's own timeouts); `onAnswer` runs on that thread once the outcome is known.
    init(_ work: @escaping @Sendable () throws(NetdiskError) -> Outcome, onAnswer: (@Sendable () -> Void)? = nil) {
        NamedThread.start("nd.precreate", stackSize: 1 << 20) { [self] in
            let ended: Result<Outcome, NetdiskError>
            do throws(NetdiskError) { ended = .success(try work()) } catch { ended = .failure(error) }
            condition.lock()
            result = ended
            condition.broadcast()
            condition.unlock()
            onAnswer?()
        }
    }

    /// One that already answered (a restart's precreate, run by the writer itself).
    init(answered outcome: Outcome) {
        result = .success(outcome)
    }

    /// The precreate's error once it failed (a quota, a lost login): what fsync reports.
    var error: NetdiskError? {
        if case .failure(let error)? = outcome(waiting: false) { return error }
        return nil
    }

    /// True once the precreate answered that this file must take another path.
    var refused: Bool {
        if case .success(.refused)? = outcome(waiting: false) { return true }
        return false
    }

    /// What the precreate gave; nil while it runs, unless `waiting`, which blocks until it ends.
    func outcome(waiting: Bool) -> Result<Outcome, NetdiskError>? {
        condition.lock(); defer { condition.unlock() }
        while waiting && result == nil { condition.wait() }
        return result
    }
}
