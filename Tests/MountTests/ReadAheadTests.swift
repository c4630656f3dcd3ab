import Foundation
@testable import NetdiskFS
import Synchronization
import Testing
import Uploader

/// The read path's range planning, against a counting in-memory source: no FUSE needed.
/// Sizes are the mount's defaults divided by 16 (kernel reads of 64 KiB, windows up to 1 MiB),
/// so a debug build checks every byte quickly.
@Suite struct ReadAheadTests {
    static let tuning = RemoteFileReader.Tuning(initialWindow: 64 << 10, maxWindow: 1 << 20, randomReadSize: 16 << 10,
                                                prefetchDepth: 3, heldWindows: 2, reorderSlack: 512 << 10)
    static let request = 64 << 10

    /// Serves ranges of a deterministic file and records every request.
    final class CountingSource: RangeSource {
        let size: Int64
        let requests = Mutex([(offset: Int64, length: Int)]())
        init(size: Int64) { self.size = size }
        static func byte(at offset: Int64) -> UInt8 { UInt8(truncatingIfNeeded: (offset &* 2_654_435_761) >> 13) }
        func download(fsID: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(NetdiskError) -> Int {
            requests.withLock { $0.append((offset, buffer.count)) }
            let end = min(size, offset + Int64(buffer.count))
            guard offset < end else { return 0 }
            for position in offset..<end { buffer[Int(position - offset)] = Self.byte(at: position) }
            return Int(end - offset)
        }
        var count: Int { requests.withLock { $0.count } }
        var bytesFetched: Int64 { requests.withLock { $0.reduce(0) { $0 + Int64($1.length) } } }
    }

    static func reader(size: Int64, source: CountingSource,
                       budget: MemoryBudget = MemoryBudget(bytes: 4 << 20)) -> RemoteFileReader {
        let entry = RemoteEntry(fsID: 7, path: "/f", name: "f", size: size, isDirectory: false)
        return RemoteFileReader(entry: entry, links: source, budget: budget, tuning: tuning)
    }

    static func check(_ bytes: ArraySlice<UInt8>, at offset: Int64) -> Bool {
        bytes.enumerated().allSatisfy { $0.element == CountingSource.byte(at: offset + Int64($0.offset)) }
    }

    /// What the kernel's read-ahead does to `cat`: full-size requests, neighbours swapped.
    @Test func slightlyReorderedSequentialReadsUseLargeRanges() throws {
        let size: Int64 = 16 << 20
        let source = CountingSource(size: size)
        let reader = Self.reader(size: size, source: source)
        let step = Int64(Self.request)
        var order: [Int64] = []
        for pair in stride(from: Int64(0), to: size / step, by: 2) { order += [pair + 1, pair] }
        var buffer = [UInt8](repeating: 0, count: Self.request)
        for block in order {
            let count = try buffer.withUnsafeMutableBytes { try reader.read(into: $0, at: block * step) }
            #expect(count == Self.request)
            #expect(Self.check(buffer[...], at: block * step), "bytes at block \(block)")
        }
        // Windows 64 KiB, 128 KiB … 1 MiB, then 1 MiB each: about 20 ranges. The reader this replaced
        // treated each swapped pair as a seek and made one range per one or two requests (256 here).
        #expect(source.count <= 24, "\(source.count) ranges for 256 requests")
        #expect(source.bytesFetched <= size, "fetched \(source.bytesFetched) bytes for \(size)")
    }

    /// Several FUSE threads reading one descriptor at once, as the kernel sends them.
    @Test func concurrentSequentialReadersGetExactBytes() async throws {
        let size: Int64 = 8 << 20 + 12345
        let source = CountingSource(size: size)
        let reader = Self.reader(size: size, source: source)
        let blocks = Int((size + Int64(Self.request) - 1) / Int64(Self.request))
        let next = Mutex(0)
        let failures = Mutex(0)
        let threads = (0..<4).map { _ in
            Thread {
                var buffer = [UInt8](repeating: 0, count: Self.request)
                while true {
                    let block = next.withLock { value -> Int in defer { value += 1 }; return value }
                    guard block < blocks else { return }
                    let offset = Int64(block) * Int64(Self.request)
                    let count = (try? buffer.withUnsafeMutableBytes { try reader.read(into: $0, at: offset) }) ?? -1
                    let expected = Int(min(Int64(Self.request), size - offset))
                    if count != expected || !Self.check(buffer.prefix(expected), at: offset) { failures.withLock { $0 += 1 } }
                }
            }
        }
        for thread in threads { thread.start() }
        while threads.contains(where: { !$0.isFinished }) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(failures.withLock { $0 } == 0)
        #expect(source.count <= 16, "\(source.count) ranges for \(blocks) requests")
        #expect(source.bytesFetched <= size + (1 << 20))
    }

