import Foundation
import Testing
@testable import Uploader

/// Retry and give-up paths, driven by the emulator's fault injection, and errno values the emulator really answers.
@Suite struct RetryTests {
    @Test(arguments: ["superfile2:status=500:n=1", "superfile2:503:n=1", "superfile2:reset:n=1",
                      "superfile2:errno=31034:n=1", "superfile2:reset:count=2"])
    func partUploadRecoversFromTransientFault(_ spec: String) async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults(spec)
        let content = pattern(100_000, seed: 2)
        _ = try await uploadFile(harness.client, path: "/apps/t/f.bin", content: content)
        #expect(try await harness.storedFiles()["/apps/t/f.bin"]?.md5 == md5(content))
        let failures = spec.hasSuffix("count=2") ? 2 : 1
        #expect(try await harness.calls("superfile2") == 1 + failures)
    }

    @Test(arguments: ["list:errno=31034:n=1", "list:errno=20012:n=1", "list:status=502:n=1", "list:reset:n=1"])
    func apiCallRecoversFromTransientFault(_ spec: String) async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        _ = try await harness.client.makeDirectory(path: "/apps/t/x")
        try await harness.setFaults(spec)
        #expect(try await harness.client.list(directory: "/apps/t", start: 0, limit: 10).map(\.name) == ["x"])
        #expect(try await harness.calls("list") == 2)
    }

    @Test func givesUpAfterBoundedRetries() async throws {
        let harness = try await Harness.start(retry: RetryPolicy(maxRetries: 3, baseDelay: 0.01, maxDelay: 0.02))
        defer { Task { await harness.stop() } }
        try await harness.setFaults("quota:status=503,uinfo:errno=31034,create:reset")
        await #expect(throws: NetdiskError.http(status: 503)) { _ = try await harness.client.quota() }
        #expect(try await harness.calls("quota") == 4)
        await #expect(throws: NetdiskError.rateLimited(code: 31034)) { _ = try await harness.client.accountInfo() }
        #expect(try await harness.calls("uinfo") == 4)
        let error = await #expect(throws: NetdiskError.self) { _ = try await harness.client.makeDirectory(path: "/apps/d") }
        #expect(error?.isTransient == true)
        #expect(try await harness.calls("create") == 4)
    }

    @Test func backoffGrowsAndIsBounded() {
        let policy = RetryPolicy(maxRetries: 10, baseDelay: 0.1, maxDelay: 1)
        for retry in 1...10 {
            let cap = min(1, 0.1 * pow(2, Double(retry - 1)))
            let delay = policy.delay(beforeRetry: retry)
            #expect(delay >= cap / 2 && delay <= cap)
        }
        #expect(!policy.shouldRetry(.http(status: 500), afterRetries: 10))
        #expect(!policy.shouldRetry(.notFound(code: -9), afterRetries: 0))
    }

    @Test(arguments: ["list:errno=2", "list:errno=-9", "list:status=404", "list:errno=31023"])
    func nonTransientErrorsAreNotRetried(_ spec: String) async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults(spec)
        await #expect(throws: NetdiskError.self) { _ = try await harness.client.list(directory: "/", start: 0, limit: 10) }
        #expect(try await harness.calls("list") == 1)
    }

    @Test func slowAnswersAreWaitedFor() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults("quota:delay=300ms")
        let started = ContinuousClock.now
        _ = try await harness.client.quota()
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        #expect(try await harness.calls("quota") == 1)
    }

    @Test func cancellationStopsATransferPromptly() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults("quota:delay=5s")
        let client = harness.client
        let task = Task { try await client.quota() }
        try await Task.sleep(for: .milliseconds(200))
        let started = ContinuousClock.now
        task.cancel()
        let result = await task.result
        // Far below the 5 s the server holds the answer; generous because the suite runs in parallel on 2 cores.
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(throws: NetdiskError.cancelled) { _ = try result.get() }
    }
}

