import Foundation
import Logging

/// The streaming state of a ``FileWriteSession``: the in-memory window of parts not yet sent.
final class StreamingState: @unchecked Sendable {
    final class Slot {
        let buffer: SectionBuffer
        var written = ByteRanges()
        init(buffer: SectionBuffer) { self.buffer = buffer }
        func isFull(_ slice: Int) -> Bool { written.contains(0..<Int64(slice)) }
    }

    let slice: Int
    let pool: BufferPool
    /// Parts handed to the pipeline; everything below `frontier` is immutable.
    var sentParts = 0
    var slots: [Int: Slot] = [:]
    var size: Int64 = 0
    var pipeline: OrderedPipeline?
    /// The precreate, started when the first part filled; `pipeline` is built once it answers.
    var opening: StreamOpening?
    /// Sends the full parts at the head, waiting for the precreate if it still runs. Called before
    /// any wait on memory: a file never waits for memory while holding a part it could send, except
    /// the parts the write now getting its slots touches (from the argument on), which it is about
    /// to change.
    var sendWhatCanGo: ((Int) throws(NetdiskError) -> Void)?
    /// Asked where the pipeline's failure surfaces (a submit, a wait for memory, the finish): true
    /// when the upload went on under a fresh uploadid, every sent part sent again (see
    /// ``FileWriteSession/restartUpload(_:after:)``); false when the failure stands.
    var restartUpload: ((NetdiskError) throws(NetdiskError) -> Bool)?
    /// Fresh uploadids this stream took after a failure.
    var restarts = 0
    /// The first part the write now getting its slots touches (see ``sendWhatCanGo``).
    private var touching = Int.max

    /// The precreate answered that this file must take another path: no part will ever go, so
    /// waiting for memory would wait for nothing.
    var openingRefused: Bool { pipeline == nil && opening?.refused == true }
    /// The precreate was started and the pipeline is not built yet: parts wait in the window.
    var isOpening: Bool { pipeline == nil && opening != nil }
    /// The uploadid the precreate gave and how it was opened (the create must go the same way);
    /// nil until it answered.
    var opened: (uploadID: String, strategy: StreamingStrategy)? {
        guard case .success(.opened(let uploadID, let strategy))? = opening?.outcome(waiting: false) else { return nil }
        return (uploadID, strategy)
    }
    /// Sent parts readers may still read (the head, the tail, and parts in flight).
    let sent: SentParts

    init(slice: Int, pool: BufferPool) {
        self.slice = slice
        self.pool = pool
        sent = SentParts(slice: slice, budgetBuffers: pool.budgetBuffers)
    }

    var frontier: Int64 { Int64(sentParts) * Int64(slice) }

    func accepts(offset: Int64, end: Int64, window: Int) -> Bool {
        offset >= frontier && end <= Int64(sentParts + window) * Int64(slice)
    }

