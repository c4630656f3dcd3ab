import Foundation
import Logging
import NetdiskEmulator
import Testing
@testable import Uploader

private let slice = 4 << 20
private let sizes = [0, 1, slice - 1, slice, slice + 1, 3 * slice + 17]

/// Streams `content` through a FileWriteSession from a dedicated thread, in 1 MiB writes.
private func stream(_ content: GeneratedContent, to path: String, harness: EmulatorHarness,
                    options: EngineOptions? = nil, budget: Int = 256 << 20) async throws -> RemoteEntry {
    let session = FileWriteSession(api: harness.client, remotePath: path, mode: .streaming,
                                   options: options ?? harness.options(), budget: MemoryBudget(bytes: budget),
                                   logger: testLogger)
    return try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
        let result = Result { () throws(NetdiskError) in
            try content.forEachChunkTyped { (chunk: ArraySlice<UInt8>, offset: Int) throws(NetdiskError) in
                try session.write(chunk, at: Int64(offset))
            }
        }
        if case .failure(let error) = result { session.abort(); throw error }
        return try session.finish()
    }
}

private func upload(file: String, to path: String, harness: EmulatorHarness, journal: UploadJournal? = nil)
    async throws -> RemoteEntry {
    let upload = CachedUpload(api: harness.client, options: harness.options(), budget: MemoryBudget(bytes: 256 << 20),
                              journal: journal, progress: ProgressCounters(mode: .cached), logger: testLogger)
    return try await onForeignThread { () throws(NetdiskError) in
        let source = try LocalFileSource(path: file)
        return try upload.upload(source, to: path, identity: source.identity)
    }
}

extension GeneratedContent {
    /// typed-throws variant used by the streaming helper.
    func forEachChunkTyped(_ body: (ArraySlice<UInt8>, Int) throws(NetdiskError) -> Void) throws(NetdiskError) {
        let result: Result<Void, NetdiskError> = {
            var failure: NetdiskError?
            forEachChunk(1 << 20) { slice, offset in
                guard failure == nil else { return }
                do throws(NetdiskError) { try body(slice, offset) } catch { failure = error }
            }
            return failure.map { .failure($0) } ?? .success(())
        }()
        try result.get()
    }
}

@Suite("Engine against the emulator")
struct EmulatorEndToEndTests {
    @Test(arguments: sizes)
    func streamingRoundTripIsBitExact(size: Int) async throws {
        let harness = try await EmulatorHarness.start()
        let content = GeneratedContent(size: size, seed: UInt64(size) &+ 1000)
        let entry = try await stream(content, to: "/apps/netdiskfs/s\(size).bin", harness: harness)
        #expect(entry.size == Int64(size))
        let files = try await harness.files()
        #expect(files["/apps/netdiskfs/s\(size).bin"]?.md5 == content.md5)
        #expect(files["/apps/netdiskfs/s\(size).bin"]?.size == Int64(size))
        #expect(files.keys.filter { $0.contains(".netdiskfs-staging/") }.isEmpty)
        await harness.stop()
    }

    @Test(arguments: sizes)
    func cachedRoundTripIsBitExact(size: Int) async throws {
        let harness = try await EmulatorHarness.start()
        let content = GeneratedContent(size: size, seed: UInt64(size) &+ 2000)
        let file = try content.writeFile()
        defer { unlink(file) }
        let entry = try await upload(file: file, to: "/apps/netdiskfs/c\(size).bin", harness: harness)
        #expect(entry.size == Int64(size))
        #expect(try await harness.files()["/apps/netdiskfs/c\(size).bin"]?.md5 == content.md5)
        await harness.stop()
    }

    @Test func overOneGiBOnBothPaths() async throws {
        let harness = try await EmulatorHarness.start()
        let size = (1 << 30) + 3 * (1 << 20) + 5
        let streamed = GeneratedContent(size: size, seed: 77)
        _ = try await stream(streamed, to: "/apps/netdiskfs/big-stream.bin", harness: harness)
        let cached = GeneratedContent(size: size, seed: 78)
        let file = try cached.writeFile()
        defer { unlink(file) }
        _ = try await upload(file: file, to: "/apps/netdiskfs/big-cached.bin", harness: harness)
        let files = try await harness.files()
        #expect(files["/apps/netdiskfs/big-stream.bin"]?.md5 == streamed.md5)
        #expect(files["/apps/netdiskfs/big-cached.bin"]?.md5 == cached.md5)
        #expect(files["/apps/netdiskfs/big-cached.bin"]?.size == Int64(size))
        await harness.stop()
    }

