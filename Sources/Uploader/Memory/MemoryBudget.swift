import Foundation

/// The daemon's one memory budget (`--max-memory`): write slices, read-ahead windows and the
/// transfer buffers behind them all draw from it, so many files or a reader beside a writer never
/// multiply the memory a single file may use. Past it, writers and readers wait; they never fail.
///
/// Why one budget rather than one per direction: a mount that only writes may use all of it for
/// upload concurrency, one that only reads for read-ahead, and one that does both shares it
/// (a refusal marks the budget contended, and write pools then give idle buffers back).
/// A reservation larger than the whole budget is clamped so it can always proceed.
public final class MemoryBudget: @unchecked Sendable {
    /// What a reservation is for, so `status` can say where the memory goes.
    public enum Use: Int, Sendable, CaseIterable {
        case writes
        case reads
    }

    /// Budget use at one moment, for `status`.
    public struct Usage: Sendable, Codable, Equatable {
        public var capacity: Int
        public var writes: Int
        public var reads: Int
        /// The most ever in use at once.
        public var peak: Int
        public var inUse: Int { writes + reads }
    }

    public let capacity: Int
    private let condition = NSCondition()
    private var used = [0, 0]
    private var peak = 0
    /// The latest refusals, one per requester (the two most recent): who and when.
    private var refusals: [(requester: ObjectIdentifier?, at: UInt64)] = []

    public init(bytes: Int) { capacity = max(1, bytes) }

    private var total: Int { used[0] + used[1] }

    private func take(_ amount: Int, _ use: Use) {
        used[use.rawValue] += amount
        peak = max(peak, total)
    }

    /// Waits up to `timeout` seconds for `bytes` to fit; false (nothing reserved) when they did not.
    public func reserve(_ bytes: Int, for use: Use = .writes, waitingAtMost timeout: Double) -> Bool {
        let amount = min(bytes, capacity)
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while total + amount > capacity {
            refused(nil)
            if !condition.wait(until: deadline) {
                if total + amount > capacity { return false }
                break
            }
        }
        take(amount, use)
        return true
    }

    /// Takes `bytes` even past the capacity: a file's first buffer (see `BufferPool.acquire`) and the
    /// bytes a read must return, which must never wait on memory only their own thread could free.
    public func forceReserve(_ bytes: Int, for use: Use = .writes) {
        condition.lock()
        take(min(bytes, capacity), use)
        condition.unlock()
    }

    /// Reserves only if it fits now; a refusal marks the budget contended for a moment, for
    /// everyone but `requester` (a pool passes itself).
    public func tryReserve(_ bytes: Int, for use: Use = .writes, by requester: ObjectIdentifier? = nil) -> Bool {
        let amount = min(bytes, capacity)
        condition.lock()
        defer { condition.unlock() }
        guard total + amount <= capacity else {
            refused(requester)
            return false
        }
        take(amount, use)
        return true
    }

    /// True when someone other than `requester` was refused in the last 100 ms: pools then give
    /// idle buffers back. A pool's own refusals do not count: one file that wants more than the
    /// whole budget would otherwise unmap each slice as it came back and map a fresh one.
    public func isContended(apartFrom requester: ObjectIdentifier?) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let now = DispatchTime.now().uptimeNanoseconds
        return refusals.contains { $0.requester != requester && now - $0.at < 100_000_000 }
    }

    /// Called with the lock held.
    private func refused(_ requester: ObjectIdentifier?) {
        refusals.removeAll { $0.requester == requester }
        refusals.append((requester, DispatchTime.now().uptimeNanoseconds))
        if refusals.count > 2 { refusals.removeFirst() }
    }

    public func release(_ bytes: Int, for use: Use = .writes) {
        guard bytes > 0 else { return }
        let amount = min(bytes, capacity)
        condition.lock()
        used[use.rawValue] -= amount
        condition.broadcast()
        condition.unlock()
    }

    public var inUse: Int {
        condition.lock()
        defer { condition.unlock() }
        return total
    }

    public var usage: Usage {
        condition.lock()
        defer { condition.unlock() }
        return Usage(capacity: capacity, writes: used[0], reads: used[1], peak: peak)
    }
}
