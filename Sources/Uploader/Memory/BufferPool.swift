#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// One slice-sized buffer: sections are filled in place and handed to the HTTP layer without copying.
///
/// Mapped straight from the kernel (mmap) and unmapped when freed. Why not malloc: after glibc
/// frees one mmapped chunk it raises its mmap threshold to that size (up to 32 MiB), so later 8 and
/// 16 MiB slices came from heaps it does not give back; a 1 GiB copy at SVIP then peaked at
/// 768 MiB of RSS, against 111 MiB with the threshold pinned at 1 MiB.
public final class SectionBuffer: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    /// Valid bytes, from the start.
    public var count: Int = 0
    private let mapped: Bool

    init(capacity: Int) {
        self.capacity = capacity
        let length = max(capacity, 1)
        if let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
           pointer != MAP_FAILED {
            base = pointer
            mapped = true
        } else {
            base = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 64)
            mapped = false
        }
    }

    deinit {
        if mapped { munmap(base, max(capacity, 1)) } else { base.deallocate() }
    }

    public var bytes: PartBytes { PartBytes(base: UnsafeRawPointer(base), count: count) }
}

/// A per-file pool of at most `limit` reused section buffers, charged to the global ``MemoryBudget``.
///
/// `acquire` blocks the (foreign) producer thread when every buffer is in flight: that is the
/// engine's backpressure. Buffers are allocated lazily and reused, so steady-state streaming
/// allocates nothing and RSS stays flat however long the file is.
///
/// Waiting for the budget never blocks inside the budget: a pool waiting for more memory must
/// still notice its own buffers coming back (otherwise every file waits on the budget while
/// holding buffers of its own: a deadlock with many concurrent writers). Under contention,
/// released buffers go back to the budget instead of the free list, so files share fairly.
public final class BufferPool: @unchecked Sendable {
    public let bufferSize: Int
    public let limit: Int
    private let budget: MemoryBudget
    private let condition = NSCondition()
    private var free: [SectionBuffer] = []
    private var allocated = 0
    private var cancelled = false
    private var interruption: NetdiskError?

    /// Buffers of this size the whole shared budget holds.
    public var budgetBuffers: Int { budget.capacity / max(1, bufferSize) }

    public init(bufferSize: Int, limit: Int, budget: MemoryBudget) {
        self.bufferSize = bufferSize
        self.limit = max(1, limit)
        self.budget = budget
    }

    /// A buffer with `count == 0`; blocks until one is free. Throws `.cancelled` after ``cancel()``.
    public func acquire() throws(NetdiskError) -> SectionBuffer {
        try acquire(budgetWait: nil)!
    }

    /// The same, but nil once the shared budget has refused for `budgetWait` seconds (waiting for
    /// this pool's own buffers to come back is never cut short: uploads return them).
    public func acquire(budgetWait: Double?) throws(NetdiskError) -> SectionBuffer? {
        let deadline = budgetWait.map { Date(timeIntervalSinceNow: $0) }
        condition.lock()
        while true {
            if cancelled { condition.unlock(); throw .cancelled }
            if let buffer = free.popLast() {
                condition.unlock()
                buffer.count = 0
                return buffer
            }
            if allocated == 0 && deadline == nil {
                // A file's first buffer never waits on the budget without end: others' partly filled
                // buffers may hold all of it, and only this file's writer (perhaps the same thread)
                // can fill them. (With a deadline the caller takes another path when it passes.)
                budget.forceReserve(bufferSize)
                allocated += 1
                condition.unlock()
                return SectionBuffer(capacity: bufferSize)
            }
            if allocated < limit {
                if budget.tryReserve(bufferSize, by: ObjectIdentifier(self)) {
                    allocated += 1
                    condition.unlock()
                    return SectionBuffer(capacity: bufferSize)
                }
                if let deadline, Date() >= deadline {
                    condition.unlock()
                    return nil
                }
                if let interruption { condition.unlock(); throw interruption }
                // The budget is full: wait for one of ours to come back, or retry the budget shortly.
                _ = condition.wait(until: Date(timeIntervalSinceNow: 0.01))
                continue
            }
            if let interruption { condition.unlock(); throw interruption }
            condition.wait()
        }
    }

    /// Until ``resume()``, an acquire that would wait throws `error` instead. Why: a stream whose
    /// upload failed keeps its parts for a restart, so their buffers never come back by themselves,
    /// and the writer waiting for one must be told, to restart the upload or fail.
    public func interrupt(with error: NetdiskError) {
        condition.lock()
        interruption = error
        condition.broadcast()
        condition.unlock()
    }

    /// True once ``cancel()`` ran (an unlink, an abort, the end of the session).
    public var isCancelled: Bool {
        condition.lock(); defer { condition.unlock() }
        return cancelled
    }

    /// Waits are plain backpressure again (the upload restarted).
    public func resume() {
        condition.lock()
        interruption = nil
        condition.unlock()
    }

    /// Buffers handed out and not yet given back (in slots, uploading, or held for readers).
    public var outstanding: Int {
        condition.lock()
        defer { condition.unlock() }
        return allocated - free.count
    }

    /// What ``tryAcquire()`` found.
    public enum Attempt {
        case buffer(SectionBuffer)
        /// Every buffer of this pool is out: one comes back when a part finishes uploading.
        case poolExhausted
        /// The pool may grow, but the shared budget refused (other files hold it).
        case budgetExhausted
    }

    /// A buffer if one can be had without waiting, or why not. `forceFirst`: a pool's first
    /// buffer is taken past the budget (see ``acquire(budgetWait:)``).
    public func tryAcquire(forceFirst: Bool = true) throws(NetdiskError) -> Attempt {
        condition.lock()
        defer { condition.unlock() }
        if cancelled { throw .cancelled }
        if let buffer = free.popLast() {
            buffer.count = 0
            return .buffer(buffer)
        }
        if allocated >= limit { return .poolExhausted }
        if allocated == 0 && forceFirst {
            budget.forceReserve(bufferSize)
        } else if !budget.tryReserve(bufferSize, by: ObjectIdentifier(self)) {
            return .budgetExhausted
        }
        allocated += 1
        return .buffer(SectionBuffer(capacity: bufferSize))
    }

    public func release(_ buffer: SectionBuffer) {
        condition.lock()
        if cancelled || allocated > limit || (allocated > 1 && budget.isContended(apartFrom: ObjectIdentifier(self))) {
            allocated -= 1
            // A writer waiting at the pool's limit may now take a buffer from the budget: without
            // this it slept until its own next release, which a file whose other buffers are its
            // window and its kept parts never makes (only that writer could free them).
            condition.signal()
            condition.unlock()
            budget.release(bufferSize)
            return
        }
        free.append(buffer)
        condition.signal()
        condition.unlock()
    }

    /// Wakes blocked acquirers with `.cancelled` and gives idle buffers back to the budget.
    public func cancel() {
        condition.lock()
        cancelled = true
        let idle = free.count
        free.removeAll()
        allocated -= idle
        condition.broadcast()
        condition.unlock()
        if idle > 0 { budget.release(idle * bufferSize) }
    }

    /// Gives idle buffers back to the budget (the session ended); buffers still out are freed on release.
    public func close() { cancel() }
}
