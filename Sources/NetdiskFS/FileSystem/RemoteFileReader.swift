import Foundation
import Uploader

/// Where a reader gets bytes of a remote file (the dlink cache; a counting double in tests).
protocol RangeSource: Sendable {
    /// Blocks the calling (FUSE or helper) thread until the range has arrived.
    func download(fsID: UInt64, offset: Int64, length: Int) throws(NetdiskError) -> [UInt8]
}

extension DownloadLinkCache: RangeSource {}

/// Reads one remote file through ranged downloads.
///
/// Why it is shaped this way: the kernel's read-ahead sends several 1 MiB reads at once on different
/// FUSE threads, so a sequential `cat` arrives slightly out of order. A reader that treats every
/// out-of-order request as a random seek collapses to small ranges (measured: 752 downloads of
/// ~1.4 MiB for 1 GiB). Here a read counts as sequential when it lands near the furthest point read
/// so far or inside data held or in flight; the last windows stay in memory for late requests,
/// and each new read-ahead window doubles, up to `maxWindow`, while the stream goes on.
/// Random reads fetch only `randomReadSize`. Memory: every window is reserved in the shared
/// `ReadAheadBudget`; without room, read-ahead stops instead of memory growing.
final class RemoteFileReader: @unchecked Sendable {
    struct Tuning: Sendable {
        var initialWindow = 1 << 20
        var maxWindow = 16 << 20
        var randomReadSize = 256 << 10
        /// Windows fetched ahead concurrently: several ranged downloads overlap each other and the reads.
        var prefetchDepth = 3
        /// Completed windows kept for reads the kernel sends late.
        var heldWindows = 2
        /// How far from the furthest read a request may land and still count as sequential.
        var reorderSlack: Int64 = 8 << 20
    }

    private struct Window {
        var start: Int64
        var bytes: [UInt8]
        var reserved: Int
        var end: Int64 { start + Int64(bytes.count) }
        func contains(_ position: Int64) -> Bool { position >= start && position < end }
    }

    /// A window being fetched on a background thread. It holds `length` bytes of the budget until
    /// the reader takes its bytes or, once abandoned, until its download ends (no thread waits for it).
    private final class Prefetch: @unchecked Sendable {
        let start: Int64
        let length: Int
        let done = Gate()
        /// Set before `done` opens; read only after waiting on it.
        private(set) var result: Result<[UInt8], NetdiskError>?
        private let state = NSLock()
        private var finished = false
        private var abandoned = false
        var end: Int64 { start + Int64(length) }
        init(start: Int64, length: Int) {
            self.start = start
            self.length = length
        }
        func contains(_ position: Int64) -> Bool { position >= start && position < end }

        func finish(_ outcome: Result<[UInt8], NetdiskError>, budget: ReadAheadBudget) {
            let wasAbandoned = state.withLock { () -> Bool in
                result = outcome
                finished = true
                return abandoned
            }
            done.open()
            if wasAbandoned { budget.release(length) }
        }

        /// The reader no longer wants it: its budget goes back now, or when the download ends.
        func abandon(budget: ReadAheadBudget) {
            let wasFinished = state.withLock { () -> Bool in
                abandoned = true
                return finished
            }
            if wasFinished { budget.release(length) }
        }
    }

    let entry: RemoteEntry
    private let source: any RangeSource
    private let budget: ReadAheadBudget
    private let tuning: Tuning
    private let lock = NSLock()
    /// Completed windows, ascending by start.
    private var windows: [Window] = []
    /// Read-ahead in flight, ascending by start.
    private var prefetches: [Prefetch] = []
    /// The furthest offset a sequential read has reached.
    private var frontier: Int64 = 0
    private var window: Int

    init(entry: RemoteEntry, links: any RangeSource, budget: ReadAheadBudget, tuning: Tuning = Tuning()) {
        self.entry = entry
        self.source = links
        self.budget = budget
        self.tuning = tuning
        self.window = tuning.initialWindow
    }

    deinit {
        for held in windows { budget.release(held.reserved) }
        for prefetch in prefetches { prefetch.abandon(budget: budget) }
    }

