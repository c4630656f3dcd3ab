import Foundation
import Testing

@Suite("Uploads: precreate, locateupload, superfile2, create")
struct UploadTests {
    @Test func multiPartUploadStoresExactContentAndListsItOnlyAfterCreate() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let data = randomData(9 * MiB + 123)
            let parts = [data.prefix(4 * MiB), data.dropFirst(4 * MiB).prefix(4 * MiB), data.dropFirst(8 * MiB)].map { Data($0) }
            let blocks = parts.map(md5Hex)
            let pre = try await emu.precreate("/apps/t/big.bin", size: data.count, blocks: blocks)
            #expect(pre.errno == 0)
            #expect(int(pre.json["return_type"]) == 1)
            #expect(ints(pre.json["block_list"]) == [0, 1, 2])
            let uploadID = try #require(pre.json["uploadid"] as? String)
            let hosts = try await emu.uploadHosts()
            #expect(hosts.count >= 2)
            #expect(Set(hosts.compactMap { URL(string: $0)?.port }).count == hosts.count, "upload hosts on distinct ports")
            for (i, part) in parts.enumerated() {
                let r = try await emu.superfile2(host: hosts[1], path: "/apps/t/big.bin", uploadID: uploadID, partseq: i, data: part)
                #expect(r.json["md5"] as? String == blocks[i])
            }
            #expect(try await emu.list("/apps/t").errno == -9, "nothing visible before create")
            #expect(int(try await emu.stats()["open_uploads"]) == 1)
            let created = try await emu.create("/apps/t/big.bin", size: data.count, blocks: blocks, uploadID: uploadID)
            #expect(created.errno == 0, "\(created.json)")
            #expect(int(created.json["size"]) == data.count)
            #expect(created.json["fs_id"] != nil)
            #expect(created.json["md5"] as? String != md5Hex(data), "a multi-part file's md5 is not its content MD5")
            #expect(try await emu.names("/apps/t") == ["big.bin"])
            let stored = try await emu.files()["/apps/t/big.bin"]
            #expect(stored?.size == data.count)
            #expect(stored?.md5 == md5Hex(data))
            let stats = try await emu.stats()
            #expect(int(stats["open_uploads"]) == 0)
            #expect(ints((stats["parts_by_upload"] as? [String: Any])?[uploadID]) == [0, 1, 2])
            #expect(int((stats["calls"] as? [String: Any])?["superfile2"]) == 3)
            #expect((int(stats["bytes_received"]) ?? 0) >= data.count)
        }
    }

    @Test func mainPortAcceptsPartsToo() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let data = randomData(5000)
            let pre = try await emu.precreate("/m.bin", size: data.count, blocks: [md5Hex(data)])
            let id = pre.json["uploadid"] as! String
            #expect(try await emu.superfile2(path: "/m.bin", uploadID: id, partseq: 0, data: data).json["md5"] as? String == md5Hex(data))
            #expect(try await emu.create("/m.bin", size: data.count, blocks: [md5Hex(data)], uploadID: id).errno == 0)
        }
    }

    @Test func precreateResumesAnOpenUploadWithOnlyTheMissingParts() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let data = randomData(8 * MiB + 10)
            let parts = [Data(data.prefix(4 * MiB)), Data(data.dropFirst(4 * MiB).prefix(4 * MiB)), Data(data.dropFirst(8 * MiB))]
            let blocks = parts.map(md5Hex)
            let id = try await emu.precreate("/r.bin", size: data.count, blocks: blocks).json["uploadid"] as! String
            _ = try await emu.superfile2(path: "/r.bin", uploadID: id, partseq: 1, data: parts[1])
            let again = try await emu.precreate("/r.bin", size: data.count, blocks: blocks)
            #expect(again.json["uploadid"] as? String == id)
            #expect(ints(again.json["block_list"]) == [0, 2])
            for i in [0, 2] { _ = try await emu.superfile2(path: "/r.bin", uploadID: id, partseq: i, data: parts[i]) }
            #expect(try await emu.create("/r.bin", size: data.count, blocks: blocks, uploadID: id).errno == 0)
            let stats = try await emu.stats()
            #expect(int((stats["parts_by_path"] as? [String: Any])?["/r.bin"]) == 3)
        }
    }

    @Test func streamingPrecreateTakesPlaceholdersAndCommitsThroughEitherCreate() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let placeholders = ["5910a591dd8fc18c32a8f3df4fdc1761", "a5fc157d78e6ad1c7e114b056c92821e"]
            let refused = try await emu.precreate("/s.bin", size: nil, blocks: placeholders)
            #expect(refused.errno == 2, "xpan precreate needs size")
            for (name, createEndpoint) in [("s1.bin", "/api/create"), ("s2.bin", "/rest/2.0/xpan/file?method=create")] {
                let pre = try await emu.precreate("/\(name)", size: nil, blocks: placeholders, endpoint: "/api/precreate")
                #expect(pre.errno == 0, "\(pre.json)")
                let id = try #require(pre.json["uploadid"] as? String)
                let data = randomData(4 * MiB + 7)
                let parts = [Data(data.prefix(4 * MiB)), Data(data.dropFirst(4 * MiB))]
                for (i, p) in parts.enumerated() { _ = try await emu.superfile2(path: "/\(name)", uploadID: id, partseq: i, data: p) }
                let created = try await emu.create("/\(name)", size: data.count, blocks: parts.map(md5Hex), uploadID: id,
                                                   endpoint: createEndpoint)
                #expect(created.errno == 0, "\(created.json)")
                #expect(try await emu.files()["/\(name)"]?.md5 == md5Hex(data))
            }
        }
    }

    @Test func emptyFilesAreCreatedWithTheEmptyMD5() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let empty = "d41d8cd98f00b204e9800998ecf8427e"
            #expect(try await emu.create("/e1", size: 0, blocks: [empty], uploadID: nil).errno == 0)
            let id = try await emu.precreate("/e2", size: 0, blocks: [empty]).json["uploadid"] as! String
            #expect(try await emu.create("/e2", size: 0, blocks: [empty], uploadID: id).errno == 0)
            let files = try await emu.files()
            #expect(files["/e1"]?.size == 0 && files["/e1"]?.md5 == empty)
            #expect(files["/e2"]?.size == 0)
        }
    }

    @Test func rtypeDecidesWhatAConflictingCreateDoes() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let a = randomData(100), b = randomData(200), c = randomData(300)
            #expect(try await emu.upload("/d/f.txt", a).errno == 0)
            #expect(try await emu.upload("/d/f.txt", b, rtype: 0).errno == -8)
            let renamed = try await emu.upload("/d/f.txt", b, rtype: 1)
            #expect(renamed.json["path"] as? String == "/d/f(1).txt")
            #expect(try await emu.upload("/d/f.txt", c, rtype: 3).errno == 0)
            let files = try await emu.files()
            #expect(files["/d/f.txt"]?.md5 == md5Hex(c))
            #expect(files["/d/f(1).txt"]?.md5 == md5Hex(b))
        }
    }

    @Test func rapidUploadOnlyForStoredContent() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let data = randomData(6 * MiB)
            try await emu.upload("/orig.bin", data)
            let hit = try await emu.create("/copy.bin", size: data.count, blocks: [md5Hex(data)], uploadID: nil)
            #expect(hit.errno == 0, "\(hit.json)")
            let miss = try await emu.create("/nope.bin", size: data.count, blocks: [md5Hex(randomData(10))], uploadID: nil)
            #expect(miss.errno == 31079)
            // precreate with content-md5 + slice-md5 answers return_type 2 and makes the file.
            let slice = md5Hex(Data(data.prefix(256 << 10)))
            let pre = try await emu.precreate("/pre.bin", size: data.count, blocks: [md5Hex(Data(data.prefix(4 * MiB))), md5Hex(Data(data.dropFirst(4 * MiB)))],
                                              extra: ["content-md5": md5Hex(data), "slice-md5": slice])
            #expect(int(pre.json["return_type"]) == 2, "\(pre.json)")
            let wrongSlice = try await emu.precreate("/pre2.bin", size: data.count, blocks: [md5Hex(data)],
                                                     extra: ["content-md5": md5Hex(data), "slice-md5": md5Hex(Data("x".utf8))])
            #expect(int(wrongSlice.json["return_type"]) == 1)
            let files = try await emu.files()
            #expect(files["/copy.bin"]?.md5 == md5Hex(data))
            #expect(files["/pre.bin"]?.md5 == md5Hex(data))
            #expect(files["/nope.bin"] == nil)
        }
    }

    @Test func mkdirCreatesParents() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let r = try await emu.post("/rest/2.0/xpan/file?method=create", form: ["path": "/x/y/z", "isdir": "1", "rtype": "0"])
            #expect(r.errno == 0)
            #expect(int(r.json["isdir"]) == 1)
            #expect(try await emu.names("/x") == ["y"])
            #expect(try await emu.names("/x/y") == ["z"])
        }
    }
}

