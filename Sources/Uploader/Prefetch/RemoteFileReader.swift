import Foundation

/// Where a reader gets bytes of a remote file (the dlink cache; a counting double in tests).
public protocol RangeSource: Sendable {
    /// Fills `buffer` with the bytes at `offset` (fewer at the end of the file); returns how many.
    /// Blocks the calling (FUSE or helper) thread until the range has arrived.
    func download(fsID: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(NetdiskError) -> Int
    /// Whether ``stream(fsID:offset:length:into:)`` works (test doubles and spool files read in windows).
    var canStream: Bool { get }
    /// Runs one paced download of the range into `sink`; blocks until it ends.
    func stream(fsID: UInt64, offset: Int64, length: Int64, into sink: ResponseSink) throws(NetdiskError)
}

extension RangeSource {
    public var canStream: Bool { false }
    public func stream(fsID: UInt64, offset: Int64, length: Int64, into sink: ResponseSink) throws(NetdiskError) {
        throw .protocolViolation("this source does not stream")
    }

    /// A window's bytes, in an mmapped buffer (see ``ResponseSink`` for why not an array).
    func fetch(fsID: UInt64, offset: Int64, length: Int) throws(NetdiskError) -> SectionBuffer {
        let buffer = SectionBuffer(capacity: length)
        buffer.count = try download(fsID: fsID, offset: offset, into: UnsafeMutableRawBufferPointer(start: buffer.base, count: length))
        return buffer
    }
}

/// Reads one remote file through ranged downloads.
///
/// Why it is shaped this way: the kernel's read-ahead sends several 1 MiB reads at once on different
/// FUSE threads, so a sequential `cat` arrives slightly out of order. A reader that treats every
/// out-of-order request as a random seek collapses to small ranges (measured: 752 downloads of
/// ~1.4 MiB for 1 GiB). Here a read counts as sequential when it lands near the furthest point read
/// so far or inside data held or in flight; the last windows stay in memory for late requests,
/// and each new read-ahead window doubles, up to `maxWindow`, while the stream goes on.
/// Random reads fetch only `randomReadSize`. Memory: every window is reserved in the shared
/// `MemoryBudget`; without room, read-ahead stops instead of memory growing.
public final class RemoteFileReader: @unchecked Sendable {
    public struct Tuning: Sendable {
        public var initialWindow = 1 << 20
        public var maxWindow = 16 << 20
        public var randomReadSize = 256 << 10
        /// Windows fetched ahead concurrently: several ranged downloads overlap each other and the reads.
        public var prefetchDepth = 3
        /// Completed windows kept for reads the kernel sends late.
        public var heldWindows = 2
        /// How far from the furthest read a request may land and still count as sequential.
        public var reorderSlack: Int64 = 8 << 20
        /// After this many bytes read in sequence, the rest of the file comes as one stream
        /// (``DownloadStream``); nil: windows only.
        public var streamAfter: Int64? = 4 << 20
        /// A stream's bytes buffered ahead of the reader before its transfer pauses.
        public var streamAhead = 8 << 20

        public init(initialWindow: Int = 1 << 20, maxWindow: Int = 16 << 20, randomReadSize: Int = 256 << 10,
                    prefetchDepth: Int = 3, heldWindows: Int = 2, reorderSlack: Int64 = 8 << 20) {
            self.initialWindow = initialWindow
            self.maxWindow = maxWindow
            self.randomReadSize = randomReadSize
            self.prefetchDepth = prefetchDepth
            self.heldWindows = heldWindows
            self.reorderSlack = reorderSlack
        }
    }

    private struct Window {
        var start: Int64
        var bytes: SectionBuffer
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
        private(set) var result: Result<SectionBuffer, NetdiskError>?
        private let state = NSLock()
        private var finished = false
        private var abandoned = false
        var end: Int64 { start + Int64(length) }
        init(start: Int64, length: Int) {
            self.start = start
            self.length = length
        }
        func contains(_ position: Int64) -> Bool { position >= start && position < end }