    /// Copies up to `buffer.count` bytes at `offset`; returns the count (0 at end of file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        lock.lock()
        defer { lock.unlock() }
        let size = entry.size
        guard offset < size, buffer.count > 0 else { return 0 }
        let wanted = Int(min(Int64(buffer.count), size - offset))
        let sequential = isSequential(offset)
        if !sequential {
            // The reader jumped: what is in flight no longer follows it.
            for prefetch in prefetches { prefetch.abandon(budget: budget) }
            prefetches.removeAll()
            window = tuning.initialWindow
        }
        var copied = 0
        while copied < wanted {
            let position = offset + Int64(copied)
            if let held = windows.first(where: { $0.contains(position) }) {
                let from = Int(position - held.start)
                let count = min(wanted - copied, held.bytes.count - from)
                held.bytes.withUnsafeBytes { source in
                    buffer.baseAddress!.advanced(by: copied).copyMemory(from: source.baseAddress!.advanced(by: from), byteCount: count)
                }
                copied += count
                continue
            }
            if let index = prefetches.firstIndex(where: { $0.contains(position) }) {
                let pending = prefetches.remove(at: index)
                pending.done.wait()
                if case .success(let bytes) = pending.result!, !bytes.isEmpty {
                    hold(Window(start: pending.start, bytes: bytes, reserved: pending.length))
                } else {
                    budget.release(pending.length)
                    // A direct fetch of the same range reports the error, or succeeds on a second try.
                    try fetchDirect(at: position, length: pending.length, needed: wanted - copied)
                }
                continue
            }
            try fetchDirect(at: position, length: sequential ? window : tuning.randomReadSize, needed: wanted - copied)
        }
        if sequential {
            frontier = max(frontier, offset + Int64(copied))
            startPrefetchIfUseful()
        } else {
            frontier = offset + Int64(copied)
        }
        return copied
    }

    /// Near the furthest read, or inside data held or in flight.
    private func isSequential(_ offset: Int64) -> Bool {
        if offset == frontier { return true }
        if windows.contains(where: { $0.contains(offset) }) || prefetches.contains(where: { $0.contains(offset) }) { return true }
        return offset > frontier - tuning.reorderSlack && offset < frontier + tuning.reorderSlack
    }

    /// Keeps the newest windows (by position) and the one just fetched; releases the rest.
    private func hold(_ fetched: Window) {
        windows.append(fetched)
        windows.sort { $0.start < $1.start }
        while windows.count > max(1, tuning.heldWindows) {
            let index = windows.firstIndex { $0.start != fetched.start } ?? 0
            budget.release(windows.remove(at: index).reserved)
        }
    }

    /// Fetches a range now, never overlapping data already held or in flight after it. Beyond
    /// `needed` the range is read-ahead, taken only if the budget has room for it.
    private func fetchDirect(at position: Int64, length: Int, needed: Int) throws(NetdiskError) {
        var limit = entry.size
        for held in windows where held.start > position { limit = min(limit, held.start) }
        for pending in prefetches where pending.start > position { limit = min(limit, pending.start) }
        var length = Int(min(Int64(max(length, needed)), limit - position))
        var reserved = 0
        if budget.reserve(length) {
            reserved = length
        } else {
            // No room for read-ahead: fetch what this read needs, held past the budget (a read must progress).
            length = Int(min(Int64(needed), limit - position))
        }
        let bytes: [UInt8]
        do throws(NetdiskError) {
            bytes = try source.download(fsID: entry.fsID, offset: position, length: length)
        } catch {
            budget.release(reserved)
            throw error
        }
        guard !bytes.isEmpty else {
            budget.release(reserved)
            throw .protocolViolation("empty range \(position)+\(length) of \(entry.path)")
        }
        if bytes.count < reserved {
            budget.release(reserved - bytes.count)
            reserved = bytes.count
        }
        hold(Window(start: position, bytes: bytes, reserved: reserved))
    }

    /// Keeps up to `prefetchDepth` windows beyond the furthest read in flight, while memory allows.
    private func startPrefetchIfUseful() {
        // Read-ahead the reader has passed is no longer wanted.
        while let first = prefetches.first, first.end <= frontier - tuning.reorderSlack {
            prefetches.removeFirst().abandon(budget: budget)
        }
        while prefetches.count < tuning.prefetchDepth {
            // Windows are sorted and never overlap, so the last one ends furthest.
            let start = max(prefetches.last?.end ?? 0, windows.last?.end ?? 0, frontier)
            guard start < entry.size else { return }
            let length = Int(min(Int64(window), entry.size - start))
            guard budget.reserve(length) else { return }
            startPrefetch(Prefetch(start: start, length: length))
            // The stream goes on: the next window is larger.
            window = min(window * 2, tuning.maxWindow)
        }
    }

    private func startPrefetch(_ pending: Prefetch) {
        prefetches.append(pending)
        let source = self.source, budget = self.budget, fsID = entry.fsID
        // A plain thread, not a Task: the download blocks while the async client works.
        Thread.detachNewThread {
            do throws(NetdiskError) {
                pending.finish(.success(try source.download(fsID: fsID, offset: pending.start, length: pending.length)), budget: budget)
            } catch {
                pending.finish(.failure(error), budget: budget)
            }
        }
    }
}
