import Foundation
import Testing
@testable import Uploader

/// The streaming precreate runs beside the writer: a long round trip no longer stops the writes
/// that fill the window, and every byte still goes out in order once it answers.
@Suite struct StreamOpeningTests {
    @Test(.timeLimit(.minutes(1))) func writesFillTheWindowWhileThePrecreateRuns() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateDelay = 3 }
        let options = testOptions(threads: 3, window: 2)
        let session = FileWriteSession(api: api, remotePath: "/slow-precreate", mode: .streaming, options: options,
                                       budget: MemoryBudget(bytes: 64 * testSlice), logger: testLogger)
        let data = SplitMix.bytes(9 * testSlice + 123, seed: 31)
        let window = 4 * testSlice   // within the window as it stands while the precreate runs (2 + 3 slices)
        let seconds = try await onForeignThread { () throws(NetdiskError) -> Double in
            let started = Date()
            try writeAll(session, Array(data[0..<window]), chunk: 10_000)
            return Date().timeIntervalSince(started)
        }
        #expect(seconds < 2.5, "writes waited \(seconds) s for a 3 s precreate")
        #expect(api.partsReceived == 0, "nothing is sent before the precreate answers")
        let entry = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            try writeAll(session, data, from: window)
            #expect(!session.isCached, "a slow precreate is no reason to take the cached path")
            return try session.finish()
        }
        #expect(entry.size == Int64(data.count))
        #expect(api.content("/slow-precreate") == data)
        #expect(api.streamingPrecreates == 1 && api.knownContentPrecreates == 0)
        #expect(api.partsReceived == 10)
    }

    /// Parts that filled while the precreate ran go when it answers, with no further write: a
    /// writer that paused (or has written everything and not yet closed) left them in memory until
    /// its next write or its close.
    @Test(.timeLimit(.minutes(1))) func partsThatWaitedForThePrecreateGoWhenItAnswers() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateDelay = 0.5 }
        let session = FileWriteSession(api: api, remotePath: "/paused", mode: .streaming, options: testOptions(threads: 3, window: 2),
                                       budget: MemoryBudget(bytes: 64 * testSlice), logger: testLogger)
        let data = SplitMix.bytes(3 * testSlice + 7, seed: 34)
        try await onForeignThread { () throws(NetdiskError) in try writeAll(session, data) }
        #expect(api.partsReceived == 0, "the precreate is still running")
        // The writer pauses: no write, no close. Polls end early; the bound is for CI.
        for _ in 0..<300 where api.partsReceived < 3 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(api.partsReceived == 3, "the three full parts went once the precreate answered")
        _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in try session.finish() }
        #expect(api.content("/paused") == data)
        #expect(api.partsReceived == 4)
    }

    /// A file that fills its first part and is closed while the precreate runs still streams:
    /// the commit waits for the precreate instead of uploading the window afresh.
    @Test(.timeLimit(.minutes(1))) func aCloseDuringThePrecreateWaitsForIt() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateDelay = 0.5 }
        let session = FileWriteSession(api: api, remotePath: "/two-parts", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 * testSlice), logger: testLogger)
        let data = SplitMix.bytes(testSlice + 5, seed: 32)
        _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            try writeAll(session, data)
            return try session.finish()
        }
        #expect(api.content("/two-parts") == data)
        #expect(api.streamingPrecreates == 1 && api.knownContentPrecreates == 0, "the stream's precreate, not a second upload")
        #expect(api.partsReceived == 2)
    }

    /// A refusal that comes while the writer already holds every buffer the budget has: the writer
    /// takes the cached path at once, through `write` and through `append` (`put -`), instead of
    /// waiting for memory that no upload will free.
    @Test(.timeLimit(.minutes(1))) func aRefusalWhileTheBudgetIsFullTakesTheCachedPath() async throws {
        for viaAppend in [false, true] {
            let api = FakeNetdisk()
            api.setFaults { $0.refuseStreamingPrecreate = true; $0.streamingPrecreateDelay = 0.3 }
            let session = FileWriteSession(api: api, remotePath: "/refused", mode: .streaming, options: testOptions(threads: 3),
                                           budget: MemoryBudget(bytes: 2 * testSlice), logger: testLogger)
            let data = SplitMix.bytes(5 * testSlice + 17, seed: 33)
            // Timed from the refusal to the end of the writes: before, the write that found the
            // budget full then waited `budgetWait` (2 s) for memory no upload would free, and
            // `append` waited for ever. (How long the precreate itself takes depends on the load.)
            let seconds = try await onForeignThread { () throws(NetdiskError) -> Double in
                if viaAppend {
                    var offset = 0
                    while offset < data.count {
                        let n = try session.append(limit: 10_000) { target in
                            let n = min(target.count, data.count - offset)
                            data.withUnsafeBytes { target.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
                            return n
                        }
                        offset += n
                    }
                } else {
                    try writeAll(session, data)
                }
                return Date().timeIntervalSince(api.streamingPrecreateAnswered ?? .distantFuture)
            }
            #expect(seconds < FileWriteSession.budgetWait, "no wait on the full budget after the refusal: \(seconds) s (via append: \(viaAppend))")
            #expect(session.isCached, "refused: the cached path (via append: \(viaAppend))")
            _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in try session.finish() }
            #expect(api.content("/refused") == data, "via append: \(viaAppend)")
        }
    }

    /// A precreate that fails (the quota is full) fails the file for fsync too, before any later
    /// write asks: `failure` is what fsync reports.
    @Test(.timeLimit(.minutes(1))) func aFailedPrecreateIsTheSessionsFailure() async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateError = .quotaExceeded; $0.streamingPrecreateDelay = 0.2 }
        let session = FileWriteSession(api: api, remotePath: "/full", mode: .streaming, options: testOptions(),
                                       budget: MemoryBudget(bytes: 64 * testSlice), logger: testLogger)
        let data = SplitMix.bytes(testSlice + 1, seed: 34)
        _ = try await onForeignThread { () throws(NetdiskError) -> Int in
            try writeAll(session, data)
            return 0
        }
        let deadline = Date().addingTimeInterval(5)
        while session.failure == nil && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if case .quotaExceeded? = session.failure {} else { Issue.record("failure: \(String(describing: session.failure))") }
        let closed = try await onForeignThread { () throws(NetdiskError) -> Bool in
            do throws(NetdiskError) { _ = try session.finish(); return true } catch { return false }
        }
        #expect(!closed, "the close reports it too")
        #expect(api.content("/full") == nil)
    }

    /// Writes that overwrite full parts still in the window, as a write that fills a hole and runs
    /// on does: no part a write is about to change may be sent under it. Sent mid-copy (a hole
    /// filled, then the next, already full part went too) or by the wait for memory (the precreate
    /// answered and the full parts went), the rest of the write went to a fresh buffer that was
    /// never sent: the file was committed with the old bytes, and no error.
    @Test(.timeLimit(.minutes(1)), arguments: [0.0, 0.3])
    func aWriteOverFullPartsInTheWindowLosesNothing(precreateDelay: Double) async throws {
        let api = FakeNetdisk()
        api.setFaults { $0.streamingPrecreateDelay = precreateDelay }
        // Two slices of budget: the write into part 2 must wait for memory.
        let session = FileWriteSession(api: api, remotePath: "/overwrite", mode: .streaming, options: testOptions(threads: 3),
                                       budget: MemoryBudget(bytes: 2 * testSlice), logger: testLogger)
        var reference = SplitMix.bytes(4 * testSlice, seed: 35)
        let patch = SplitMix.bytes(300, seed: 36)
        let ref = reference
        _ = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            if precreateDelay == 0 {
                // Part 1 first (inside the window), then part 0 but for its last 100 bytes, then one
                // write over the hole and on into the (full) part 1.
                try session.write(ref[testSlice..<2 * testSlice], at: Int64(testSlice))
                try session.write(ref[0..<testSlice - 100], at: 0)
                try session.write(patch[...], at: Int64(testSlice - 100))
            } else {
                // Parts 0 and 1 full while the precreate runs, then one write over part 1's end and
                // into part 2, for which the budget has no room.
                try session.write(ref[0..<2 * testSlice], at: 0)
                try session.write(patch[...], at: Int64(2 * testSlice - 100))
            }
            let from = precreateDelay == 0 ? 2 * testSlice : 2 * testSlice + 200
            try writeAll(session, ref, from: from)
            #expect(!session.isCached, "streamed (precreate delay \(precreateDelay))")
            return try session.finish()
        }
        let at = precreateDelay == 0 ? testSlice - 100 : 2 * testSlice - 100
        reference.replaceSubrange(at..<at + 300, with: patch)
        #expect(api.content("/overwrite") == reference, "precreate delay \(precreateDelay)")
    }
}