        func finish(_ outcome: Result<SectionBuffer, NetdiskError>, budget: MemoryBudget) {
            let wasAbandoned = state.withLock { () -> Bool in
                result = outcome
                finished = true
                return abandoned
            }
            done.open()
            if wasAbandoned { budget.release(length, for: .reads) }
        }

        /// The reader no longer wants it: its budget goes back now, or when the download ends.
        func abandon(budget: MemoryBudget) {
            let wasFinished = state.withLock { () -> Bool in
                abandoned = true
                return finished
            }
            if wasFinished { budget.release(length, for: .reads) }
        }
    }

    public let entry: RemoteEntry
    private let source: any RangeSource
    private let budget: MemoryBudget
    private let tuning: Tuning
    private let lock = NSLock()
    /// Completed windows, ascending by start.
    private var windows: [Window] = []
    /// Read-ahead in flight, ascending by start.
    private var prefetches: [Prefetch] = []
    /// The furthest offset a sequential read has reached.
    private var frontier: Int64 = 0
    private var window: Int
    /// The rest of the file as one transfer, once the reading proved sequential.
    private var stream: DownloadStream?
    /// Bytes read in sequence since the last jump.
    private var sequentialRun: Int64 = 0
    /// Whether this run began at offset 0 (and no stream of it failed): such a reader streams at once.
    private var runFromStart = true
    private var streamFailures = 0

    public init(entry: RemoteEntry, links: any RangeSource, budget: MemoryBudget, tuning: Tuning = Tuning()) {
        self.entry = entry
        self.source = links
        self.budget = budget
        self.tuning = tuning
        self.window = tuning.initialWindow
    }

    deinit {
        for held in windows { budget.release(held.reserved, for: .reads) }
        for prefetch in prefetches { prefetch.abandon(budget: budget) }
        stream?.close()
    }

