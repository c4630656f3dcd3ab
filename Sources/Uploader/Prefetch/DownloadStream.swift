import Foundation

/// One long ranged GET that a sequential reader consumes as it arrives.
///
/// Why: read-ahead in windows pays a round trip (two, with the dlink's redirect) per window, and a
/// normal account may hold only one download connection, so at 100 ms per call no window size
/// that fits the memory budget keeps up. A stream pays the round trip once; the bytes in flight
/// then live in the socket, and memory here is a few 1 MiB chunks drawn from the shared budget.
/// When the reader falls behind, the sink pauses the transfer (TCP flow control does the rest);
/// when it catches up, the transfer resumes. A stream left paused for ``idleClose`` is closed, so
/// an idle open file never holds the account's download connection.
final class DownloadStream: ResponseSink, @unchecked Sendable {
    static let chunkSize = 1 << 20
    static let idleClose: Double = 2

    /// The first byte of the range (absolute offset in the file) and its end.
    let start: Int64
    let end: Int64
    /// Bytes buffered ahead of the furthest read before the transfer pauses.
    let ahead: Int
    /// Bytes kept behind the furthest read for the kernel's late requests.
    let behind: Int
    private let budget: MemoryBudget
    private let condition = NSCondition()
    /// Chunk `i` of `chunks` holds the range's bytes from `(dropped + i) * chunkSize`.
    private var chunks: [SectionBuffer] = []
    /// Chunks the reader is done with, kept (and still counted in the budget) for the bytes that
    /// come next. Why: a fresh mapping is zeroed page by page by the kernel, and mapping and
    /// unmapping 1 MiB per MiB read made that zeroing 42% of the mount's CPU in a 4 GiB `cat`
    /// (7 CPU s/GiB, against 2.4 for 1 GiB, on this machine's virtual memory).
    private var spare: [SectionBuffer] = []
    /// Chunks this stream mapped afresh (tests check that a long stream maps a bounded number).
    private(set) var chunksMapped = 0
    private var dropped = 0
    private var received: Int64 = 0
    /// The furthest byte a read returned (absolute).
    private var furthest: Int64
    private var paused = false
    private var pausedAt: UInt64 = 0
    private var closed = false
    private var outcome: Result<Void, NetdiskError>?

    init(start: Int64, end: Int64, budget: MemoryBudget, ahead: Int = 8 << 20, behind: Int = 4 << 20) {
        self.start = start
        self.end = end
        self.budget = budget
        self.ahead = max(Self.chunkSize, ahead)
        self.behind = behind
        furthest = start
        super.init()
    }