@Suite("HTTP details")
struct HTTPDetailTests {
    /// libcurl asks `Expect: 100-continue` before large bodies; without the interim answer it stalls.
    @Test func expect100ContinueIsAnswered() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let data = randomData(2 * MiB)
            let file = NSTemporaryDirectory() + "emulator-expect-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: file) }
            try data.write(to: URL(fileURLWithPath: file))
            let id = try #require(try await emu.precreate("/e.bin", size: data.count, blocks: [md5Hex(data)]).json["uploadid"] as? String)
            let url = emu.base + "/rest/2.0/pcs/superfile2?method=upload&type=tmpfile&path=/e.bin&uploadid=\(id)&partseq=0&access_token=\(emu.token)"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["curl", "-sv", "--expect100-timeout", "20", "-H", "Expect: 100-continue", "-F", "file=@\(file)", url]
            let out = Pipe(), err = Pipe()
            process.standardOutput = out
            process.standardError = err
            let start = ContinuousClock.now
            try process.run()
            let (body, trace) = await Task.detached {
                (out.fileHandleForReading.readDataToEndOfFile(), err.fileHandleForReading.readDataToEndOfFile())
            }.value
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            #expect(String(decoding: trace, as: UTF8.self).contains("HTTP/1.1 100 Continue"))
            #expect(ContinuousClock.now - start < .seconds(15), "curl waited for its expect timeout")
            let json = try JSONSerialization.jsonObject(with: body) as? [String: Any]
            #expect(json?["md5"] as? String == md5Hex(data))
        }
    }
}