    @Test func randomReadsFetchSmallRanges() throws {
        let size: Int64 = 256 << 20
        let source = CountingSource(size: size)
        let reader = Self.reader(size: size, source: source)
        var buffer = [UInt8](repeating: 0, count: 4096)
        // Offsets far apart (more than the reorder slack): each read is a seek.
        for index in 0..<20 {
            let offset = Int64(index * 12 + 3) << 20 + Int64(index * 777)
            let count = try buffer.withUnsafeMutableBytes { try reader.read(into: $0, at: offset) }
            #expect(count == 4096 && Self.check(buffer[...], at: offset))
        }
        #expect(source.requests.withLock { $0.allSatisfy { $0.length == 16 << 10 } }, "\(source.requests.withLock { $0.map(\.length) })")
        #expect(source.count == 20)
    }

    @Test func readAheadStaysWithinTheBudget() throws {
        let size: Int64 = 12 << 20
        let source = CountingSource(size: size)
        let budget = MemoryBudget(bytes: 512 << 10)
        var reader: RemoteFileReader? = Self.reader(size: size, source: source, budget: budget)
        var buffer = [UInt8](repeating: 0, count: Self.request)
        var offset: Int64 = 0
        while offset < size {
            let count = try buffer.withUnsafeMutableBytes { try reader!.read(into: $0, at: offset) }
            #expect(count > 0 && Self.check(buffer.prefix(count), at: offset))
            offset += Int64(count)
        }
        #expect(source.requests.withLock { $0.allSatisfy { $0.length <= 512 << 10 } }, "no range larger than the budget")
        reader = nil
        // Background fetches give their reservation back when they finish.
        var released = false
        for _ in 0..<200 where !released {
            released = budget.inUse == 0
            if !released { Thread.sleep(forTimeInterval: 0.01) }
        }
        #expect(released, "the whole budget is free again once the reader is gone: \(budget.usage)")
        #expect(budget.usage.peak <= 512 << 10 + Self.request, "reads stayed within the budget: \(budget.usage)")
    }

    /// A budget held by writers whose parts wait on a slow server must not slow a small read:
    /// `cat` of a 3-byte file answered in 2.1 s while 24 copies waited (the read waited 0.5 s
    /// for room that was never going to come).
    @Test func aReadDoesNotWaitOnABudgetFullOfWrites() throws {
        let size: Int64 = 3
        let source = CountingSource(size: size)
        let budget = MemoryBudget(bytes: 512 << 10)
        budget.forceReserve(512 << 10, for: .writes)
        let reader = Self.reader(size: size, source: source, budget: budget)
        var buffer = [UInt8](repeating: 0, count: 4096)
        let started = Date()
        let count = try buffer.withUnsafeMutableBytes { try reader.read(into: $0, at: 0) }
        let seconds = Date().timeIntervalSince(started)
        #expect(count == 3 && Self.check(buffer.prefix(3), at: 0))
        #expect(seconds < 0.3, "a 3-byte read took \(seconds) s on a full budget (it waited 0.5 s)")
        budget.release(512 << 10, for: .writes)
    }

    /// Records where streams were asked for, and fails them (reads then fall back to windows).
    final class StreamRecordingSource: RangeSource {
        let inner: CountingSource
        let streams = Mutex([Int64]())
        init(size: Int64) { inner = CountingSource(size: size) }
        func download(fsID: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(NetdiskError) -> Int {
            try inner.download(fsID: fsID, offset: offset, into: buffer)
        }
        var canStream: Bool { true }
        func stream(fsID: UInt64, offset: Int64, length: Int64, into sink: ResponseSink) throws(NetdiskError) {
            streams.withLock { $0.append(offset) }
            throw .transport("no streams in this test")
        }
    }

    /// A read from offset 0 streams at once; a first read further in (`tail`, `unzip -l`, an mp4's
    /// index at the end) must not stream from 0, which would download everything before it.
    @Test func onlyARunFromTheStartStreamsAtOnce() throws {
        let size: Int64 = 6 << 20
        // 256 KiB: past the first window (64 KiB here), yet near enough to 0 to count as sequential.
        for (offset, expected) in [(Int64(256 << 10), [Int64]()), (size - 4096, []), (Int64(0), [Int64(0)])] {
            let source = StreamRecordingSource(size: size)
            let entry = RemoteEntry(fsID: 7, path: "/f", name: "f", size: size, isDirectory: false)
            let reader = RemoteFileReader(entry: entry, links: source, budget: MemoryBudget(bytes: 64 << 20), tuning: Self.tuning)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = try buffer.withUnsafeMutableBytes { try reader.read(into: $0, at: offset) }
            #expect(count == 4096 && Self.check(buffer[...], at: offset))
            // The stream starts on its own thread: wait for it (or long enough to know none comes).
            for _ in 0..<(expected.isEmpty ? 6 : 100) where source.streams.withLock({ $0 }).count < max(1, expected.count) {
                Thread.sleep(forTimeInterval: 0.05)
            }
            #expect(source.streams.withLock { $0 } == expected, "first read at \(offset)")
            withExtendedLifetime(reader) {}
        }
    }
}
