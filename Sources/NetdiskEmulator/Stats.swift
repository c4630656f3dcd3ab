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
        /// Download bodies being sent now, per dlink and account-wide, and the most seen at once.
        var openDownloads: [String: Int] = [:]
        var openDownloadsTotal = 0
        var peakDownloadsPerLink: [String: Int] = [:]
        var peakDownloads = 0
        var downloadsRefused = 0
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

    /// Counts a download body starting; false (and nothing counted) when `limit` > 0 connections are open.
    func downloadOpened(_ link: String, limit: Int) -> Bool {
        state.withLock {
            if limit > 0 && $0.openDownloadsTotal >= limit {
                $0.downloadsRefused += 1
                return false
            }
            $0.openDownloads[link, default: 0] += 1
            $0.openDownloadsTotal += 1
            $0.peakDownloadsPerLink[link] = max($0.peakDownloadsPerLink[link] ?? 0, $0.openDownloads[link]!)
            $0.peakDownloads = max($0.peakDownloads, $0.openDownloadsTotal)
            return true
        }
    }

    func downloadClosed(_ link: String) {
        state.withLock {
            $0.openDownloads[link, default: 1] -= 1
            if $0.openDownloads[link] == 0 { $0.openDownloads[link] = nil }
            $0.openDownloadsTotal -= 1
        }
    }

    var snapshot: Snapshot { state.withLock { $0 } }
    /// Forgets the counts but not the downloads still open (their close must still balance).
    func reset() {
        state.withLock {
            let (open, total) = ($0.openDownloads, $0.openDownloadsTotal)
            $0 = Snapshot()
            $0.openDownloads = open
            $0.openDownloadsTotal = total
        }
    }
}