    /// Copies into the window, whose slots ``prepareSlots(from:to:budgetWait:)`` got.
    func copy(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(NetdiskError) {
        guard !bytes.isEmpty else {
            size = max(size, offset)
            return
        }
        var cursor = offset
        var source = 0
        let end = offset + Int64(bytes.count)
        while cursor < end {
            let part = Int(cursor / Int64(slice))
            let local = Int(cursor - Int64(part) * Int64(slice))
            let n = min(slice - local, Int(end - cursor))
            let slot = try slotFor(part)
            (slot.buffer.base + local).copyMemory(from: bytes.baseAddress! + source, byteCount: n)
            slot.written.insert(Int64(local)..<Int64(local + n))
            cursor += Int64(n)
            source += n
            size = max(size, cursor)
        }
    }

    /// Free space of the head slot at `offset` (the end of the file), for a producer to fill in place.
    func headSpace(at offset: Int64, limit: Int) throws(NetdiskError) -> UnsafeMutableRawBufferPointer {
        let part = Int(offset / Int64(slice))
        let local = Int(offset - Int64(part) * Int64(slice))
        let slot = try slotFor(part)
        return UnsafeMutableRawBufferPointer(start: slot.buffer.base + local, count: min(slice - local, limit))
    }

    /// Records `count` bytes a producer wrote in place at `offset` (see ``headSpace(at:limit:)``).
    func commitHead(at offset: Int64, count: Int) {
        let part = Int(offset / Int64(slice))
        let local = Int64(offset - Int64(part) * Int64(slice))
        slots[part]?.written.insert(local..<local + Int64(count))
        size = max(size, offset + Int64(count))
    }

    /// Gets the slots `offset..<end` needs; false when the shared budget stayed full for
    /// `budgetWait` seconds. Why give up: memory held by other files' unfinished heads may be
    /// freed only by the thread now waiting (one program writing many files ahead of their heads),
    /// so a wait without end is a deadlock; the caller spills this file to the cached path instead.
    func prepareSlots(from offset: Int64, to end: Int64, budgetWait: Double) throws(NetdiskError) -> Bool {
        touching = Int(offset / Int64(slice))
        defer { touching = .max }
        guard end > offset else { return true }
        for part in Int(offset / Int64(slice))...Int((end - 1) / Int64(slice)) where slots[part] == nil {
            guard try slotFor(part, budgetWait: budgetWait) != nil else { return false }
        }
        return true
    }

    private func slotFor(_ part: Int) throws(NetdiskError) -> Slot {
        guard let slot = try slotFor(part, budgetWait: nil) else {
            // Callers get their slots through ``prepareSlots`` or ``prepareHead`` first, which
            // report a refused precreate to the session; this is a safety net, not a path.
            throw .localIO("no buffer: the streaming precreate was refused")
        }
        return slot
    }

    /// Gets the head slot at `offset` for a producer that fills it in place; false when the
    /// precreate was refused (the session then takes the cached path). Waits for memory like
    /// any write of the stream.
    func prepareHead(at offset: Int64) throws(NetdiskError) -> Bool {
        let part = Int(offset / Int64(slice))
        touching = part
        defer { touching = .max }
        return try slotFor(part, budgetWait: nil) != nil
    }

    /// Parts of ours uploading (or held for readers) come back by themselves: waiting for them is
    /// plain backpressure, however slow the network. Only a file with nothing on its way back may be
    /// waiting on memory that never frees, and only that wait is cut short. Asked at each acquire:
    /// letting go of held parts may leave nothing on its way back.
    private func waitLimit(_ budgetWait: Double?) -> Double? {
        pool.outstanding > slots.count ? nil : budgetWait
    }

    private func slotFor(_ part: Int, budgetWait: Double?) throws(NetdiskError) -> Slot? {
        if let slot = slots[part] { return slot }
        var attempt = try pool.tryAcquire(forceFirst: waitLimit(budgetWait) == nil)
        if pipeline == nil, let sendWhatCanGo {
            if case .buffer = attempt {} else {
                // Full parts waiting on the precreate go first: then the parts kept for readers
                // (below) can yield, and the wait is for parts on the wire.
                try sendWhatCanGo(touching)
                if openingRefused { return nil }
                attempt = try pool.tryAcquire(forceFirst: waitLimit(budgetWait) == nil)
            }
        }
        if case .budgetExhausted = attempt {
            // Parts kept for readers are a convenience, never a reason to wait on memory the shared
            // budget lacks. The tail goes first (it returns as its uploads finish; the acquire below
            // waits for that), and the head once only it is left. Where the budget cannot afford
            // the head beside 4 parts on the wire (SVIP's 12 MiB slices in 64 MiB), the head goes at
            // once: the tail comes back with every part sent, so "once only it is left" never came,
            // and the head kept SVIP at 2 parts in flight. Readers of sent bytes that are gone then
            // take the cached path.
            if sent.holdsAny && sent.headYields {
                sent.letGoOfAll()
                attempt = try pool.tryAcquire(forceFirst: waitLimit(budgetWait) == nil)
            } else if sent.holdsTail {
                sent.letGoOfTail()
            } else if sent.holdsAny {
                sent.letGoOfAll()
                attempt = try pool.tryAcquire(forceFirst: waitLimit(budgetWait) == nil)
            }
        }
        var buffer: SectionBuffer?
        if case .buffer(let got) = attempt {
            buffer = got
        } else {
            buffer = try acquire(budgetWait: budgetWait)
        }
        guard let buffer else { return nil }
        let slot = Slot(buffer: buffer)
        slots[part] = slot
        return slot
    }

    /// Waits for a buffer. A failed upload interrupts the wait (its parts are kept for a restart,
    /// so their buffers do not come back): the upload restarts and the wait goes on, or the failure
    /// is thrown.
    private func acquire(budgetWait: Double?) throws(NetdiskError) -> SectionBuffer? {
        while true {
            do throws(NetdiskError) {
                return try pool.acquire(budgetWait: waitLimit(budgetWait))
            } catch {
                guard error != .cancelled, try restartUpload?(error) == true else { throw error }
            }
        }
    }

    /// Waits for every part sent to be acknowledged, restarting the upload where its failure allows;
    /// the MD5 of each part by partseq.
    func finishPipeline() throws(NetdiskError) -> [Int: String] {
        while true {
            guard let pipeline else { throw .cancelled }
            do throws(NetdiskError) {
                return try pipeline.finish()
            } catch {
                guard try restartUpload?(error) == true else { throw error }
            }
        }
    }

    /// Reads from memory: the window, or sent parts still held. nil when a byte needed is gone.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int? {
        let count = Int(min(Int64(buffer.count), size - offset))
        var done = 0
        while done < count {
            let position = offset + Int64(done)
            let part = Int(position / Int64(slice))
            let local = Int(position - Int64(part) * Int64(slice))
            let n = min(slice - local, count - done)
            let target = buffer.baseAddress! + done
            if part < sentParts {
                guard sent.copy(part: part, from: local, count: n, to: target) else { return nil }
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0, count: n)
                if let slot = slots[part] {
                    for range in slot.written.ranges {
                        let lo = max(Int(range.lowerBound), local), hi = min(Int(range.upperBound), local + n)
                        if lo < hi { (target + (lo - local)).copyMemory(from: slot.buffer.base + lo, byteCount: hi - lo) }
                    }
                }
            }
            done += n
        }
        return count
    }

    func truncate(to newSize: Int64) {
        for (part, slot) in slots where Int64(part) * Int64(slice) >= newSize {
            pool.release(slot.buffer)
            slots[part] = nil
        }
        let lastPart = Int(newSize / Int64(slice))
        if let slot = slots[lastPart] {
            slot.written.clip(to: newSize - Int64(lastPart) * Int64(slice))
        }
        size = newSize
    }

    /// Zero-fills the holes of the head part (a sparse stretch, or a truncate that extended the file).
    func fillHead(length: Int) throws(NetdiskError) {
        let slot = try slotFor(sentParts)
        for gap in slot.written.gaps(in: 0..<Int64(length)) {
            (slot.buffer.base + Int(gap.lowerBound)).initializeMemory(as: UInt8.self, repeating: 0,
                                                                      count: Int(gap.upperBound - gap.lowerBound))
        }
        slot.written.insert(0..<Int64(length))
    }

    func submitHead(length: Int) throws(NetdiskError) {
        guard let pipeline, let slot = slots.removeValue(forKey: sentParts) else { return }
        slot.buffer.count = length
        let pool = self.pool, buffer = slot.buffer
        let partseq = sentParts
        sentParts += 1
        let release = sent.add(partseq: partseq, buffer: buffer, length: length, giveBack: { pool.release(buffer) })
        do throws(NetdiskError) {
            try pipeline.submit(PipelineJob(partseq: partseq, bytes: buffer.bytes, knownMD5: nil, release: release))
        } catch {
            // A restart sends this part too: it is below `sentParts`, and the failed submit kept it.
            guard try restartUpload?(error) == true else { throw error }
        }
    }

    /// Writes the in-memory window to the cache file (fallback).
    func spill(into cache: SparseCache) throws(NetdiskError) {
        for (part, slot) in slots {
            let base = Int64(part) * Int64(slice)
            for range in slot.written.ranges {
                let hi = min(range.upperBound, size - base)
                guard hi > range.lowerBound else { continue }
                try cache.write(UnsafeRawBufferPointer(start: slot.buffer.base + Int(range.lowerBound),
                                                       count: Int(hi - range.lowerBound)), at: base + range.lowerBound)
            }
        }
    }

    func releaseAll() {
        for slot in slots.values { pool.release(slot.buffer) }
        slots.removeAll()
        sent.abandonAll()
        pool.close()
    }

    func cancel(_ reason: NetdiskError) {
        pipeline?.cancel(reason)
        releaseAll()
    }

    /// A read-only view of the window, for committing a file that never needed a second part.
    func memorySource() -> any RandomAccessSource { WindowSource(state: self) }

    private final class WindowSource: RandomAccessSource, @unchecked Sendable {
        let state: StreamingState
        init(state: StreamingState) { self.state = state }
        var size: Int64 { state.size }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
            guard offset < state.size else { return 0 }
            // Only used before any part was sent, so every byte is in the window.
            guard let count = state.read(into: buffer, at: offset) else { throw .localIO("window read of sent bytes") }
            return count
        }

        /// A whole written slot as it is: a small file's one part is uploaded from the window's own
        /// buffer instead of a copy (16 writers of 3 MiB stalled on a slow server held 6 MiB each).
        /// Safe without a lock of its own: the session's lock is held for the whole commit, so no
        /// write, truncate or fallback touches the slots meanwhile.
        func inMemory(at offset: Int64, count: Int) -> (bytes: PartBytes, owner: SectionBuffer)? {
            let part = Int(offset / Int64(state.slice))
            guard offset == Int64(part) * Int64(state.slice), part >= state.sentParts, count <= state.slice,
                  let slot = state.slots[part], slot.written.contains(0..<Int64(count)) else { return nil }
            return (PartBytes(base: UnsafeRawPointer(slot.buffer.base), count: count), slot.buffer)
        }
    }
}

