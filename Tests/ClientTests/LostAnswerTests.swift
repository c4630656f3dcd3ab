import Foundation
import Testing
@testable import Uploader

/// The emulator's `reset-after` fault: the call takes effect and its answer is cut off, so the
/// client retries a call that already happened. Each must report success when its effect is there.
@Suite struct LostAnswerTests {
    @Test func mkdirWhoseAnswerWasLostSucceeds() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults("create:reset-after:n=1")
        let entry = try await harness.client.makeDirectory(path: "/apps/t/made")
        #expect(entry.isDirectory && entry.path == "/apps/t/made")
        #expect(try await harness.calls("create") == 2, "the mkdir was retried")
    }

    @Test func moveWhoseAnswerWasLostSucceeds() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        _ = try await uploadFile(harness.client, path: "/apps/t/a.txt", content: pattern(1000))
        try await harness.setFaults("filemanager:reset-after:n=1")
        try await harness.client.move(from: "/apps/t/a.txt", toDirectory: "/apps/t", newName: "b.txt", ondup: .fail)
        let files = try await harness.storedFiles()
        #expect(files["/apps/t/b.txt"]?.md5 == md5(pattern(1000)) && files["/apps/t/a.txt"] == nil)
        try await harness.setFaults("filemanager:reset-after:n=1")
        try await harness.client.rename(path: "/apps/t/b.txt", newName: "c.txt")
        #expect(try await harness.storedFiles()["/apps/t/c.txt"] != nil)
    }

    @Test func createWhoseAnswerWasLostReturnsTheFile() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults("create:reset-after:n=1")
        let content = pattern(5 << 20, seed: 3)
        let entry = try await uploadFile(harness.client, path: "/apps/t/five", content: content)
        #expect(entry.size == Int64(content.count) && entry.path == "/apps/t/five")
        #expect(try await harness.storedFiles()["/apps/t/five"]?.md5 == md5(content))
    }

    /// A move that truly failed (its source never existed) is still reported, not mistaken for done.
    @Test func aMoveThatDidNotHappenStillFails() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults("filemanager:reset:n=1")
        await #expect(throws: NetdiskError.self) {
            try await harness.client.move(from: "/apps/t/none", toDirectory: "/apps/t", newName: "x", ondup: .fail)
        }
    }
}

/// A create that truly failed must never be mistaken for done because an older file of the same
/// size sits at the path (an in-place edit that keeps the size would be reported saved and lost).
@Suite struct LostAnswerSafetyTests {
    @Test func anOlderFileOfTheSameSizeIsNotTakenForTheCreate() async throws {
        let harness = try await Harness.start(retry: RetryPolicy(maxRetries: 2, baseDelay: 0.01, maxDelay: 0.02))
        defer { Task { await harness.stop() } }
        _ = try await uploadFile(harness.client, path: "/apps/t/db", content: pattern(6 << 20, seed: 1))
        let edited = pattern(6 << 20, seed: 2)
        let slice = 4 << 20
        let blocks = [md5(edited[0..<slice]), md5(edited[slice...])]
        let result = try await harness.client.precreate(path: "/apps/t/db", size: Int64(edited.count), blockList: blocks,
                                                        contentMD5: nil, sliceMD5: nil, localMtime: 1_700_000_123, policy: .overwrite)
        let uploadID = try #require(result.uploadID)
        let pinned = PinnedBytes(edited)
        for partseq in 0..<2 {
            _ = try await harness.client.uploadPart(path: "/apps/t/db", uploadID: uploadID, partseq: partseq,
                                                    bytes: pinned.part((partseq * slice)..<min((partseq + 1) * slice, edited.count)))
        }
        // Every create attempt is cut off before it acts: the edit is not saved, and must not be reported saved.
        try await harness.setFaults("create:reset")
        await #expect(throws: NetdiskError.self) {
            _ = try await harness.client.create(path: "/apps/t/db", size: Int64(edited.count), uploadID: uploadID,
                                                blockList: blocks, localMtime: 1_700_000_123, policy: .overwrite)
        }
        #expect(try await harness.storedFiles()["/apps/t/db"]?.md5 != md5(edited))
    }
}
