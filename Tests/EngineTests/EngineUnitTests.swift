import Foundation
import Logging
import Testing
import Synchronization
@testable import Uploader
@testable import NetdiskFS

/// Small slices keep unit tests fast; the fake, unlike Baidu, accepts a first part under 4 MiB.
let testSlice = 64 << 10

func testOptions(slice: Int = testSlice, threads: Int = 3, window: Int = 2) -> EngineOptions {
    let dir = NSTemporaryDirectory() + "engine-tests-" + UUID().uuidString
    return EngineOptions(sliceSize: slice, threads: threads, cacheDirectory: dir, reorderWindowSlices: window,
                         retryBaseDelay: 0.001)
}

let testLogger = Logger(label: "engine-tests")

/// Runs a producer on a dedicated thread, as FUSE or the stdin reader would.
func onForeignThread<T: Sendable>(_ body: @escaping @Sendable () throws(NetdiskError) -> T) async throws -> T {
    try await runOnDedicatedThread(body)
}

extension FileWriteSession {
    /// Writes bytes of an array (typed-throws friendly).
    func write(_ bytes: ArraySlice<UInt8>, at offset: Int64) throws(NetdiskError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(NetdiskError) in try self.write(raw, at: offset) } }
        try result.get()
    }
    func read(count: Int, at offset: Int64) throws(NetdiskError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let result = out.withUnsafeMutableBytes { raw in Result { () throws(NetdiskError) in try self.read(into: raw, at: offset) } }
        out.removeLast(count - (try result.get()))
        return out
    }
}

/// Writes `data[from...]` at its own offsets, `chunk` bytes per write, as `cp` would.
func writeAll(_ session: FileWriteSession, _ data: [UInt8], from: Int = 0, chunk: Int = 10_000) throws(NetdiskError) {
    var offset = from
    while offset < data.count {
        let n = min(chunk, data.count - offset)
        try session.write(data[offset..<offset + n], at: Int64(offset))
        offset += n
    }
}

@Suite struct ByteRangesTests {
    @Test func mergesAndFindsGaps() {
        var r = ByteRanges()
        r.insert(10..<20)
        r.insert(30..<40)
        r.insert(20..<25)
        #expect(r.ranges == [10..<25, 30..<40])
        #expect(r.gaps(in: 0..<50) == [0..<10, 25..<30, 40..<50])
        #expect(r.contains(12..<24))
        #expect(!r.contains(12..<31))
        r.insert(0..<100)
        #expect(r.ranges == [0..<100])
        r.clip(to: 50)
        #expect(r.ranges == [0..<50])
    }
}

@Suite struct StreamingSessionTests {
    @Test(arguments: [0, 1, testSlice - 1, testSlice, testSlice + 1, 3 * testSlice + 17])
    func roundTripIsExact(size: Int) async throws {
        let api = FakeNetdisk()
        let data = SplitMix.bytes(size, seed: UInt64(size) + 1)
        let session = FileWriteSession(api: api, remotePath: "/apps/t/f\(size)", mode: .streaming,
                                       options: testOptions(), budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let entry = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            try writeAll(session, data)
            return try session.finish()
        }
        #expect(entry.size == Int64(size))
        #expect(api.content("/apps/t/f\(size)") == data)
        #expect(!session.isCached)
        // Files that never fill one slice skip the placeholder precreate.
        #expect(api.streamingPrecreates == (size >= testSlice ? 1 : 0))
    }

