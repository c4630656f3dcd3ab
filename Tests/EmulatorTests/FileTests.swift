import Foundation
import Testing

@Suite("list and filemanager")
struct FileTests {
    @Test func listPagesInNameOrder() async throws {
        try await withEmulator { (emu: Emu) async throws in
            for i in (0..<25).reversed() {
                #expect(try await emu.create(String(format: "/p/f%02d", i), size: 0, blocks: ["d41d8cd98f00b204e9800998ecf8427e"],
                                             uploadID: nil).errno == 0)
            }
            var seen: [String] = []
            var start = 0
            while true {
                let page = (try await emu.list("/p", start: start, limit: 10).json["list"] as? [[String: Any]]) ?? []
                seen += page.map { $0["server_filename"] as! String }
                for entry in page {
                    for key in ["fs_id", "path", "server_filename", "size", "isdir", "server_mtime", "local_mtime", "md5"] {
                        #expect(entry[key] != nil, "list entry lacks \(key)")
                    }
                }
                if page.count < 10 { break }
                start += page.count
            }
            #expect(seen == (0..<25).map { String(format: "f%02d", $0) })
            #expect(try await emu.list("/missing").errno == -9)
        }
    }

    func manage(_ emu: Emu, _ opera: String, _ filelist: String, ondup: String = "fail") async throws -> HTTPResult {
        try await emu.post("/rest/2.0/xpan/file?method=filemanager", ["opera": opera],
                           form: ["async": "0", "filelist": filelist, "ondup": ondup])
    }

    @Test func deleteMoveCopyRenameWithOndup() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let a = randomData(100), b = randomData(200)
            try await emu.upload("/src/a.bin", a)
            try await emu.upload("/src/sub/b.bin", b)
            try await emu.upload("/dst/a.bin", b)

            // copy a directory tree
            #expect(try await manage(emu, "copy", #"[{"path":"/src","dest":"/backup","newname":"src"}]"#).errno == 0)
            #expect(try await emu.files()["/backup/src/sub/b.bin"]?.md5 == md5Hex(b))
            // move onto an existing file: fail, then overwrite
            let conflict = try await manage(emu, "move", #"[{"path":"/src/a.bin","dest":"/dst","newname":"a.bin"}]"#)
            #expect(conflict.errno == -8)
            #expect(try await manage(emu, "move", #"[{"path":"/src/a.bin","dest":"/dst","newname":"a.bin"}]"#,
                                     ondup: "overwrite").errno == 0)
            var files = try await emu.files()
            #expect(files["/dst/a.bin"]?.md5 == md5Hex(a))
            #expect(files["/src/a.bin"] == nil)
            // ondup=skip leaves both files alone
            #expect(try await manage(emu, "copy", #"[{"path":"/src/sub/b.bin","dest":"/dst","newname":"a.bin"}]"#,
                                     ondup: "skip").errno == 0)
            #expect(try await emu.files()["/dst/a.bin"]?.md5 == md5Hex(a))
            // rename, then a rename onto an existing name fails
            #expect(try await manage(emu, "rename", #"[{"path":"/dst/a.bin","newname":"c.bin"}]"#).errno == 0)
            #expect(try await manage(emu, "rename", #"[{"path":"/backup/src/a.bin","newname":"sub"}]"#).errno == -8)
            #expect(try await manage(emu, "rename", #"[{"path":"/dst/c.bin","newname":"bad:name"}]"#).errno == 31062)
            // delete a tree and a missing path
            #expect(try await manage(emu, "delete", #"["/backup"]"#).errno == 0)
            #expect(try await manage(emu, "delete", #"["/nothing"]"#).errno == -9)
            files = try await emu.files()
            #expect(files["/dst/c.bin"]?.md5 == md5Hex(a))
            #expect(files.keys.filter { $0.hasPrefix("/backup") }.isEmpty)
            #expect(files["/src/sub/b.bin"] != nil)
        }
    }
}

@Suite("Downloads")
struct DownloadTests {
    func dlink(_ emu: Emu, _ path: String) async throws -> String {
        let entry = (try await emu.list(RemotePathTest.parent(path)).json["list"] as! [[String: Any]])
            .first { $0["path"] as? String == path }!
        let fsID = int(entry["fs_id"])!
        let metas = try await emu.get("/rest/2.0/xpan/multimedia?method=filemetas", ["fsids": "[\(fsID)]", "dlink": "1"])
        return try #require((metas.json["list"] as? [[String: Any]])?.first?["dlink"] as? String, "\(metas.json)")
    }

    @Test func dlinkRedirectsToARangeCapableURL() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let data = randomData(5 * MiB)
            try await emu.upload("/dl/file.bin", data)
            let link = try await dlink(emu, "/dl/file.bin") + "&access_token=" + emu.token

            let noUA = try await HTTP.send(link, headers: ["User-Agent": "curl/8"])
            #expect(noUA.errno == 31326)

            let redirect = try await HTTP.send(link, headers: ["User-Agent": "pan.baidu.com"])
            #expect(redirect.status == 302)
            let cdn = try #require(redirect.header("Location"))

            let full = try await HTTP.send(cdn, headers: ["User-Agent": "pan.baidu.com"])
            #expect(full.status == 200)
            #expect(full.body == data)

            let ranged = try await HTTP.send(cdn, headers: ["Range": "bytes=4194300-4194310"])
            #expect(ranged.status == 206)
            #expect(ranged.header("Content-Range") == "bytes 4194300-4194310/\(data.count)")
            #expect(ranged.body == data.subdata(in: 4_194_300..<4_194_311))

            let tail = try await HTTP.send(cdn, headers: ["Range": "bytes=-100"])
            #expect(tail.body == data.suffix(100))

            let beyond = try await HTTP.send(cdn, headers: ["Range": "bytes=\(data.count)-"])
            #expect(beyond.status == 416)
            #expect(beyond.header("Content-Range") == "bytes */\(data.count)")
        }
    }

    @Test func dlinksExpire() async throws {
        try await withEmulator(configure: { $0.dlinkLifetime = 6 }) { (emu: Emu) async throws in
            try await emu.upload("/f", randomData(10))
            let link = try await dlink(emu, "/f") + "&access_token=" + emu.token
            #expect(try await HTTP.send(link, headers: ["User-Agent": "pan.baidu.com"]).status == 302)
            try await Task.sleep(for: .milliseconds(6500))
            let expired = try await HTTP.send(link, headers: ["User-Agent": "pan.baidu.com"])
            #expect(expired.errno == 31360)
        }
    }

    @Test func downloadNeedsAToken() async throws {
        try await withEmulator { (emu: Emu) async throws in
            try await emu.upload("/f", randomData(10))
            let link = try await dlink(emu, "/f")
            #expect(try await HTTP.send(link, headers: ["User-Agent": "pan.baidu.com"]).errorCode == 31045)
        }
    }
}

enum RemotePathTest {
    static func parent(_ path: String) -> String {
        let p = (path as NSString).deletingLastPathComponent
        return p.isEmpty ? "/" : p
    }
}
