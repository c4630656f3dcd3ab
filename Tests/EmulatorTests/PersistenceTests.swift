import Foundation
import Testing
import NetdiskEmulator

@Suite("Persistence")
struct PersistenceTests {
    @Test func filesTokensAndOpenUploadsSurviveARestart() async throws {
        let dir = NSTemporaryDirectory() + "emulator-persist-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = randomData(4 * MiB + 99)
        let parts = [Data(data.prefix(4 * MiB)), Data(data.dropFirst(4 * MiB))]
        let first = try await Emu.start(dataDirectory: dir)
        try await first.upload("/keep/a.bin", data)
        // Identical content is stored once.
        try await first.upload("/keep/b.bin", data)
        let id = try #require(try await first.precreate("/open.bin", size: data.count, blocks: parts.map(md5Hex)).json["uploadid"] as? String)
        _ = try await first.superfile2(path: "/open.bin", uploadID: id, partseq: 0, data: parts[0])
        let token = first.token
        await first.stop()
        let blobs = try FileManager.default.contentsOfDirectory(atPath: dir + "/blobs")
        #expect(blobs.count == 2, "content stored once per distinct part: \(blobs)")

        // A part left behind by a crash, owned by no upload, is cleaned up at start.
        #expect(FileManager.default.createFile(atPath: dir + "/parts/N1-orphan.0", contents: Data([1])))
        var options = EmulatorOptions()
        options.dataDirectory = dir
        let server = try await EmulatorServer.start(options)
        let second = Emu(server: server, token: token)
        do {
            #expect(try await second.get("/api/quota").errno == 0, "the old token still works")
            #expect(!FileManager.default.fileExists(atPath: dir + "/parts/N1-orphan.0"))
            #expect(FileManager.default.fileExists(atPath: dir + "/parts/\(id).0"), "the open upload's part is kept")
            let files = try await second.files()
            #expect(files["/keep/a.bin"]?.md5 == md5Hex(data))
            #expect(files["/keep/b.bin"]?.md5 == md5Hex(data))
            _ = try await second.superfile2(path: "/open.bin", uploadID: id, partseq: 1, data: parts[1])
            #expect(try await second.create("/open.bin", size: data.count, blocks: parts.map(md5Hex), uploadID: id).errno == 0)
            #expect(try await second.files()["/open.bin"]?.md5 == md5Hex(data))
        } catch {
            await second.stop()
            throw error
        }
        await second.stop()
    }

    @Test func aTemporaryDataDirectoryIsRemovedAtShutdown() async throws {
        let emu = try await Emu.start()
        try await emu.upload("/x", randomData(10))
        let dir = emu.server.dataDirectory
        #expect(FileManager.default.fileExists(atPath: dir + "/metadata.sqlite"))
        await emu.stop()
        #expect(!FileManager.default.fileExists(atPath: dir))
    }
}