    @Test func reorderWindowAndPatchesStayInMemory() async throws {
        let api = FakeNetdisk()
        let slice = testSlice
        var reference = SplitMix.bytes(4 * slice + 100, seed: 7)
        let session = FileWriteSession(api: api, remotePath: "/r", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let patch: [UInt8] = Array(repeating: 0xAB, count: 300)
        let ref = reference
        try await onForeignThread { () throws(NetdiskError) in
            func put(_ lo: Int, _ hi: Int) throws(NetdiskError) {
                try session.write(ref[lo..<hi], at: Int64(lo))
            }
            try put(0, 1000)
            try put(3000, 9000)        // ahead of the head: held in the window
            try put(1000, 3000)        // fills the gap
            try put(9000, slice + 500)
            try session.write(patch[...], at: Int64(slice + 100))  // behind the head, unsent
            try put(slice + 500, 4 * slice + 100)
        }
        for i in 0..<300 { reference[slice + 100 + i] = 0xAB }
        let entry = try await onForeignThread { () throws(NetdiskError) in try session.finish() }
        #expect(entry.size == Int64(reference.count))
        #expect(api.content("/r") == reference)
        #expect(!session.isCached, "small reordering must not leave the streaming path")
    }

    @Test func writeBehindSentDataFallsBackAndStaysExact() async throws {
        let api = FakeNetdisk()
        let slice = testSlice
        var reference = SplitMix.bytes(6 * slice + 1234, seed: 9)
        let session = FileWriteSession(api: api, remotePath: "/movie.mp4", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let ref = reference
        let header: [UInt8] = Array(repeating: 0x11, count: 64)
        let mid: [UInt8] = Array(repeating: 0x22, count: 100)
        try await onForeignThread { () throws(NetdiskError) in
            try writeAll(session, Array(ref[0..<(4 * slice + 10)]))
            // A muxer patches its header at 0 and an index mid-file, both already sent.
            try session.write(header[...], at: 0)
            try session.write(mid[...], at: Int64(2 * slice - 50))
            try session.write(ref[(4 * slice + 10)...], at: Int64(4 * slice + 10))
            // Reading back data that is only in the cloud backfills it.
            let probe = try session.read(count: 200, at: Int64(slice))
            #expect(probe == Array(ref[slice..<(slice + 200)]))
        }
        for i in 0..<64 { reference[i] = 0x11 }
        for i in 0..<100 { reference[2 * slice - 50 + i] = 0x22 }
        #expect(session.isCached)
        #expect(api.content("/movie.mp4") == nil, "nothing at the target before finish")
        let entry = try await onForeignThread { () throws(NetdiskError) in try session.finish() }
        #expect(entry.size == Int64(reference.count))
        #expect(api.content("/movie.mp4") == reference)
        #expect(api.paths == ["/movie.mp4"], "the staging file is deleted after the commit")
    }

    @Test func abortCommitsNothing() async throws {
        let api = FakeNetdisk()
        // More than the pool holds (threads + 1 + the kept head), so parts must go out before it returns.
        let data = SplitMix.bytes(16 * testSlice, seed: 3)
        let session = FileWriteSession(api: api, remotePath: "/gone", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        try await onForeignThread { () throws(NetdiskError) in try writeAll(session, data) }
        session.abort()
        #expect(api.paths.isEmpty)
        #expect(api.partsReceived > 0, "parts were streamed before the abort")
        #expect(throws: NetdiskError.cancelled) { try session.finish() }
    }

    @Test func partFailuresAndBadMD5AreRetried() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.partFailureRate = 0.1; $0.badMD5Count = 2 }
        let data = SplitMix.bytes(40 * testSlice + 5, seed: 11)
        let session = FileWriteSession(api: api, remotePath: "/flaky", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        _ = try await onForeignThread { () throws(NetdiskError) in
            try writeAll(session, data, chunk: 1 << 20)
            return try session.finish()
        }
        #expect(api.content("/flaky") == data)
        #expect(api.partsReceived >= 41 + 2, "the two parts answered with a wrong MD5 were resent")
    }

    @Test func uploadExpiryMidStreamCommitsNothing() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.expireAfterParts = 3 }
        let data = SplitMix.bytes(10 * testSlice, seed: 5)
        let session = FileWriteSession(api: api, remotePath: "/expired", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let outcome: NetdiskError? = try await onForeignThread { () -> NetdiskError? in
            do throws(NetdiskError) {
                try writeAll(session, data)
                _ = try session.finish()
                return nil
            } catch { return error }
        }
        #expect(outcome == .uploadExpired || outcome == .unknownUploadID)
        #expect(api.paths.isEmpty)
    }

    @Test func crossingTheMaximumSizeFailsBeforeSending() async throws {
        let api = FakeNetdisk()
        var options = testOptions()
        options.maxFileSize = Int64(3 * testSlice)
        let session = FileWriteSession(api: api, remotePath: "/big", mode: .streaming, options: options,
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let data = SplitMix.bytes(4 * testSlice, seed: 1)
        let error: NetdiskError? = try await onForeignThread { () -> NetdiskError? in
            do throws(NetdiskError) { try writeAll(session, data, chunk: testSlice / 2); return nil } catch { return error }
        }
        #expect(error == .fileTooLarge(limit: Int64(3 * testSlice)))
        #expect(api.partBytesReceived <= 3 * testSlice)
        session.abort()
        #expect(api.paths.isEmpty)
    }

    @Test func refusedStreamingPrecreateTakesTheCachedPath() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.refuseStreamingPrecreate = true }
        let data = SplitMix.bytes(3 * testSlice + 17, seed: 21)
        let session = FileWriteSession(api: api, remotePath: "/refused", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        _ = try await onForeignThread { () throws(NetdiskError) in
            try writeAll(session, data)
            return try session.finish()
        }
        #expect(api.content("/refused") == data)
    }

    @Test func cachedModeEditsAnExistingFile() async throws {
        let api = FakeNetdisk()
        let original = SplitMix.bytes(5 * testSlice + 3, seed: 8)
        let seed = FileWriteSession(api: api, remotePath: "/doc", mode: .streaming, options: testOptions(),
                                    budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let existing = try await onForeignThread { () throws(NetdiskError) in
            try writeAll(seed, original)
            return try seed.finish()
        }
        var expected = original
        let session = FileWriteSession(api: api, remotePath: "/doc", mode: .cached(existing: existing),
                                       options: testOptions(), budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let patch: [UInt8] = Array(repeating: 7, count: 10)
        _ = try await onForeignThread { () throws(NetdiskError) in
            try session.write(patch[...], at: Int64(2 * testSlice))
            try session.write(patch[...], at: Int64(original.count))
            return try session.finish()
        }
        for i in 0..<10 { expected[2 * testSlice + i] = 7 }
        expected += patch
        #expect(api.content("/doc") == expected)
    }
}

@Suite struct CachedUploadTests {
    func tempFile(_ data: [UInt8]) -> String {
        let path = NSTemporaryDirectory() + "engine-src-" + UUID().uuidString
        _ = FileManager.default.createFile(atPath: path, contents: Data(data))
        return path
    }

    @Test(arguments: [0, 1, testSlice - 1, testSlice, testSlice + 1, 3 * testSlice + 17])
    func roundTripIsExact(size: Int) async throws {
        let api = FakeNetdisk()
        let data = SplitMix.bytes(size, seed: UInt64(size) + 99)
        let path = tempFile(data)
        defer { unlink(path) }
        let upload = CachedUpload(api: api, options: testOptions(), budget: MemoryBudget(bytes: 64 << 20),
                                  progress: ProgressCounters(mode: .cached), logger: testLogger)
        let entry = try await onForeignThread { () throws(NetdiskError) in
            try upload.upload(try LocalFileSource(path: path), to: "/c\(size)")
        }
        #expect(entry.size == Int64(size))
        #expect(api.content("/c\(size)") == data)
    }

    @Test func secondPutIsARapidHit() async throws {
        let api = FakeNetdisk()
        let data = SplitMix.bytes(2 * testSlice + 5, seed: 4)
        let path = tempFile(data)
        defer { unlink(path) }
        let upload = CachedUpload(api: api, options: testOptions(), budget: MemoryBudget(bytes: 64 << 20),
                                  progress: ProgressCounters(mode: .cached), logger: testLogger)
        _ = try await onForeignThread { () throws(NetdiskError) in try upload.upload(try LocalFileSource(path: path), to: "/a") }
        let before = api.partsReceived
        _ = try await onForeignThread { () throws(NetdiskError) in try upload.upload(try LocalFileSource(path: path), to: "/b") }
        #expect(api.partsReceived == before)
        #expect(api.rapidHits == 1)
        #expect(api.content("/b") == data)
    }

    @Test func journalResumesOnlyMissingParts() async throws {
        let api = FakeNetdisk()
        let data = SplitMix.bytes(20 * testSlice, seed: 12)
        let path = tempFile(data)
        defer { unlink(path) }
        let options = testOptions(threads: 1)
        let journal = try UploadJournal(path: options.cacheDirectory + "/journal.sqlite")
        api.setFaults { $0.crashAfterParts = 7 }
        let upload = CachedUpload(api: api, options: options, budget: MemoryBudget(bytes: 64 << 20), journal: journal,
                                  progress: ProgressCounters(mode: .cached), logger: testLogger)
        let source = try LocalFileSource(path: path)
        let first: NetdiskError? = try await onForeignThread { () -> NetdiskError? in
            do throws(NetdiskError) { _ = try upload.upload(source, to: "/resume", identity: source.identity); return nil }
            catch { return error }
        }
        #expect(first != nil)
        #expect(api.partsReceived == 7)
        api.setFaults { $0.crashAfterParts = nil }
        _ = try await onForeignThread { () throws(NetdiskError) in
            try upload.upload(source, to: "/resume", identity: source.identity)
        }
        #expect(api.partsReceived == 20, "the rerun sent only the 13 missing parts")
        #expect(api.content("/resume") == data)
    }

    @Test func expiredUploadIDLeadsToAFreshUpload() async throws {
        let api = FakeNetdisk()
        let data = SplitMix.bytes(6 * testSlice, seed: 13)
        let path = tempFile(data)
        defer { unlink(path) }
        api.setFaults { $0.expireAfterParts = 2 }
        let upload = CachedUpload(api: api, options: testOptions(threads: 1), budget: MemoryBudget(bytes: 64 << 20),
                                  progress: ProgressCounters(mode: .cached), logger: testLogger)
        _ = try await onForeignThread { () throws(NetdiskError) in try upload.upload(try LocalFileSource(path: path), to: "/x") }
        #expect(api.content("/x") == data)
        #expect(api.partsReceived >= 6 + 2, "the parts of the expired upload were sent again")
    }
}

@Suite struct AppendTests {
    @Test func appendFillsSectionBuffersInPlace() async throws {
        let api = FakeNetdisk()
        let data = SplitMix.bytes(5 * testSlice + 333, seed: 31)
        let session = FileWriteSession(api: api, remotePath: "/appended", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            var offset = 0
            while try session.append(limit: 7_000, { space in
                let n = min(space.count, data.count - offset)
                data.withUnsafeBytes { space.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
                offset += n
                return n
            }) > 0 {}
            return try session.finish()
        }
        #expect(api.content("/appended") == data)
        #expect(!session.isCached)
    }
}

@Suite struct MemoryBudgetTests {
    /// Eight files streaming at once through a budget of three slices: writers wait, none deadlocks.
    @Test(.timeLimit(.minutes(1))) func manyWritersShareASmallBudget() async throws {
        let api = FakeNetdisk()
        let budget = MemoryBudget(bytes: 3 * testSlice)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<8 {
                group.addTask {
                    let data = SplitMix.bytes(9 * testSlice + index, seed: UInt64(100 + index))
                    let session = FileWriteSession(api: api, remotePath: "/many/\(index)", mode: .streaming,
                                                   options: testOptions(threads: 4), budget: budget, logger: testLogger)
                    _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
                        try writeAll(session, data, chunk: 20_000)
                        return try session.finish()
                    }
                    #expect(api.content("/many/\(index)") == data)
                }
            }
            try await group.waitForAll()
        }
        #expect(budget.inUse == 0, "every buffer went back to the budget")
    }

    /// One thread writing to more files, in turn, than the budget has slices: each file holds a
    /// partly filled buffer only that thread can complete, so a file's first buffer must not wait.
    @Test(.timeLimit(.minutes(1))) func oneThreadInterleavingMoreFilesThanTheBudgetHolds() async throws {
        let api = FakeNetdisk()
        let budget = MemoryBudget(bytes: 3 * testSlice)
        let files = 7
        let contents = (0..<files).map { SplitMix.bytes(3 * testSlice + 777 * $0, seed: UInt64(300 + $0)) }
        let sessions = (0..<files).map {
            FileWriteSession(api: api, remotePath: "/interleaved/\($0)", mode: .streaming, options: testOptions(threads: 2),
                             budget: budget, logger: testLogger)
        }
        _ = try await onForeignThread { () throws(NetdiskError) -> Int in
            let chunk = testSlice / 4
            var offset = 0
            while contents.contains(where: { offset < $0.count }) {
                for (session, data) in zip(sessions, contents) where offset < data.count {
                    let end = min(offset + chunk, data.count)
                    try session.write(data[offset..<end], at: Int64(offset))
                }
                offset += chunk
            }
            for session in sessions { _ = try session.finish() }
            return 0
        }
        for (index, data) in contents.enumerated() { #expect(api.content("/interleaved/\(index)") == data) }
        #expect(budget.inUse == 0, "every buffer went back to the budget")
    }

    /// One thread writes each file's second slice, then each first slice: every file holds a part
    /// ahead of its unfinished head, and together they hold the whole budget. Waiting for memory
    /// only this thread could free was a deadlock (chaos scenario "reorder-window"); now a file
    /// whose write waits 2 s on a full budget spills to the cached path, and every file is exact.
    @Test(.timeLimit(.minutes(1))) func oneThreadWritingThirteenFilesAheadOfTheirHeads() async throws {
        let api = FakeNetdisk()
        let budget = MemoryBudget(bytes: 4 * testSlice)
        let files = 13
        let contents = (0..<files).map { SplitMix.bytes(3 * testSlice + 99 * $0, seed: UInt64(900 + $0)) }
        let sessions = (0..<files).map {
            FileWriteSession(api: api, remotePath: "/ahead/\($0)", mode: .streaming, options: testOptions(threads: 2),
                             budget: budget, logger: testLogger)
        }
        _ = try await onForeignThread { () throws(NetdiskError) -> Int in
            for (session, data) in zip(sessions, contents) { try session.write(data[testSlice..<2 * testSlice], at: Int64(testSlice)) }
            for (session, data) in zip(sessions, contents) { try session.write(data[0..<testSlice], at: 0) }
            for (session, data) in zip(sessions, contents) { try session.write(data[(2 * testSlice)...], at: Int64(2 * testSlice)) }
            for session in sessions { _ = try session.finish() }
            return 0
        }
        for (index, data) in contents.enumerated() { #expect(api.content("/ahead/\(index)") == data, "file \(index)") }
        #expect(budget.inUse == 0, "every buffer went back to the budget")
    }
}

/// The parts kept for readers yield to a stream starved of parts on the wire: the head was never
/// let go (the tail came back with every part sent), so at SVIP's 4 slices in the default budget the
/// pinned head left 2 parts in flight, and `cp` at 100 ms per call ran at 0.68 of its 0 ms speed.
@Suite struct SentPartsYieldTests {
    @Test(.timeLimit(.minutes(1))) func theHeadGoesBackWhenTooFewPartsAreOnTheWire() async throws {
        let api = FakeNetdisk()
        let gate = Gate()
        // The head's two parts upload at once (and are then kept for readers); every later part waits.
        let slowAPI = GatedNetdisk(inner: api, gate: gate, ungatedParts: SentParts.headParts(slice: testSlice))
        let budget = MemoryBudget(bytes: 5 * testSlice)
        let session = FileWriteSession(api: slowAPI, remotePath: "/starved", mode: .streaming, options: testOptions(threads: 4),
                                       budget: budget, logger: testLogger)
        let data = SplitMix.bytes(12 * testSlice, seed: 77)
        let head = SentParts.headParts(slice: testSlice) * testSlice
        _ = try await onForeignThread { () throws(NetdiskError) -> Int in try session.write(data[..<head], at: 0); return 0 }
        // Until the head's uploads have ended and only readers hold it (polls end early; the bound is for CI).
        for _ in 0..<1500 where session.sentPartsUploading != 0 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(session.sentPartsUploading == 0)
        let writer = Task {
            try await onForeignThread { () throws(NetdiskError) -> Int in
                for offset in stride(from: head, to: data.count, by: testSlice) {
                    try session.write(data[offset..<offset + testSlice], at: Int64(offset))
                }
                return 0
            }
        }
        var onTheWire = 0
        for _ in 0..<600 where onTheWire < 4 {
            try await Task.sleep(for: .milliseconds(50))
            onTheWire = slowAPI.waiting
        }
        // 5 slices: four parts at the gate once the head is let go and one filled part queued behind
        // them; with the head kept, three at the gate.
        #expect(onTheWire == 4, "parts on the wire while the budget is full: \(onTheWire)")
        #expect(session.modeName == "streaming")
        gate.open()
        _ = try await writer.value
        _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in try session.finish() }
        #expect(api.content("/starved") == data)
        #expect(budget.inUse == 0, "every buffer went back to the budget")
    }
}

@Suite struct AbortTests {
    /// A writer blocked because every buffer is in flight is woken by abort, and nothing is committed.
    @Test(.timeLimit(.minutes(1))) func abortWakesABlockedWriter() async throws {
        let api = FakeNetdisk()
        let gate = Gate()
        let slowAPI = GatedNetdisk(inner: api, gate: gate)
        let session = FileWriteSession(api: slowAPI, remotePath: "/blocked", mode: .streaming, options: testOptions(threads: 1),
                                       budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let data = SplitMix.bytes(10 * testSlice, seed: 55)
        let writer = Task {
            try await onForeignThread { () -> NetdiskError? in
                do throws(NetdiskError) { try writeAll(session, data, chunk: testSlice); return nil } catch { return error }
            }
        }
        try await Task.sleep(for: .milliseconds(300))   // the writer is now blocked on backpressure
        session.abort()
        let outcome = try await writer.value
        #expect(outcome == .cancelled)
        gate.open()
        #expect(api.paths.isEmpty)
    }
}

/// A one-way gate threads can wait on.
final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    private var opened = false
    func open() { condition.lock(); opened = true; condition.broadcast(); condition.unlock() }
    var isOpen: Bool { condition.lock(); defer { condition.unlock() }; return opened }
    func wait() { condition.lock(); while !opened { condition.wait() }; condition.unlock() }
}

/// Holds every part upload until the gate opens: uploads "in flight" forever.
final class GatedNetdisk: NetdiskAPI, @unchecked Sendable {
    let inner: FakeNetdisk
    let gate: Gate
    /// Parts below this partseq pass at once.
    let ungatedParts: Int
    private let lock = NSLock()
    private var atGate = 0
    /// Part uploads waiting at the gate now.
    var waiting: Int { lock.withLock { atGate } }
    init(inner: FakeNetdisk, gate: Gate, ungatedParts: Int = 0) {
        self.inner = inner
        self.gate = gate
        self.ungatedParts = ungatedParts
    }
    func accountInfo() async throws(NetdiskError) -> AccountInfo { try await inner.accountInfo() }
    func quota() async throws(NetdiskError) -> Quota { try await inner.quota() }
    func list(directory: String, start: Int, limit: Int) async throws(NetdiskError) -> [RemoteEntry] {
        try await inner.list(directory: directory, start: start, limit: limit)
    }
    func downloadLinks(fsIDs: [UInt64]) async throws(NetdiskError) -> [UInt64: String] { try await inner.downloadLinks(fsIDs: fsIDs) }
    func download(dlink: String, offset: Int64, length: Int) async throws(NetdiskError) -> [UInt8] {
        try await inner.download(dlink: dlink, offset: offset, length: length)
    }
    func precreate(path: String, size: Int64, blockList: [String], contentMD5: String?, sliceMD5: String?,
                   localMtime: Int64?, policy: ConflictPolicy) async throws(NetdiskError) -> PrecreateResult {
        try await inner.precreate(path: path, size: size, blockList: blockList, contentMD5: contentMD5, sliceMD5: sliceMD5,
                                  localMtime: localMtime, policy: policy)
    }
    func precreateStreaming(path: String, strategy: StreamingStrategy, provisionalSize: Int64,
                            policy: ConflictPolicy) async throws(NetdiskError) -> String {
        try await inner.precreateStreaming(path: path, strategy: strategy, provisionalSize: provisionalSize, policy: policy)
    }
    func uploadPart(path: String, uploadID: String, partseq: Int, bytes: PartBytes) async throws(NetdiskError) -> String {
        // Wait on a dedicated thread so the cooperative pool stays free.
        if partseq >= ungatedParts {
            let gate = self.gate
            lock.withLock { atGate += 1 }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                Thread {
                    gate.wait()
                    continuation.resume()
                }.start()
            }
            lock.withLock { atGate -= 1 }
        }
        return try await inner.uploadPart(path: path, uploadID: uploadID, partseq: partseq, bytes: bytes)
    }
    func create(path: String, size: Int64, uploadID: String, blockList: [String], localMtime: Int64?,
                policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry {
        try await inner.create(path: path, size: size, uploadID: uploadID, blockList: blockList, localMtime: localMtime, policy: policy)
    }
    func rapidUpload(path: String, size: Int64, contentMD5: String, sliceMD5: String,
                     policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry? {
        try await inner.rapidUpload(path: path, size: size, contentMD5: contentMD5, sliceMD5: sliceMD5, policy: policy)
    }
    func makeDirectory(path: String) async throws(NetdiskError) -> RemoteEntry { try await inner.makeDirectory(path: path) }
    func delete(paths: [String]) async throws(NetdiskError) { try await inner.delete(paths: paths) }
    func move(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError) {
        try await inner.move(from: from, toDirectory: toDirectory, newName: newName, ondup: ondup)
    }
    func copy(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError) {
        try await inner.copy(from: from, toDirectory: toDirectory, newName: newName, ondup: ondup)
    }
    func rename(path: String, newName: String) async throws(NetdiskError) { try await inner.rename(path: path, newName: newName) }
}

/// Who owns a staging file, and the sweeps at start-up.
@Suite struct LeftoverTests {
    @Test func stagingNamesCarryTheirOwner() throws {
        let name = StagingOwner.current.fileName()
        let owner = try #require(StagingOwner.parse(name))
        #expect(owner == StagingOwner.current && owner.isAlive)
        var dead = owner
        dead.startTime += 1
        #expect(!dead.isAlive, "a reused pid with another start time is not the owner")
        #expect(StagingOwner.parse(UUID().uuidString) == nil, "a name we did not make has no owner")
    }

    @Test func cacheSweepSparesFilesALiveSessionHolds() throws {
        let directory = NSTemporaryDirectory() + "sweep-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory + "/files", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let abandoned = directory + "/files/abandoned"
        try Data(repeating: 1, count: 10_000).write(to: URL(fileURLWithPath: abandoned))
        let live = try SparseCache(directory: directory, size: 0, backing: nil, backingLimit: 0, api: FakeNetdisk(),
                                   logger: testLogger)
        let swept = CacheSweeper.sweep(cacheDirectory: directory, logger: testLogger)
        #expect(swept.files == 1)
        #expect(!FileManager.default.fileExists(atPath: abandoned))
        #expect(FileManager.default.fileExists(atPath: live.path), "the open session's file stays")
        live.discard()
    }
}

/// Sent parts that readers of a file being written may still read, and when their buffers go back.
@Suite struct SentPartsTests {
    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func add() { lock.withLock { value += 1 } }
        var count: Int { lock.withLock { value } }
    }

    @Test func headAndTailStayReadableAndEveryBufferGoesBackOnce() throws {
        let slice = 4 << 20
        let sent = SentParts(slice: slice)
        #expect(sent.headParts == 2 && sent.tailParts == 3)
        #expect(SentParts.tailParts(slice: 16 << 20) == 2, "a tail read may straddle two parts")
        let returned = Counter()
        var uploadDone: [@Sendable (PartOutcome) -> Void] = []
        for partseq in 0..<10 {
            let buffer = SectionBuffer(capacity: 16)
            buffer.base.storeBytes(of: UInt8(partseq), as: UInt8.self)
            buffer.count = 16
            uploadDone.append(sent.add(partseq: partseq, buffer: buffer, length: 16, giveBack: { returned.add() }))
        }
        var byte: UInt8 = 0
        // Every part is still uploading: all readable.
        for partseq in 0..<10 { #expect(sent.copy(part: partseq, from: 0, count: 1, to: &byte) && byte == UInt8(partseq)) }
        for done in uploadDone { done(.acknowledged) }
        // Uploaded: the head (0, 1) and the tail (7, 8, 9) stay; the middle went back.
        for partseq in [0, 1, 7, 8, 9] { #expect(sent.copy(part: partseq, from: 0, count: 1, to: &byte), "part \(partseq)") }
        for partseq in 2...6 { #expect(!sent.copy(part: partseq, from: 0, count: 1, to: &byte), "part \(partseq)") }
        #expect(returned.count == 5)
        #expect(!sent.copy(part: 0, from: 8, count: 16, to: &byte), "never past a part's length")
        sent.letGoOfAll()
        #expect(returned.count == 10, "each buffer went back exactly once")
        #expect(!sent.copy(part: 0, from: 0, count: 1, to: &byte))
    }

    /// A part that went back must not keep its slice mapped: a dead part stayed in the table until the
    /// next part was added, so one slice more than the budget was resident while the writer filled the
    /// next (SVIP's cp peaked at 125 MiB instead of 110).
    @Test func aPartThatWentBackHoldsNoBuffer() throws {
        let sent = SentParts(slice: 4 << 20)
        weak var weakBuffer: SectionBuffer?
        var done: (@Sendable (PartOutcome) -> Void)?
        do {
            let buffer = SectionBuffer(capacity: 4096)
            weakBuffer = buffer
            // As the stream does it: the pool's release captures the buffer.
            done = sent.add(partseq: 0, buffer: buffer, length: 16, giveBack: { withExtendedLifetime(buffer) {} })
        }
        #expect(weakBuffer != nil, "held while it uploads")
        done?(.acknowledged)
        sent.letGoOfAll()
        #expect(weakBuffer == nil, "the buffer of a part that went back is still alive")
        withExtendedLifetime(sent) {}
    }

    /// A part on the wire when the stream ends (unlink, abort) and whose upload then fails in a way
    /// that ends only its uploadid must still go back: its late `.retry` once marked it kept, for a
    /// restart that never comes, and its slice was lost to the budget for the mount's lifetime.
    @Test func aPartAbandonedOnTheWireGoesBackWhateverItsOutcome() throws {
        let sent = SentParts(slice: 4 << 20)
        let returned = Counter()
        let done = sent.add(partseq: 0, buffer: SectionBuffer(capacity: 16), length: 16, giveBack: { returned.add() })
        sent.abandonAll()
        #expect(returned.count == 0, "still on the wire: its bytes are in use")
        done(.retry)
        #expect(returned.count == 1, "an abandoned part that failed late never went back")
        #expect(!sent.canResubmit(count: 1), "nothing abandoned is sent again")
    }
}

/// A failed upload answers EIO, whatever its cause: a program retrying on EAGAIN must not spin.
@Suite struct UploadFailureErrnoTests {
    @Test func failedSessionsAreEIOExceptFullOrTooLarge() {
        #expect(UploadFailure(underlying: .rateLimited(code: 31034)).errno == EIO)
        #expect(UploadFailure(underlying: .transport("reset")).errno == EIO)
        #expect(UploadFailure(underlying: .quotaExceeded).errno == ENOSPC)
        #expect(UploadFailure(underlying: .fileTooLarge(limit: 1)).errno == EFBIG)
        #expect(NetdiskError.rateLimited(code: 31034).posixErrno == EAGAIN, "outside a session, rate limiting stays EAGAIN")
    }
}

/// Of two last releases racing on one writer, exactly one is the last, and it commits.
@Suite struct HandleTableTests {
    final class NoSession: WriteSession, @unchecked Sendable {
        func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {}
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int { 0 }
        func truncate(to size: Int64) throws {}
        var size: Int64 { 0 }
        var modeName: String { "streaming" }
        var bytesUploaded: Int64 { 0 }
        func finish() throws -> RemoteEntry { RemoteEntry(fsID: 1, path: "/f", name: "f", size: 0, isDirectory: false) }
        func abort() {}
        func setLocalMtime(_ seconds: Int64?) {}
        func retarget(to path: String) {}
        var failure: NetdiskError? { nil }
    }

    @Test func exactlyOneOfTwoRacingReleasesIsTheLast() async throws {
        for _ in 0..<200 {
            let table = HandleTable()
            let writer = PathWriter(remotePath: "/f", session: NoSession(), pendingAtStart: true) { _, _ in NoSession() }
            let (_, first) = try table.attachWriteHandle(remotePath: "/f", opener: 1) { writer }
            let (_, second) = try table.attachWriteHandle(remotePath: "/f", opener: 2) { writer }
            async let a = Task.detached { table.releaseWriteHandle(first, of: writer) }.value
            async let b = Task.detached { table.releaseWriteHandle(second, of: writer) }.value
            let lasts = [await a, await b].filter { $0 }.count
            #expect(lasts == 1)
            #expect(table.forgetWriterIfUnused(writer) && table.writer(for: "/f") == nil)
        }
    }
}

/// A part's buffer must be let go as soon as its upload is done: the pipeline once kept every taken
/// job (and so its slice) in its queue until 64 had gone by, which is 1 GiB of RSS at SVIP's 16 MiB slices.
@Suite struct PipelineRetentionTests {
    final class Canary: @unchecked Sendable {}

    @Test func finishedPartsAreNotHeldByThePipeline() throws {
        let pipeline = OrderedPipeline(threads: 2, name: "retention-test", progress: ProgressCounters(mode: .streaming),
                                       upload: { _, _, _, _ throws(NetdiskError) in })
        let bytes = [UInt8](repeating: 1, count: 64)
        var canaries: [Weak] = []
        try bytes.withUnsafeBytes { raw in
            for partseq in 0..<40 {
                let canary = Canary()
                canaries.append(Weak(canary))
                try pipeline.submit(PipelineJob(partseq: partseq, bytes: PartBytes(base: raw.baseAddress, count: raw.count),
                                                knownMD5: "x", release: { _ in withExtendedLifetime(canary) {} }))
            }
            _ = try pipeline.finish()
        }
        // The pipeline is still alive here: nothing of a finished part may be.
        let alive = canaries.filter { $0.object != nil }.count
        #expect(alive == 0, "\(alive) finished parts still held by the pipeline")
        withExtendedLifetime(pipeline) {}
    }

    struct Weak { weak var object: Canary?; init(_ object: Canary) { self.object = object } }
}

/// Pools give idle buffers back to a contended budget, but not because of their own refusals.
@Suite struct BufferPoolContentionTests {
    @Test func aPoolIsNotShrunkByItsOwnRefusals() throws {
        let budget = MemoryBudget(bytes: 2 << 20)
        let pool = BufferPool(bufferSize: 1 << 20, limit: 4, budget: budget)
        guard case .buffer(let a) = try pool.tryAcquire(), case .buffer(let b) = try pool.tryAcquire() else {
            Issue.record("two buffers fit the budget"); return
        }
        guard case .budgetExhausted = try pool.tryAcquire() else { Issue.record("a third does not"); return }
        pool.release(a)
        // One file wanting more than the whole budget: unmapping its slice and mapping a fresh one gains nothing.
        #expect(budget.inUse == 2 << 20, "the pool gave a buffer back for its own refusal")
        guard case .buffer(let again) = try pool.tryAcquire() else { Issue.record("the idle buffer is reused"); return }
        #expect(again === a)
        // Someone else refused: the next buffer released goes back to the budget.
        let other = BufferPool(bufferSize: 1 << 20, limit: 4, budget: budget)
        _ = try other.tryAcquire(forceFirst: false)
        pool.release(b)
        #expect(budget.inUse == 1 << 20, "another pool waits: the buffer goes back to the budget")
        pool.release(again)
        pool.close()
        other.close()
    }

    /// A writer waiting at its pool's limit wakes when one of its buffers goes back to a contended
    /// budget: that memory is now the budget's, and the writer may take it. It slept until the
    /// pool's next release, which never came when its other buffers were its own window.
    @Test func aWriterAtThePoolsLimitWakesWhenABufferGoesToTheBudget() throws {
        let budget = MemoryBudget(bytes: 3 << 20)
        let pool = BufferPool(bufferSize: 1 << 20, limit: 2, budget: budget)
        let other = BufferPool(bufferSize: 1 << 20, limit: 4, budget: budget)
        guard case .buffer = try pool.tryAcquire(), case .buffer(let b) = try pool.tryAcquire(),
              case .buffer = try other.tryAcquire(forceFirst: false) else {
            Issue.record("three buffers fit the budget"); return
        }
        let woken = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = try? pool.acquire(budgetWait: nil)   // at the pool's limit: waits
            woken.signal()
        }
        Thread.sleep(forTimeInterval: 0.1)
        guard case .budgetExhausted = try other.tryAcquire(forceFirst: false) else { Issue.record("the budget is full"); return }
        pool.release(b)   // contended: back to the budget, not to the pool's free list
        #expect(budget.inUse == 2 << 20)
        let wasWoken = woken.wait(timeout: .now() + 3) == .success
        #expect(wasWoken, "the writer at the pool's limit was never woken")
        pool.cancel()     // lets a writer that was never woken go
        if !wasWoken { woken.wait() }
        other.close()
    }
}

/// Threads carry their names from their first instruction: Foundation's `Thread.name` set before
/// `start()` was dropped on Linux (and from inside, raced), so `top -H` showed no upload workers.
@Suite struct NamedThreadTests {
    @Test func aThreadSeesItsOwnNameAtOnceCutToFifteenBytes() {
        let seen = Mutex<String?>(nil)
        let done = DispatchSemaphore(value: 0)
        NamedThread.start("nd.a-name-of-twenty-bytes") {
            let comm = try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
            seen.withLock { $0 = comm?.trimmingCharacters(in: .newlines) }
            done.signal()
        }
        done.wait()
        #expect(seen.withLock { $0 } == "nd.a-name-of-tw")
        #expect(NamedThread.fit("nd.日本語のなまえ") == "nd.日本語の", "cut at a character, within 15 bytes")
    }
}

/// A file's upload workers start as its parts wait, up to the limit: a one-slice file (most of a
/// `tar -x`) started four threads, and the budget-sized limit would have made that eight.
@Suite struct PipelineWorkerTests {
    static func threads(named prefix: String) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            ((try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? "").hasPrefix(prefix)
        }.count
    }

    /// The waits run on a thread of their own, and the test only checks what they saw: a
    /// synchronous test holds one of the cooperative pool's threads (two on CI) and starved the
    /// emulator tests running beside it.
    @Test func workersStartOnlyWhenPartsWait() async throws {
        let outcome: Result<[(decided: Int, named: Int)], any Error> = await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: Result { try Self.watchLazyStart() }) }.start()
        }
        let seen = try outcome.get()
        #expect(seen[0] == (1, 1), "one part, one worker: \(seen[0])")
        #expect(seen[1] == (1, 1), "still one: \(seen[1])")
        #expect(seen[2] == (3, 3), "three parts uploading at once, three workers: \(seen[2])")
        #expect(seen[3] == (3, 3), "and no more: \(seen[3])")
        #expect(EngineOptions.uploadThreads(budget: 64 << 20, slice: 4 << 20) == 16)
        #expect(EngineOptions.uploadThreads(budget: 64 << 20, slice: 8 << 20) == 8)
        #expect(EngineOptions.uploadThreads(budget: 1 << 30, slice: 4 << 20) == 16)
        #expect(EngineOptions.uploadThreads(budget: 64 << 20, slice: 16 << 20) == 4)
        #expect(EngineOptions.uploadThreads(budget: 8 << 20, slice: 4 << 20) == 4)
    }

    /// Streams of unknown size take the smallest slice whose 2048 parts hold the tier's largest file,
    /// in steps of 4 MiB: SVIP's 12 MiB leaves the default budget five buffers where 16 MiB left four.
    @Test func streamSlicesAreTheSmallestThatHoldTheTiersLargestFile() {
        #expect(EngineOptions.smallestSlice(for: .normal) == 4 << 20)
        #expect(EngineOptions.smallestSlice(for: .vip) == 8 << 20)
        #expect(EngineOptions.smallestSlice(for: .svip) == 12 << 20)
        for tier in AccountTier.allCases {
            let slice = EngineOptions.smallestSlice(for: tier)
            #expect(Int64(slice) * Int64(BaiduProtocol.maxParts) >= tier.maxFileSize, "\(tier)")
            #expect(slice % (4 << 20) == 0 && slice <= tier.maxSliceSize, "\(tier)")
        }
        // Known sizes (put FILE): a 5 GiB file at SVIP still goes in 4 MiB parts, 17 GiB in 12 MiB.
        #expect(EngineOptions.smallestSlice(for: .svip, holding: 5 << 30) == 4 << 20)
        #expect(EngineOptions.smallestSlice(for: .svip, holding: 17 << 30) == 12 << 20)
        #expect(EngineOptions.forTier(.svip, sliceSize: EngineOptions.smallestSlice(for: .svip)).effectiveMaxFileSize
                == AccountTier.svip.maxFileSize, "the mount still takes SVIP's 20 GB files")
    }