    /// Copies up to `buffer.count` bytes at `offset`; returns the count (0 at end of file).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
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
            stream?.close()
            stream = nil
            sequentialRun = 0
            runFromStart = false
        }
        // A first read past the first window (`tail`, `unzip -l`, an mp4 index at the end) is no run
        // from the start: streaming from 0 would download everything before it.
        if sequentialRun == 0 && offset >= Int64(tuning.initialWindow) { runFromStart = false }
        // A run from the start streams from its first read: no window's round trip before the stream's.
        if sequential && runFromStart { startStreamIfUseful() }
        var copied = 0
        while copied < wanted {
            let position = offset + Int64(copied)
            if let held = windows.first(where: { $0.contains(position) }) {
                let from = Int(position - held.start)
                let count = min(wanted - copied, held.bytes.count - from)
                buffer.baseAddress!.advanced(by: copied).copyMemory(from: held.bytes.base + from, byteCount: count)
                copied += count
                continue
            }
            if let current = stream, current.isFinished, !current.covers(position) {
                // Ended (closed while the reader was idle, or done): a new stream may follow.
                stream = nil
            }
            if let current = stream, current.covers(position) {
                let got = current.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[copied..<wanted]), at: position)
                if let got, got > 0 {
                    copied += got
                    continue
                }
                // Failed, stalled or closed while idle: windows take over; a later run may stream again.
                current.close()
                stream = nil
                sequentialRun = 0
                runFromStart = false
                if current.hasFailed { streamFailures += 1 }
            }
            if let index = prefetches.firstIndex(where: { $0.contains(position) }) {
                let pending = prefetches.remove(at: index)
                pending.done.wait()
                if case .success(let bytes) = pending.result!, bytes.count > 0 {
                    hold(Window(start: pending.start, bytes: bytes, reserved: pending.length))
                } else {
                    budget.release(pending.length, for: .reads)
                    // A direct fetch of the same range reports the error, or succeeds on a second try.
                    try fetchDirect(at: position, length: pending.length, needed: wanted - copied)
                }
                continue
            }
            try fetchDirect(at: position, length: sequential ? window : tuning.randomReadSize, needed: wanted - copied)
        }
        if sequential {
            frontier = max(frontier, offset + Int64(copied))
            sequentialRun += Int64(copied)
            startStreamIfUseful()
            if stream == nil { startPrefetchIfUseful() }
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
            budget.release(windows.remove(at: index).reserved, for: .reads)
        }
    }

    /// Fetches a range now, never overlapping data already held or in flight after it. Beyond
    /// `needed` the range is read-ahead, taken only if the budget has room for it.
    private func fetchDirect(at position: Int64, length: Int, needed: Int) throws(NetdiskError) {
        var limit = entry.size
        for held in windows where held.start > position { limit = min(limit, held.start) }
        for pending in prefetches where pending.start > position { limit = min(limit, pending.start) }
        var length = Int(min(Int64(max(length, needed)), limit - position))
        if !budget.tryReserve(length, for: .reads) {
            // No room for read-ahead: fetch only what this read needs, past the budget and without
            // waiting. A read must progress, and waiting would not make room: the memory may be a
            // half-filled slice only this same thread (writing another file) could complete, or
            // parts blocked on a slow server, while `cat` of a 3-byte file waits behind them.
            // The overshoot is bounded: one kernel read per FUSE thread.
            length = Int(min(Int64(needed), limit - position))
            budget.forceReserve(length, for: .reads)
        }
        var reserved = length
        let bytes: SectionBuffer
        do throws(NetdiskError) {
            bytes = try source.fetch(fsID: entry.fsID, offset: position, length: length)
        } catch {
            budget.release(reserved, for: .reads)
            throw error
        }
        guard bytes.count > 0 else {
            budget.release(reserved, for: .reads)
            throw .protocolViolation("empty range \(position)+\(length) of \(entry.path)")
        }
        if bytes.count < reserved {
            budget.release(reserved - bytes.count, for: .reads)
            reserved = bytes.count
        }
        hold(Window(start: position, bytes: bytes, reserved: reserved))
    }

    /// A long sequential run streams the rest of the file: from where windows held or in flight end.
    /// A run from offset 0 (`cat`, `cp`, `rsync`, a checksum) streams from its first read: waiting
    /// for `streamAfter` bytes cost a round trip per window before it (at 100 ms per call, a third
    /// of a 1 GiB `cat` on one connection), and the windows it replaces fetched more than the
    /// stream buffers ahead, so a reader that stops early (`file`, `head`) wastes no more.
    private func startStreamIfUseful() {
        guard stream == nil, let after = tuning.streamAfter, sequentialRun >= after || runFromStart, streamFailures < 3,
              source.canStream else { return }
        let start = max(prefetches.last?.end ?? 0, windows.last?.end ?? 0, frontier)
        guard entry.size - start > after else { return }
        let opened = DownloadStream(start: start, end: entry.size, budget: budget, ahead: tuning.streamAhead)
        let source = self.source, fsID = entry.fsID, length = entry.size - start
        opened.run { (sink) throws(NetdiskError) in try source.stream(fsID: fsID, offset: start, length: length, into: sink) }
        stream = opened
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
            guard budget.tryReserve(length, for: .reads) else { return }
            startPrefetch(Prefetch(start: start, length: length))
            // The stream goes on: the next window is larger.
            window = min(window * 2, tuning.maxWindow)
        }
    }

    private func startPrefetch(_ pending: Prefetch) {
        prefetches.append(pending)
        let source = self.source, budget = self.budget, fsID = entry.fsID
        // A plain thread, not a Task: the download blocks while the async client works.
        NamedThread.start("nd.prefetch") {
            do throws(NetdiskError) {
                pending.finish(.success(try source.fetch(fsID: fsID, offset: pending.start, length: pending.length)), budget: budget)
            } catch {
                pending.finish(.failure(error), budget: budget)
            }
        }
    }
}
