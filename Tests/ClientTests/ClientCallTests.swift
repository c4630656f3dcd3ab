import Foundation
import Testing
@testable import Uploader

/// Every call of DESIGN.md's table, through the real client, against the real emulator.
@Suite struct ClientCallTests {
    @Test func accountAndQuota() async throws {
        let harness = try await Harness.start { $0.vipType = 2; $0.quota = 5 << 30 }
        defer { Task { await harness.stop() } }
        let account = try await harness.client.accountInfo()
        #expect(account.tier == .svip)
        #expect(!account.name.isEmpty)
        #expect(account.uk != 0)
        let quota = try await harness.client.quota()
        #expect(quota.total == 5 << 30)
        #expect(quota.used == 0)
    }

    @Test func directoriesListPagingAndFileManager() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let made = try await client.makeDirectory(path: "/apps/t/dir")
        #expect(made.isDirectory && made.path == "/apps/t/dir" && made.name == "dir")
        await #expect(throws: NetdiskError.alreadyExists(code: -8)) { _ = try await client.makeDirectory(path: "/apps/t/dir") }

        // 1003 entries: listAll pages with limit 1000 until the short page.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for index in stride(from: worker, to: 1003, by: 8) {
                        _ = try await client.makeDirectory(path: String(format: "/apps/t/big/d%04d", index))
                    }
                }
            }
            try await group.waitForAll()
        }
        let all = try await client.listAll(directory: "/apps/t/big")
        #expect(all.count == 1003)
        #expect(all.map(\.name) == (0..<1003).map { String(format: "d%04d", $0) })
        #expect(try await harness.calls("list") == 2)
        let page = try await client.list(directory: "/apps/t/big", start: 1000, limit: 1000)
        #expect(page.map(\.name) == ["d1000", "d1001", "d1002"])

        let file = try await uploadFile(client, path: "/apps/t/dir/f.bin", content: pattern(1000))
        try await client.copy(from: file.path, toDirectory: "/apps/t", newName: "copy.bin", ondup: .fail)
        try await client.rename(path: "/apps/t/copy.bin", newName: "renamed.bin")
        try await client.move(from: "/apps/t/renamed.bin", toDirectory: "/apps/t/dir", newName: "moved.bin", ondup: .fail)
        await #expect(throws: NetdiskError.alreadyExists(code: -8)) {
            try await client.move(from: "/apps/t/dir/moved.bin", toDirectory: "/apps/t/dir", newName: "f.bin", ondup: .fail)
        }
        try await client.move(from: "/apps/t/dir/moved.bin", toDirectory: "/apps/t/dir", newName: "f.bin", ondup: .overwrite)
        #expect(try await client.list(directory: "/apps/t/dir", start: 0, limit: 100).map(\.name) == ["f.bin"])
        try await client.delete(paths: ["/apps/t/dir", "/apps/t/big"])
        #expect(try await client.listAll(directory: "/apps/t").isEmpty)
        await #expect(throws: NetdiskError.notFound(code: -9)) { try await client.delete(paths: ["/apps/t/nothing"]) }
        await #expect(throws: NetdiskError.notFound(code: -9)) { _ = try await client.list(directory: "/apps/none", start: 0, limit: 10) }
    }

    @Test func uploadInPartsThenDownloadRanges() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let content = pattern((4 << 20) * 2 + 12345, seed: 3)
        let entry = try await uploadFile(client, path: "/apps/t/three-parts.bin", content: content)
        #expect(entry.size == Int64(content.count))
        #expect(entry.name == "three-parts.bin")
        let stored = try await harness.storedFiles()["/apps/t/three-parts.bin"]
        #expect(stored?.size == content.count)
        #expect(stored?.md5 == md5(content))
        // One locateupload for the uploadid: all parts went to the pinned host (create would fail otherwise).
        #expect(try await harness.calls("locateupload") == 1)
        #expect(try await harness.calls("superfile2") == 3)

        let links = try await client.downloadLinks(fsIDs: [entry.fsID])
        let dlink = try #require(links[entry.fsID])
        let middle = try await client.download(dlink: dlink, offset: 4_000_000, length: 500_000)
        #expect(middle == Array(content[4_000_000..<4_500_000]))
        let tail = try await client.download(dlink: dlink, offset: Int64(content.count - 10), length: 100)
        #expect(tail == Array(content[(content.count - 10)...]))
        let past = try await client.download(dlink: dlink, offset: Int64(content.count + 5), length: 10)
        #expect(past.isEmpty)
    }

    @Test func streamingUploadUsesWebAPIPrecreateAndCreate() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let content = pattern((4 << 20) + 777, seed: 9)
        let entry = try await uploadFile(harness.client, path: "/apps/t/stream.bin", content: content, streaming: true)
        #expect(entry.size == Int64(content.count))
        #expect(try await harness.storedFiles()["/apps/t/stream.bin"]?.md5 == md5(content))
    }

    @Test func concurrentPartsShareOneLocateupload() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let slice = 4 << 20
        let content = pattern(slice * 3 + 5, seed: 5)
        let blocks = stride(from: 0, to: content.count, by: slice).map { md5(content[$0..<min($0 + slice, content.count)]) }
        let uploadID = try await client.precreateStreaming(path: "/apps/t/par.bin", policy: .fail)
        let pinned = PinnedBytes(content)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for partseq in blocks.indices {
                group.addTask {
                    let range = (partseq * slice)..<min((partseq + 1) * slice, content.count)
                    let answer = try await client.uploadPart(path: "/apps/t/par.bin", uploadID: uploadID, partseq: partseq,
                                                             bytes: pinned.part(range))
                    #expect(answer == blocks[partseq])
                }
            }
            try await group.waitForAll()
        }
        #expect(try await harness.calls("locateupload") == 1)
        _ = try await client.create(path: "/apps/t/par.bin", size: Int64(content.count), uploadID: uploadID,
                                    blockList: blocks, localMtime: nil, policy: .fail)
        #expect(try await harness.storedFiles()["/apps/t/par.bin"]?.md5 == md5(content))
    }

    @Test func rapidUploadAndPrecreateResume() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let content = pattern(300_000, seed: 11)
        let contentMD5 = md5(content)
        let sliceMD5 = md5(content[0..<(256 << 10)])
        #expect(try await client.rapidUpload(path: "/apps/t/r.bin", size: 300_000, contentMD5: contentMD5,
                                             sliceMD5: sliceMD5, policy: .fail) == nil)
        _ = try await uploadFile(client, path: "/apps/t/original.bin", content: content)
        let hit = try #require(try await client.rapidUpload(path: "/apps/t/r.bin", size: 300_000, contentMD5: contentMD5,
                                                            sliceMD5: sliceMD5, policy: .fail))
        #expect(hit.size == 300_000 && hit.path == "/apps/t/r.bin")
        // precreate with content-md5/slice-md5 of stored content: return_type 2, no upload.
        let precreated = try await client.precreate(path: "/apps/t/p.bin", size: 300_000, blockList: [contentMD5],
                                                    contentMD5: contentMD5, sliceMD5: sliceMD5, localMtime: nil, policy: .fail)
        #expect(precreated.rapidHit?.path == "/apps/t/p.bin")
        // precreate of new content: the server asks for every part.
        let fresh = pattern(10, seed: 1)
        let needed = try await client.precreate(path: "/apps/t/n.bin", size: 10, blockList: [md5(fresh)], contentMD5: nil,
                                                sliceMD5: nil, localMtime: nil, policy: .fail)
        #expect(needed.uploadID != nil && needed.missingParts == [0] && needed.rapidHit == nil)
        // Empty files: create with the empty MD5 and no uploadid.
        let empty = try #require(try await client.rapidUpload(path: "/apps/t/empty", size: 0, contentMD5: BaiduProtocol.emptyMD5,
                                                              sliceMD5: BaiduProtocol.emptyMD5, policy: .fail))
        #expect(empty.size == 0)
    }
}

@Suite struct TransportTests {
    @Test func connectionsAreReused() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let transport = HTTPTransport(threads: 1)
        defer { transport.shutdown() }
        var opened: [Int] = []
        for _ in 0..<5 {
            let response = try await transport.send(HTTPRequest(method: .get, url: harness.server.baseURL + "/__emulator/stats"))
            #expect(response.status == 200)
            opened.append(response.connectionsOpened)
        }
        #expect(opened == [1, 0, 0, 0, 0])
    }

    @Test func multipartBodyStreamsPrefixPartAndSuffix() async throws {
        // An echo of the body through the emulator's part MD5: prefix + part + suffix arrive intact.
        let harness = try await Harness.start { $0.vipType = 2 }
        defer { Task { await harness.stop() } }
        let content = pattern(32 << 20, seed: 99)
        let id = try await harness.client.precreateStreaming(path: "/apps/t/big", policy: .fail)
        let pinned = PinnedBytes(content)
        let answer = try await harness.client.uploadPart(path: "/apps/t/big", uploadID: id, partseq: 0, bytes: pinned.part(0..<content.count))
        #expect(answer == md5(content))
    }
}