    /// Workers decided (`workerCount`, counted at once) and worker threads seen by name in /proc
    /// (a worker shows its name once it has been scheduled): after one part, 0.3 s later, after
    /// three, and 0.3 s later.
    static func watchLazyStart() throws -> [(decided: Int, named: Int)] {
        let gate = DispatchSemaphore(value: 0)
        let pipeline = OrderedPipeline(threads: 8, name: "lazyw", progress: ProgressCounters(mode: .streaming),
                                       upload: { _, _, _, _ throws(NetdiskError) in gate.wait() })
        let bytes = [UInt8](repeating: 1, count: 64)
        var seen: [(decided: Int, named: Int)] = []
        try bytes.withUnsafeBytes { raw in
            func part(_ partseq: Int) -> PipelineJob {
                PipelineJob(partseq: partseq, bytes: PartBytes(base: raw.baseAddress, count: raw.count), knownMD5: "x", release: { _ in })
            }
            func named(reaching count: Int) -> Int {
                var named = threads(named: "lazyw")
                for _ in 0..<200 where named < count {
                    Thread.sleep(forTimeInterval: 0.05)
                    named = threads(named: "lazyw")
                }
                return named
            }
            try pipeline.submit(part(0))
            seen.append((pipeline.workerCount, named(reaching: 1)))
            Thread.sleep(forTimeInterval: 0.3)
            seen.append((pipeline.workerCount, threads(named: "lazyw")))
            try pipeline.submit(part(1))
            try pipeline.submit(part(2))
            seen.append((pipeline.workerCount, named(reaching: 3)))
            Thread.sleep(forTimeInterval: 0.3)
            seen.append((pipeline.workerCount, threads(named: "lazyw")))
            for _ in 0..<3 { gate.signal() }
            _ = try pipeline.finish()
        }
        return seen
    }
}