    /// Runs the download on a thread of its own (it blocks for the stream's life).
    func run(_ body: @escaping @Sendable (DownloadStream) throws(NetdiskError) -> Void) {
        NamedThread.start("nd.download", stackSize: 256 << 10) { [self] in
            let result: Result<Void, NetdiskError>
            do throws(NetdiskError) {
                try body(self)
                result = .success(())
            } catch {
                result = .failure(error)
            }
            condition.lock()
            outcome = result
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Whether a read at `offset` can come from this stream (now or once its bytes arrive).
    func covers(_ offset: Int64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed, offset < end else { return false }
        let low = start + Int64(dropped) * Int64(Self.chunkSize)
        if case .failure = outcome { return offset >= low && offset < start + received }
        return offset >= low && offset <= start + received + Int64(ahead)
    }

    /// Copies bytes at `offset`, waiting (at most the stall time) for them to arrive. nil: the
    /// stream cannot serve it (gone behind, failed, closed or stalled); the caller reads otherwise.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int? {
        let wanted = Int(min(Int64(buffer.count), end - offset))
        guard wanted > 0 else { return 0 }
        let deadline = Date(timeIntervalSinceNow: Double(BaiduClient.downloadStallSeconds))
        condition.lock()
        // The reader is here: the transfer may fill up to `ahead` past it.
        furthest = max(furthest, offset)
        // (Calling it under the lock is safe: it only queues a wake-up for curl's thread.)
        wakeIfRoom()?()
        while start + received < offset + Int64(wanted), outcome == nil, !closed {
            if !condition.wait(until: deadline) { break }
        }
        let low = start + Int64(dropped) * Int64(Self.chunkSize)
        let available = start + received
        guard !closed, offset >= low, offset < available else {
            condition.unlock()
            return nil
        }
        let count = Int(min(Int64(wanted), available - offset))
        var copied = 0
        while copied < count {
            let relative = offset + Int64(copied) - start
            let index = Int(relative / Int64(Self.chunkSize)) - dropped
            let within = Int(relative % Int64(Self.chunkSize))
            let n = min(Self.chunkSize - within, count - copied)
            (buffer.baseAddress! + copied).copyMemory(from: chunks[index].base + within, byteCount: n)
            copied += n
        }
        furthest = max(furthest, offset + Int64(count))
        dropBehind()
        let again = wakeIfRoom()
        condition.unlock()
        again?()
        return count
    }

    /// Ends the transfer and gives the chunks back (the reader moved elsewhere or closed the file).
    func close() {
        condition.lock()
        guard !closed else { condition.unlock(); return }
        closed = true
        let held = chunks.count + spare.count
        chunks.removeAll()
        spare.removeAll()
        condition.broadcast()
        let resume = self.resume
        condition.unlock()
        budget.release(held * Self.chunkSize, for: .reads)
        // A paused transfer must run again to see that it is refused.
        resume?()
    }

    /// The transfer ended with an error (not closed by us, not complete).
    var hasFailed: Bool {
        condition.lock()
        defer { condition.unlock() }
        if case .failure = outcome { return !closed }
        return false
    }

    var isFinished: Bool {
        condition.lock()
        defer { condition.unlock() }
        return outcome != nil || closed
    }

    // MARK: - The transfer's side (curl's loop thread)

    override func write(_ bytes: UnsafeRawBufferPointer) -> Answer {
        condition.lock()
        defer { condition.unlock() }
        if closed { return .refused }
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return .accepted }
        // Room for all of it, or none: a paused write is handed again whole.
        let newEnd = received + Int64(bytes.count)
        guard start + newEnd <= end else { return .refused }
        let needed = Int((newEnd + Int64(Self.chunkSize) - 1) / Int64(Self.chunkSize)) - dropped
        let extra = needed - chunks.count
        if extra > 0 {
            let aheadOfReader = start + received - furthest
            // A reader may be waiting on these bytes (a read is at most 1 MiB): they come even past
            // the budget, or a full budget would stall the read until its deadline.
            let readerNeedsThem = aheadOfReader < Int64(2 * Self.chunkSize)
            // Spare chunks are reserved already; only the rest asks the budget.
            let fresh = max(0, extra - spare.count)
            guard readerNeedsThem || aheadOfReader + Int64(bytes.count) <= Int64(ahead),
                  readerNeedsThem || fresh == 0 || budget.tryReserve(fresh * Self.chunkSize, for: .reads) else {
                return pause()
            }
            if readerNeedsThem && fresh > 0 { budget.forceReserve(fresh * Self.chunkSize, for: .reads) }
            for _ in 0..<extra {
                if let reused = spare.popLast() {
                    chunks.append(reused)
                } else {
                    chunks.append(SectionBuffer(capacity: Self.chunkSize))
                    chunksMapped += 1
                }
            }
        }
        var copied = 0
        while copied < bytes.count {
            let relative = received + Int64(copied)
            let index = Int(relative / Int64(Self.chunkSize)) - dropped
            let within = Int(relative % Int64(Self.chunkSize))
            let n = min(Self.chunkSize - within, bytes.count - copied)
            (chunks[index].base + within).copyMemory(from: source + copied, byteCount: n)
            copied += n
        }
        received = newEnd
        paused = false
        condition.broadcast()
        return .accepted
    }

    // MARK: - Helpers (condition held)

    private func pause() -> Answer {
        paused = true
        let now = DispatchTime.now().uptimeNanoseconds
        pausedAt = now
        // Not on the cooperative pool: a plain GCD timer that only looks at two fields.
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.idleClose) { [weak self] in
            guard let self else { return }
            self.condition.lock()
            let idle = self.paused && self.pausedAt == now
            self.condition.unlock()
            if idle { self.close() }
        }
        return .pause
    }

    /// The resume to call (outside the lock) when a paused transfer has room again.
    private func wakeIfRoom() -> (@Sendable () -> Void)? {
        guard paused, !closed, start + received - furthest < Int64(ahead) else { return nil }
        paused = false
        return resume
    }

    /// Chunks wholly more than `behind` before the furthest read leave the window: kept as spares
    /// while the stream has not all it may hold (`behind` + `ahead`), else given back.
    private func dropBehind() {
        var freed = 0
        let most = (behind + ahead) / Self.chunkSize + 2
        while !chunks.isEmpty {
            let chunkEnd = Int64(dropped + 1) * Int64(Self.chunkSize)
            guard received >= chunkEnd, start + chunkEnd + Int64(behind) <= furthest else { break }
            let chunk = chunks.removeFirst()
            dropped += 1
            if chunks.count + spare.count < most { spare.append(chunk) } else { freed += 1 }
        }
        if freed > 0 { budget.release(freed * Self.chunkSize, for: .reads) }
    }

    deinit {
        let held = chunks.count + spare.count
        if !closed, held > 0 { budget.release(held * Self.chunkSize, for: .reads) }
    }
}
