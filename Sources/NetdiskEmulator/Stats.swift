import Synchronization

/// Counters the admin API reports, so tests can assert what crossed the wire
/// (e.g. "exactly one refresh", "only the missing parts were sent").
final class EmulatorStats: Sendable {
    struct Snapshot: Sendable {
        var calls: [String: Int] = [:]
        var refreshes = 0
        var bytesReceived: Int64 = 0
        /// Partseqs received per uploadid, in arrival order (resends included).
        var partsByUpload: [String: [Int]] = [:]
        /// Parts received per remote path.
        var partsByPath: [String: Int] = [:]
        var faultsFired: [String: Int] = [:]
    }

    private let state = Mutex(Snapshot())

    func call(_ endpoint: String) { state.withLock { $0.calls[endpoint, default: 0] += 1 } }
    func refresh() { state.withLock { $0.refreshes += 1 } }
    func received(_ bytes: Int) { state.withLock { $0.bytesReceived += Int64(bytes) } }
    func fault(_ endpoint: String) { state.withLock { $0.faultsFired[endpoint, default: 0] += 1 } }

    func part(uploadID: String, path: String, partseq: Int) {
        state.withLock {
            $0.partsByUpload[uploadID, default: []].append(partseq)
            $0.partsByPath[path, default: 0] += 1
        }
    }

    var snapshot: Snapshot { state.withLock { $0 } }
    func reset() { state.withLock { $0 = Snapshot() } }
}