/// A removal stays hidden from listings until one asked for after it says the file is gone: a slow
/// refresh that began before the file was even made lacked it, and dropping the hide on its word let
/// the next listing, lagging behind the delete, show the removed file again (found by review).
@Suite struct MetadataCacheHideTests {
    @Test(.timeLimit(.minutes(1))) func aListingOlderThanARemovalDoesNotUnhideIt() async throws {
        let api = FakeNetdisk()
        let slow = Gate()
        let x = RemoteEntry(fsID: 77, path: "/d/x", name: "x", size: 1, isDirectory: false)
        api.setFaults { $0.listScript = [(slow, []), (nil, [x])] }
        let cache = MetadataCache(api: api, ttl: .milliseconds(1))
        // A refresh of /d starts on a slow cloud; meanwhile x is made and removed.
        async let first = onForeignThread { () throws(NetdiskError) in try cache.listing(of: "/d").entries.count }
        try await Task.sleep(for: .milliseconds(200))
        cache.didCreate(x)
        cache.didRemove("/d/x")
        slow.open()
        #expect(try await first == 0)
        try await Task.sleep(for: .milliseconds(10))   // past the TTL: the next look asks the cloud again
        let later = try await onForeignThread { () throws(NetdiskError) in try cache.listing(of: "/d").entries.keys.sorted() }
        #expect(later.isEmpty, "a removed file came back: \(later)")
    }
}

/// A long stream reuses the chunks its reader is done with: mapping and unmapping 1 MiB per MiB
/// read had the kernel zero every page afresh, 42% of the mount's CPU in a 4 GiB `cat`.
@Suite struct DownloadStreamChunkTests {
    @Test func aLongStreamMapsABoundedNumberOfChunks() {
        let budget = MemoryBudget(bytes: 64 << 20)
        let size = 64 << 20
        let stream = DownloadStream(start: 0, end: Int64(size), budget: budget, ahead: 8 << 20, behind: 4 << 20)
        let piece = [UInt8](repeating: 7, count: 256 << 10)
        var read = [UInt8](repeating: 0, count: 256 << 10)
        var offset = 0
        while offset < size {
            let answer = piece.withUnsafeBytes { stream.write($0) }
            #expect(answer == .accepted, "the reader keeps up: no pause")
            let got = read.withUnsafeMutableBytes { stream.read(into: $0, at: Int64(offset)) }
            #expect(got == piece.count)
            offset += piece.count
        }
        #expect(stream.chunksMapped <= 14, "64 MiB streamed through \(stream.chunksMapped) fresh chunks")
        stream.close()
        #expect(budget.inUse == 0, "every chunk, spares included, went back to the budget")
    }
}