    @Test func tenPercentPartFailuresStillBitExact() async throws {
        // 10% at random, plus one of each kind on fixed calls so a lucky run still injects faults.
        let harness = try await EmulatorHarness.start(
            faults: "superfile2:status=500:p=0.05,superfile2:reset:p=0.05,superfile2:status=500:n=3,superfile2:reset:n=7")
        let streamed = GeneratedContent(size: 12 * slice + 99, seed: 5)
        _ = try await stream(streamed, to: "/apps/netdiskfs/flaky-s.bin", harness: harness)
        let cached = GeneratedContent(size: 12 * slice + 98, seed: 6)
        let file = try cached.writeFile()
        defer { unlink(file) }
        _ = try await upload(file: file, to: "/apps/netdiskfs/flaky-c.bin", harness: harness)
        let files = try await harness.files()
        #expect(files["/apps/netdiskfs/flaky-s.bin"]?.md5 == streamed.md5)
        #expect(files["/apps/netdiskfs/flaky-c.bin"]?.md5 == cached.md5)
        let fired = try await harness.stats()["faults_fired"] as? [String: Int]
        #expect((fired?["superfile2"] ?? 0) > 0, "faults were actually injected")
        await harness.stop()
    }

    @Test func md5MismatchLeadsToAResend() async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:badmd5:n=2")
        let content = GeneratedContent(size: 3 * slice + 17, seed: 9)
        _ = try await stream(content, to: "/apps/netdiskfs/badmd5.bin", harness: harness)
        #expect(try await harness.files()["/apps/netdiskfs/badmd5.bin"]?.md5 == content.md5)
        #expect(try await harness.partsReceived() == 5, "4 parts plus one resend of the corrupted part")
        await harness.stop()
    }

    /// An uploadid that expires mid-stream loses its parts on the server, not the file: every part
    /// sent is still in memory (the head is kept for readers, the rest failed and was kept), so the
    /// stream goes on under a fresh uploadid. Before, the file failed with EIO.
    /// On `documented`, superfile2 says "31299 Expried Time Not Match" for it: read as expired too.
    @Test(arguments: ["default", "documented"]) func uploadIDExpiryMidStreamSendsItsPartsAgain(profile: String) async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:expire-upload:n=3", profile: EmulatorProfile.named(profile)!)
        let content = GeneratedContent(size: 8 * slice, seed: 10)
        // One worker: parts are answered in order, so the two acknowledged before the expiry are
        // the head (kept for readers). With four, the second answer may be part 2, let go at once.
        _ = try await stream(content, to: "/apps/netdiskfs/expired.bin", harness: harness, options: harness.options(threads: 1))
        let files = try await harness.files()
        #expect(files["/apps/netdiskfs/expired.bin"]?.md5 == content.md5)
        #expect(files.keys.filter { $0.contains(".netdiskfs-staging/") }.isEmpty)
        await harness.stop()
    }

    /// Where a part the server acknowledged under the expired uploadid was already let go (past the
    /// head and the tail), its bytes are nowhere: the file fails and nothing is committed.
    @Test(arguments: ["default", "documented"]) func uploadIDExpiryAfterPartsWereLetGoCommitsNothing(profile: String) async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:expire-upload:n=9", profile: EmulatorProfile.named(profile)!)
        let content = GeneratedContent(size: 14 * slice, seed: 10)
        var failure: NetdiskError?
        // One worker: the parts are answered in order, so parts 2 to 7 are acknowledged, and let
        // go once the tail (the latest 3 sent) moved past them, before part 8 meets the expiry.
        do { _ = try await stream(content, to: "/apps/netdiskfs/expired.bin", harness: harness, options: harness.options(threads: 1)) }
        catch let error as NetdiskError { failure = error }
        #expect(failure == .uploadExpired || failure == .unknownUploadID)
        #expect(failure.map { "\($0)" }?.contains("31363") == true || failure.map { "\($0)" }?.contains("31355") == true)
        let files = try await harness.files()
        #expect(files["/apps/netdiskfs/expired.bin"] == nil)
        #expect(files.keys.filter { $0.contains(".netdiskfs-staging/") }.isEmpty)
        await harness.stop()
    }

    /// fsync reports that failure before close: the uploadid ended and acknowledged parts were let
    /// go, so no restart can save the file. `failure` once kept quiet about any failure that ends
    /// only the uploadid, and a program that checks fsync but not close lost the file unwarned.
    @Test(.timeLimit(.minutes(4))) func aStreamThatCannotRestartReportsItsFailureBeforeClose() async throws {
        // The ninth part's answer, the expiry, comes 2 s late: by then the program has written every
        // byte (16 workers, so the pool holds all 14 slices), and the parts answered before it are
        // acknowledged and let go (past the head and the tail). Only fsync, or close, can tell it.
        let harness = try await EmulatorHarness.start(faults: "superfile2:delay=2s:n=9,superfile2:expire-upload:n=9")
        let session = FileWriteSession(api: harness.client, remotePath: "/apps/netdiskfs/doomed.bin", mode: .streaming,
                                       options: harness.options(threads: 16), budget: MemoryBudget(bytes: 256 << 20), logger: testLogger)
        let content = GeneratedContent(size: 14 * slice, seed: 17)
        var data = [UInt8]()
        content.forEachChunk(1 << 20) { chunk, _ in data += chunk }
        let bytes = data
        try await onForeignThread { () throws(NetdiskError) in try writeAll(session, bytes, chunk: 1 << 20) }
        // Polls end early; the bound is for a loaded machine, where the emulator's delay (on the
        // cooperative pool, which other tests starve) took many times its 2 s. By the clock, not
        // by count: there, 1200 sleeps of 50 ms outlasted the test's 2 minutes (CI's full suite).
        var failure = session.failure
        let polling = ContinuousClock.now
        while failure == nil, ContinuousClock.now - polling < .seconds(150) {
            try await Task.sleep(for: .milliseconds(50))
            failure = session.failure
        }
        #expect(failure == .uploadExpired || failure == .unknownUploadID, "fsync before close saw \(String(describing: failure))")
        await #expect(throws: NetdiskError.self) {
            try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in try session.finish() }
        }
        #expect(try await harness.files()["/apps/netdiskfs/doomed.bin"] == nil)
        await harness.stop()
    }

    /// A stream's part that gives up on its host (every attempt cut off, as when an upload host
    /// restarted and its port is gone) goes on under a fresh uploadid on a freshly located host
    /// (chaos `emulator-restart`: the streamed file got EIO).
    @Test func aStreamsPartThatGivesUpOnItsHostGoesOnElsewhere() async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:reset:count=4", retryPolicy: .none)
        let content = GeneratedContent(size: 2 * slice + 5, seed: 14)
        _ = try await stream(content, to: "/apps/netdiskfs/rehosted-s.bin", harness: harness, options: harness.options(threads: 1))
        #expect(try await harness.files()["/apps/netdiskfs/rehosted-s.bin"]?.md5 == content.md5)
        let calls = try await harness.calls()
        #expect(calls["locateupload"] == 2, "the host that gave up was forgotten and a new one located: \(calls)")
        #expect(calls["superfile2"] == 7, "4 cut-off attempts of part 0, then its 3 parts again: \(calls)")
        await harness.stop()
    }

    /// The failed parts are kept, so their buffers no longer come back to wake a writer waiting for
    /// memory: the failure itself must wake it, or a small budget would hang the write for ever.
    @Test(.timeLimit(.minutes(1))) func aWriterWaitingForMemoryIsWokenToRestart() async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:expire-upload:n=1")
        let content = GeneratedContent(size: 6 * slice + 9, seed: 15)
        _ = try await stream(content, to: "/apps/netdiskfs/woken.bin", harness: harness, budget: 2 * slice)
        #expect(try await harness.files()["/apps/netdiskfs/woken.bin"]?.md5 == content.md5)
        await harness.stop()
    }

    @Test(arguments: ["default", "documented"]) func uploadIDExpiryOnTheCachedPathRecovers(profile: String) async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:expire-upload:n=3", profile: EmulatorProfile.named(profile)!)
        let content = GeneratedContent(size: 8 * slice + 1, seed: 11)
        let file = try content.writeFile()
        defer { unlink(file) }
        _ = try await upload(file: file, to: "/apps/netdiskfs/recovered.bin", harness: harness)
        #expect(try await harness.files()["/apps/netdiskfs/recovered.bin"]?.md5 == content.md5)
        await harness.stop()
    }

    /// A part that gives up on its host (every attempt cut off, as when an upload host restarted
    /// and its port is gone) starts a fresh upload on a freshly located host: the bytes are all in
    /// the source, so it costs time, never the file (chaos `emulator-restart`: small files got EIO).
    @Test func aPartThatGivesUpOnItsHostStartsAFreshUpload() async throws {
        // No client-level retries: each of the part's 4 attempts is one call, and all 4 are cut off.
        let harness = try await EmulatorHarness.start(faults: "superfile2:reset:count=4", retryPolicy: .none)
        let content = GeneratedContent(size: slice / 2, seed: 12)
        let file = try content.writeFile()
        defer { unlink(file) }
        _ = try await upload(file: file, to: "/apps/netdiskfs/rehosted.bin", harness: harness)
        #expect(try await harness.files()["/apps/netdiskfs/rehosted.bin"]?.md5 == content.md5)
        let calls = try await harness.calls()
        #expect(calls["precreate"] == 2, "one fresh upload after the part gave up: \(calls)")
        #expect(calls["locateupload"] == 2, "the host that gave up was forgotten and a new one located: \(calls)")
        #expect(calls["superfile2"] == 5, "4 cut-off attempts, then the fresh upload's part: \(calls)")
        await harness.stop()
    }

    @Test func secondIdenticalPutIsARapidHitWithZeroParts() async throws {
        let harness = try await EmulatorHarness.start()
        let content = GeneratedContent(size: 5 * slice + 3, seed: 12)
        let file = try content.writeFile()
        defer { unlink(file) }
        _ = try await upload(file: file, to: "/apps/netdiskfs/first.bin", harness: harness)
        let before = try await harness.partsReceived()
        _ = try await upload(file: file, to: "/apps/netdiskfs/second.bin", harness: harness)
        #expect(try await harness.partsReceived() == before)
        #expect(try await harness.files()["/apps/netdiskfs/second.bin"]?.md5 == content.md5)
        await harness.stop()
    }

    @Test func writeBehindSentDataFallsBackExactlyAgainstAReferenceFile() async throws {
        let harness = try await EmulatorHarness.start()
        let content = GeneratedContent(size: 5 * slice + 777, seed: 13)
        // The reference: what a local file would hold after the same writes.
        var reference = [UInt8]()
        content.forEachChunk(1 << 20) { chunk, _ in reference += chunk }
        let header = [UInt8](repeating: 0xEE, count: 4096)
        let index = [UInt8](repeating: 0x5A, count: 1000)
        // A budget of two slices: the write into the third waits for memory, so it first waits for
        // the precreate and sends what it can. With room to spare, a write at `slice + 100` could
        // still land in the window while the precreate runs, and no fallback would happen.
        let session = FileWriteSession(api: harness.client, remotePath: "/apps/netdiskfs/muxed.mp4", mode: .streaming,
                                       options: harness.options(), budget: MemoryBudget(bytes: 2 * slice), logger: testLogger)
        let ref = reference
        let entry = try await onForeignThread { () throws(NetdiskError) -> RemoteEntry in
            var offset = 0
            while offset < ref.count {
                let n = min(1 << 20, ref.count - offset)
                try session.write(ref[offset..<offset + n], at: Int64(offset))
                offset += n
                if offset == 3 * slice {
                    try session.write(index[...], at: Int64(slice + 100))   // behind sent data: fallback
                }
            }
            try session.write(header[...], at: 0)
            #expect(session.isCached)
            return try session.finish()
        }
        reference.replaceSubrange((slice + 100)..<(slice + 1100), with: index)
        reference.replaceSubrange(0..<4096, with: header)
        var hasher = MD5Hasher()
        reference.withUnsafeBytes { hasher.update($0) }
        let expected = hasher.finalizeHex()
        #expect(entry.size == Int64(reference.count))
        let files = try await harness.files()
        #expect(files["/apps/netdiskfs/muxed.mp4"]?.md5 == expected)
        #expect(files.keys.filter { $0.contains(".netdiskfs-staging/") }.isEmpty, "staging file deleted")
        await harness.stop()
    }

    /// Parts kept for a restart must not outlive the stream: an unlink while a part is still on
    /// the wire to a host that then fails gives every byte of the budget back (the part's late
    /// failure once marked it as kept again, for a restart that would never come).
    @Test(.timeLimit(.minutes(3))) func anAbortWhileAPartFailsOnItsHostGivesTheBudgetBack() async throws {
        let harness = try await EmulatorHarness.start(faults: "superfile2:delay=400ms,superfile2:reset", retryPolicy: .none)
        let budget = MemoryBudget(bytes: 64 << 20)
        let session = FileWriteSession(api: harness.client, remotePath: "/apps/netdiskfs/dropped.bin", mode: .streaming,
                                       options: harness.options(threads: 1), budget: budget, logger: testLogger)
        let content = GeneratedContent(size: 2 * slice + 5, seed: 16)
        var data = [UInt8]()
        content.forEachChunk(1 << 20) { chunk, _ in data += chunk }
        let bytes = data
        try await onForeignThread { () throws(NetdiskError) in try writeAll(session, bytes, chunk: 1 << 20) }
        func partsSent() async throws -> Int { try await harness.calls()["superfile2"] ?? 0 }
        // A `for ... where` loop would ask the emulator all 100 times: under the full suite's load
        // that alone outlasted the time limit.
        for _ in 0..<100 {
            if try await partsSent() > 0 { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        // Part 0 is on the wire; each of its attempts ends in a reset 0.4 s later. From a thread of
        // its own, as a FUSE unlink would: abort takes the session lock.
        try await onForeignThread { session.abort() }
        // The attempt on the wire ends within its deadline (30 s + 4 MiB at 64 KiB/s = 94 s); alone
        // it takes 0.4 s, but in the full suite the in-process emulator, starved, once took 19 s.
        let aborted = ContinuousClock.now
        while budget.inUse != 0, ContinuousClock.now - aborted < .seconds(100) { try await Task.sleep(for: .milliseconds(25)) }
        #expect(budget.inUse == 0, "\(budget.inUse) bytes of the budget never came back")
        // The part stops at the attempt on the wire: the others (4 in all, with backoff) were for
        // an upload nobody will commit.
        #expect(try await partsSent() <= 2, "the part kept trying after the abort")
        #expect(try await harness.files()["/apps/netdiskfs/dropped.bin"] == nil)
        await harness.stop()
    }

    @Test func abortLeavesNothing() async throws {
        let harness = try await EmulatorHarness.start()
        let session = FileWriteSession(api: harness.client, remotePath: "/apps/netdiskfs/aborted.bin", mode: .streaming,
                                       options: harness.options(), budget: MemoryBudget(bytes: 256 << 20), logger: testLogger)
        // More than the pool holds (threads + 1 + the kept head), so parts must go out before it returns.
        let content = GeneratedContent(size: 16 * slice, seed: 14)
        var data = [UInt8]()
        content.forEachChunk(1 << 20) { chunk, _ in data += chunk }
        let bytes = data
        try await onForeignThread { () throws(NetdiskError) in try writeAll(session, bytes, chunk: 1 << 20) }
        session.abort()
        #expect(try await harness.partsReceived() > 0)
        let files = try await harness.files()
        #expect(files.isEmpty, "nothing committed anywhere: \(files.keys.sorted())")
        await harness.stop()
    }

    @Test func crossingTheTierMaximumFailsBeforeSending() async throws {
        let harness = try await EmulatorHarness.start()
        let tier = try await harness.client.accountInfo().tier
        let options = EngineOptions.forTier(tier, cacheDirectory: NSTemporaryDirectory() + "engine-e2e-" + UUID().uuidString)
        #expect(options.effectiveMaxFileSize == 4_000_000_000)
        let session = FileWriteSession(api: harness.client, remotePath: "/apps/netdiskfs/huge.bin", mode: .streaming,
                                       options: options, budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let byte: [UInt8] = [1]
        let error: NetdiskError? = try await onForeignThread { () -> NetdiskError? in
            do throws(NetdiskError) { try session.write(byte[...], at: 4_000_000_000); return nil } catch { return error }
        }
        #expect(error == .fileTooLarge(limit: 4_000_000_000))
        #expect(try await harness.partsReceived() == 0)
        session.abort()
        #expect(try await harness.files().isEmpty)
        await harness.stop()
    }

    @Test func emptyFileFromATouchIsCommitted() async throws {
        let harness = try await EmulatorHarness.start()
        let session = FileWriteSession(api: harness.client, remotePath: "/apps/netdiskfs/empty", mode: .streaming,
                                       options: harness.options(), budget: MemoryBudget(bytes: 64 << 20), logger: testLogger)
        let entry = try await onForeignThread { () throws(NetdiskError) in try session.finish() }
        #expect(entry.size == 0)
        #expect(try await harness.files()["/apps/netdiskfs/empty"]?.md5 == BaiduProtocol.emptyMD5)
        await harness.stop()
    }
}

@Suite("get against the emulator")
struct RangedDownloadTests {
    @Test func rangedDownloadIsBitExactAndRefetchesAnExpiredDlink() async throws {
        // The 2nd and 3rd download calls answer 31360 (dlink expired): the dlink is fetched again.
        let harness = try await EmulatorHarness.start()
        let content = GeneratedContent(size: 5 * slice + 12345, seed: 42)
        let entry = try await stream(content, to: "/apps/netdiskfs/get.bin", harness: harness)
        try await harness.setFaults("download:errno=31360:n=2:count=2")
        let target = NSTemporaryDirectory() + "engine-get-" + UUID().uuidString
        defer { unlink(target) }
        let download = RangedDownload(api: harness.client, connections: 3, chunkSize: 1 << 20, logger: testLogger)
        let client = harness.client
        let progress = ProgressCounters(mode: .streaming)
        try await onForeignThread { () throws(NetdiskError) in
            let found = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in
                try await lookUpRemote("/apps/netdiskfs/get.bin", api: client)
            }
            #expect(found.fsID == entry.fsID)
            try download.run(found, into: try FileSink(path: target, size: found.size), progress: progress)
        }
        let local = try LocalFileSource(path: target)
        let digest = try CachedUpload(api: harness.client, options: harness.options(), budget: MemoryBudget(bytes: 64 << 20),
                                      progress: ProgressCounters(mode: .cached), logger: testLogger).hash(local)
        #expect(digest.contentMD5 == content.md5)
        let calls = try await harness.calls()
        #expect((calls["filemetas"] ?? 0) >= 2, "the expired dlink was fetched again")
        let fired = try await harness.stats()["faults_fired"] as? [String: Int] ?? [:]
        #expect(fired["download"] == 2, "the 31360 answers were injected")
        await harness.stop()
    }
}

@Suite("staging sweep")
struct StagingSweepTests {
    @Test func abandonedStagingFilesAreDeletedAndFreshOnesKept() async throws {
        let harness = try await EmulatorHarness.start()
        let staging = "/apps/netdiskfs/.netdiskfs-staging"
        let content = GeneratedContent(size: slice + 5, seed: 3)
        _ = try await stream(content, to: staging + "/abandoned", harness: harness)
        _ = try await stream(GeneratedContent(size: 10, seed: 4), to: "/apps/netdiskfs/keep.txt", harness: harness)
        // Nothing is older than a day yet.
        #expect(await StagingSweeper.sweep(api: harness.client, directory: staging, logger: testLogger) == 0)
        // Seen from two days later, the staging file is abandoned; files outside staging are untouched.
        let later = Int64(Date().timeIntervalSince1970) + 2 * 86_400
        #expect(await StagingSweeper.sweep(api: harness.client, directory: staging, now: later, logger: testLogger) == 1)
        let files = try await harness.files()
        #expect(files[staging + "/abandoned"] == nil)
        #expect(files["/apps/netdiskfs/keep.txt"] != nil)
        #expect(await StagingSweeper.sweep(api: harness.client, directory: "/apps/none", logger: testLogger) == 0)
        await harness.stop()
    }
}

/// Resume with a journaled upload host that is wrong or gone: the upload still lands exactly.
@Suite("journaled upload hosts")
struct JournaledHostTests {
    /// An emulator, a source file of five slices and a bit, and an empty resume journal.
    private struct Fixture {
        let harness: EmulatorHarness
        let content: GeneratedContent
        let file: String
        let journalPath: String
        let journal: UploadJournal
        let options: EngineOptions

        static func make(seed: UInt64) async throws -> Fixture {
            let harness = try await EmulatorHarness.start()
            let content = GeneratedContent(size: 5 * (4 << 20) + 11, seed: seed)
            let options = harness.options()
            let journalPath = options.cacheDirectory + "-journal.sqlite"
            return Fixture(harness: harness, content: content, file: try content.writeFile(), journalPath: journalPath,
                           journal: try UploadJournal(path: journalPath), options: options)
        }

        func removeFiles() {
            unlink(file)
            unlink(journalPath)
        }

        /// A journal record for the file at `path` as a killed run would have left it: the uploadid
        /// the server opened, parts `done` sent (to the host the client pinned) and acknowledged, and
        /// the host `journaledHost` picks, given that pinned host, in the record.
        func journalRecord(path: String, done: [Int], journaledHost: (String) -> String) async throws -> String {
            let source = try LocalFileSource(path: file)
            let hasher = CachedUpload(api: harness.client, options: options, budget: MemoryBudget(bytes: 64 << 20),
                                      progress: ProgressCounters(mode: .cached), logger: testLogger)
            let digest = try await onForeignThread { () throws(NetdiskError) in try hasher.hash(source) }
            let opened = try await harness.client.precreate(path: path, size: digest.size, blockList: digest.blockList,
                                                            contentMD5: nil, sliceMD5: nil, localMtime: nil, policy: .overwrite)
            let uploadID = try #require(opened.uploadID)
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
            var md5s: [Int: String] = [:]
            for partseq in done {
                let start = partseq * options.sliceSize
                let count = min(options.sliceSize, bytes.count - start)
                let part = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
                defer { part.deallocate() }
                bytes[start..<start + count].withUnsafeBytes { part.copyMemory(from: $0) }
                md5s[partseq] = try await harness.client.uploadPart(path: path, uploadID: uploadID, partseq: partseq,
                                                                    bytes: PartBytes(base: UnsafeRawPointer(part.baseAddress), count: count))
            }
            let pinned = try await harness.client.uploadHost(path: path, uploadID: uploadID)
            let record = try journal.begin(remotePath: path, source: source.identity, sliceSize: options.sliceSize,
                                           uploadID: uploadID, host: journaledHost(pinned), blockList: digest.blockList,
                                           contentMD5: digest.contentMD5, sliceMD5: digest.sliceMD5)
            for (partseq, md5) in md5s { journal.markDone(record: record.id, partseq: partseq, md5: md5) }
            return uploadID
        }
    }

    @Test func aJournaledHostThatNoLongerAnswersStartsAfresh() async throws {
        let f = try await Fixture.make(seed: 41)
        defer { f.removeFiles() }
        let path = "/apps/netdiskfs/gone.bin"
        // Nothing listens on port 9 (discard) here: connections are refused.
        _ = try await f.journalRecord(path: path, done: []) { _ in "http://127.0.0.1:9" }
        _ = try await upload(file: f.file, to: path, harness: f.harness, journal: f.journal)
        #expect(try await f.harness.files()[path]?.md5 == f.content.md5)
        let source = try LocalFileSource(path: f.file)
        #expect(f.journal.find(remotePath: path, source: source.identity, sliceSize: f.options.sliceSize) == nil,
                "the finished upload left no record")
        await f.harness.stop()
    }

    /// Parts 0 and 1 went to one host, the journal names the other: the resumed parts and create go
    /// to the journaled one, create refuses mixed hosts (errno 10), and the server hands back the
    /// same uploadid with nothing missing. Every part must then be sent again to one host.
    @Test func aJournaledHostOtherThanThePartsResendsEverythingToOneHost() async throws {
        let f = try await Fixture.make(seed: 42)
        defer { f.removeFiles() }
        let path = "/apps/netdiskfs/mixed.bin"
        let hosts = f.harness.server.uploadURLs
        let uploadID = try await f.journalRecord(path: path, done: [0, 1]) { pinned in hosts.first { $0 != pinned } ?? pinned }
        _ = try await upload(file: f.file, to: path, harness: f.harness, journal: f.journal)
        #expect(try await f.harness.files()[path]?.md5 == f.content.md5)
        let parts = try await f.harness.stats()["parts_by_upload"] as? [String: [Int]] ?? [:]
        #expect((parts[uploadID]?.count ?? 0) > 6, "every part was sent again: \(parts[uploadID] ?? [])")
        await f.harness.stop()
    }
}