/// Typed errors for what the emulator really refuses (the strict reading of the protocol).
@Suite struct EmulatorErrnoTests {
    @Test func namesExistenceAndParameters() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        await #expect(throws: NetdiskError.invalidName(code: 31062)) { _ = try await client.makeDirectory(path: "/apps/t/a?b") }
        _ = try await client.makeDirectory(path: "/apps/t/d")
        await #expect(throws: NetdiskError.alreadyExists(code: -8)) { _ = try await client.makeDirectory(path: "/apps/t/d") }
        await #expect(throws: NetdiskError.notFound(code: -9)) {
            try await client.move(from: "/apps/t/missing", toDirectory: "/apps/t/d", newName: "x", ondup: .fail)
        }
        try await harness.setFaults("create:errno=31023:n=1")
        await #expect(throws: NetdiskError.badParameter(code: 31023, message: "injected errno 31023")) {
            _ = try await client.makeDirectory(path: "/apps/t/e")
        }
    }

    @Test func quotaAndSizeLimits() async throws {
        let harness = try await Harness.start { $0.quota = 1000 }
        defer { Task { await harness.stop() } }
        let client = harness.client
        await #expect(throws: NetdiskError.quotaExceeded) {
            _ = try await client.precreate(path: "/apps/t/big", size: 5000, blockList: [BaiduProtocol.emptyMD5], contentMD5: nil,
                                           sliceMD5: nil, localMtime: nil, policy: .fail)
        }
        await #expect(throws: NetdiskError.fileTooLarge(limit: 0)) {
            _ = try await client.precreate(path: "/apps/t/huge", size: 5_000_000_000, blockList: [BaiduProtocol.emptyMD5],
                                           contentMD5: nil, sliceMD5: nil, localMtime: nil, policy: .fail)
        }
    }

    @Test func uploadStrictness() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let small = PinnedBytes(pattern(5 << 20, seed: 4))
        // Unknown uploadid.
        await #expect(throws: NetdiskError.unknownUploadID) {
            _ = try await client.uploadPart(path: "/apps/t/x", uploadID: "nope", partseq: 0, bytes: small.part(0..<10))
        }
        // A part larger than the 4 MiB slice of a normal account.
        let id1 = try await client.precreateStreaming(path: "/apps/t/a", policy: .fail)
        await #expect(throws: NetdiskError.partTooLarge) {
            _ = try await client.uploadPart(path: "/apps/t/a", uploadID: id1, partseq: 0, bytes: small.part(0..<(5 << 20)))
        }
        // First part under 4 MiB on a multi-part file.
        let id2 = try await client.precreateStreaming(path: "/apps/t/b", policy: .fail)
        let m0 = try await client.uploadPart(path: "/apps/t/b", uploadID: id2, partseq: 0, bytes: small.part(0..<1000))
        let m1 = try await client.uploadPart(path: "/apps/t/b", uploadID: id2, partseq: 1, bytes: small.part(1000..<1500))
        await #expect(throws: NetdiskError.firstPartTooSmall) {
            _ = try await client.create(path: "/apps/t/b", size: 1500, uploadID: id2, blockList: [m0, m1], localMtime: nil, policy: .fail)
        }
        // Block list that does not match the parts.
        let id3 = try await client.precreateStreaming(path: "/apps/t/c", policy: .fail)
        _ = try await client.uploadPart(path: "/apps/t/c", uploadID: id3, partseq: 0, bytes: small.part(0..<1000))
        await #expect(throws: NetdiskError.createFailed(code: 10)) {
            _ = try await client.create(path: "/apps/t/c", size: 1000, uploadID: id3, blockList: [BaiduProtocol.emptyMD5],
                                        localMtime: nil, policy: .fail)
        }
        // Upload state expired.
        let id4 = try await client.precreateStreaming(path: "/apps/t/d", policy: .fail)
        _ = try await harness.admin(.post, "/__emulator/expire-uploads")
        await #expect(throws: NetdiskError.uploadExpired) {
            _ = try await client.uploadPart(path: "/apps/t/d", uploadID: id4, partseq: 0, bytes: small.part(0..<10))
        }
    }

    @Test func downloadRefusals() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let entry = try await uploadFile(client, path: "/apps/t/f", content: pattern(5000))
        let dlink = try #require(try await client.downloadLinks(fsIDs: [entry.fsID])[entry.fsID])
        // Without Baidu's User-Agent the server refuses with 31326.
        let token = try await client.tokens.accessToken()
        let other = HTTPTransport(threads: 1, userAgent: "curl/7.88")
        defer { other.shutdown() }
        let response = try await other.send(HTTPRequest(method: .get, url: dlink + "&access_token=" + token, followRedirects: true))
        #expect(throws: NetdiskError.badUserAgent) { try ResponseDecoding.check(response) }
        #expect(try await client.download(dlink: dlink, offset: 0, length: 5000) == pattern(5000))
        _ = try await harness.admin(.post, "/__emulator/expire-dlinks")
        await #expect(throws: NetdiskError.dlinkExpired) { _ = try await client.download(dlink: dlink, offset: 0, length: 10) }
    }
}

@Suite struct IdempotencyTests {
    @Test func deleteRetriedAfterALostAnswerSucceeds() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        _ = try await harness.client.makeDirectory(path: "/apps/t/gone")
        try await harness.client.delete(paths: ["/apps/t/gone"])
        // A retried delete that finds nothing means an earlier attempt did the work (its answer was lost).
        // The emulator cannot lose an answer after doing the work, so: first attempt fails with a 5xx,
        // the retry answers -9, and that counts as done.
        try await harness.setFaults("filemanager:status=500:n=1")
        try await harness.client.delete(paths: ["/apps/t/gone"])
        #expect(try await harness.calls("filemanager") == 3)
        // Without a retry, -9 is an error.
        await #expect(throws: NetdiskError.notFound(code: -9)) { try await harness.client.delete(paths: ["/apps/t/gone"]) }
    }
}
