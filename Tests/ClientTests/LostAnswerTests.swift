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
