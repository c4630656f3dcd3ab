import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NetdiskEmulator
import Testing

/// One HTTP answer, with its JSON body decoded when it has one.
struct HTTPResult: @unchecked Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:] }
    var errno: Int? { int(json["errno"]) }
    var errorCode: Int? { int(json["error_code"]) }
    func header(_ name: String) -> String? {
        headers.first { $0.key.lowercased() == name.lowercased() }?.value
    }
}

/// Keeps redirects visible: the dlink's 302 is part of what the tests check.
final class NoRedirects: NSObject, URLSessionTaskDelegate, @unchecked Sendable {
    func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                    newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
        completionHandler(nil)
    }
}

let testSession: URLSession = {
    let configuration = URLSessionConfiguration.ephemeral
    configuration.timeoutIntervalForRequest = 60
    return URLSession(configuration: configuration, delegate: NoRedirects(), delegateQueue: nil)
}()

enum HTTP {
    static func send(_ url: String, method: String = "GET", headers: [String: String] = [:], body: Data? = nil) async throws -> HTTPResult {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        request.httpBody = body
        let sendable = request
        return try await withCheckedThrowingContinuation { continuation in
            let task = testSession.dataTask(with: sendable) { data, response, error in
                if let error { return continuation.resume(throwing: error) }
                let http = response as! HTTPURLResponse
                var fields: [String: String] = [:]
                for (k, v) in http.allHeaderFields { fields["\(k)"] = "\(v)" }
                continuation.resume(returning: HTTPResult(status: http.statusCode, headers: fields, body: data ?? Data()))
            }
            task.resume()
        }
    }

    static func encode(_ fields: [String: String]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return fields.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value.addingPercentEncoding(withAllowedCharacters: allowed)!)" }
            .joined(separator: "&")
    }
}

func md5Hex(_ data: Data) -> String {
    Insecure.MD5.hash(data: data).map { String(format: "%02x", $0) }.joined()
}

func randomData(_ count: Int) -> Data {
    var g = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        var word = g.next()
        withUnsafeBytes(of: &word) { w in
            for b in w where i < count {
                bytes[i] = b
                i += 1
            }
        }
    }
    return Data(bytes)
}

func jsonList(_ value: [String]) -> String {
    "[" + value.map { "\"\($0)\"" }.joined(separator: ",") + "]"
}

let MiB = 1 << 20

/// A running emulator with a token, and the protocol calls spelled out over plain HTTP.
struct Emu: Sendable {
    let server: EmulatorServer
    let token: String
    var base: String { server.baseURL }

    static func start(dataDirectory: String? = nil, _ configure: (inout EmulatorOptions) -> Void = { _ in }) async throws -> Emu {
        var options = EmulatorOptions()
        options.dataDirectory = dataDirectory
        configure(&options)
        let server = try await EmulatorServer.start(options)
        let token = try await HTTP.send(server.baseURL + "/__emulator/token", method: "POST").json["access_token"] as! String
        return Emu(server: server, token: token)
    }

    func stop() async { await server.shutdown() }

    func get(_ path: String, _ query: [String: String] = [:], token: String? = nil) async throws -> HTTPResult {
        var q = query
        q["access_token"] = token ?? self.token
        return try await HTTP.send(base + path + (path.contains("?") ? "&" : "?") + HTTP.encode(q))
    }

    func post(_ path: String, _ query: [String: String] = [:], form: [String: String], token: String? = nil) async throws -> HTTPResult {
        var q = query
        q["access_token"] = token ?? self.token
        return try await HTTP.send(base + path + (path.contains("?") ? "&" : "?") + HTTP.encode(q), method: "POST",
                                   headers: ["Content-Type": "application/x-www-form-urlencoded"],
                                   body: Data(HTTP.encode(form).utf8))
    }

    func precreate(_ path: String, size: Int?, blocks: [String], rtype: Int = 0, extra: [String: String] = [:],
                   endpoint: String = "/rest/2.0/xpan/file?method=precreate") async throws -> HTTPResult {
        var form = ["path": path, "isdir": "0", "autoinit": "1", "rtype": "\(rtype)", "block_list": jsonList(blocks)]
        if let size { form["size"] = "\(size)" }
        form.merge(extra) { $1 }
        return try await post(endpoint, form: form)
    }

    func uploadHosts() async throws -> [String] {
        let r = try await get("/rest/2.0/pcs/file?method=locateupload", ["appid": "250528", "upload_version": "2.0", "path": "/x"])
        return (r.json["servers"] as! [[String: Any]]).map { $0["server"] as! String }
    }

    func superfile2(host: String? = nil, path: String, uploadID: String, partseq: Int, data: Data,
                    token: String? = nil) async throws -> HTTPResult {
        let boundary = "----emutest" + UUID().uuidString
        var body = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
        body.append(data)
        body.append(Data("\r\n--\(boundary)--\r\n".utf8))
        let query = HTTP.encode(["method": "upload", "type": "tmpfile", "path": path, "uploadid": uploadID,
                                 "partseq": "\(partseq)", "access_token": token ?? self.token])
        return try await HTTP.send((host ?? base) + "/rest/2.0/pcs/superfile2?" + query, method: "POST",
                                   headers: ["Content-Type": "multipart/form-data; boundary=\(boundary)"], body: body)
    }

    func create(_ path: String, size: Int, blocks: [String], uploadID: String?, rtype: Int = 0,
                endpoint: String = "/rest/2.0/xpan/file?method=create") async throws -> HTTPResult {
        var form = ["path": path, "size": "\(size)", "isdir": "0", "rtype": "\(rtype)", "block_list": jsonList(blocks)]
        if let uploadID { form["uploadid"] = uploadID }
        return try await post(endpoint, form: form)
    }

    /// The whole upload: precreate, parts of `slice` bytes to the first upload host, create.
    @discardableResult
    func upload(_ path: String, _ data: Data, slice: Int = 4 * MiB, rtype: Int = 0) async throws -> HTTPResult {
        let parts = stride(from: 0, to: max(data.count, 1), by: slice).map { data.subdata(in: $0..<min($0 + slice, data.count)) }
        let blocks = parts.map(md5Hex)
        let pre = try await precreate(path, size: data.count, blocks: blocks, rtype: rtype)
        guard pre.errno == 0, let uploadID = pre.json["uploadid"] as? String else { return pre }
        let host = try await uploadHosts()[0]
        for (i, part) in parts.enumerated() {
            let r = try await superfile2(host: host, path: path, uploadID: uploadID, partseq: i, data: part)
            #expect(r.json["md5"] as? String == blocks[i], "superfile2: \(r.json)")
        }
        return try await create(path, size: data.count, blocks: blocks, uploadID: uploadID, rtype: rtype)
    }

    func list(_ dir: String, start: Int = 0, limit: Int = 1000) async throws -> HTTPResult {
        try await get("/rest/2.0/xpan/file?method=list", ["dir": dir, "start": "\(start)", "limit": "\(limit)", "order": "name"])
    }

    func names(_ dir: String) async throws -> [String] {
        ((try await list(dir).json["list"] as? [[String: Any]]) ?? []).map { $0["server_filename"] as! String }
    }

    /// `/__emulator/files` as path → (size, md5).
    func files() async throws -> [String: (size: Int, md5: String?)] {
        let r = try await HTTP.send(base + "/__emulator/files")
        var result: [String: (Int, String?)] = [:]
        for f in r.json["files"] as! [[String: Any]] {
            result[f["path"] as! String] = (int(f["size"])!, f["md5"] as? String)
        }
        return result
    }

    func stats() async throws -> [String: Any] { try await HTTP.send(base + "/__emulator/stats").json }

    func setFaults(_ spec: String) async throws {
        let r = try await HTTP.send(base + "/__emulator/faults", method: "POST", body: Data(spec.utf8))
        #expect(r.status == 200, "faults: \(r.json)")
    }

    func admin(_ action: String) async throws {
        _ = try await HTTP.send(base + "/__emulator/" + action, method: "POST")
    }
}

/// Runs `body` against a fresh emulator and always shuts it down.
func withEmulator(dataDirectory: String? = nil, configure: (inout EmulatorOptions) -> Void = { _ in },
                  _ body: (Emu) async throws -> Void) async throws {
    let emu = try await Emu.start(dataDirectory: dataDirectory, configure)
    do {
        try await body(emu)
    } catch {
        await emu.stop()
        throw error
    }
    await emu.stop()
}

/// A JSON number as Int, whichever way Foundation decoded it.
func int(_ value: Any?) -> Int? {
    switch value {
    case let i as Int: return i
    case let n as NSNumber: return n.intValue
    case let d as Double: return Int(d)
    case let s as String: return Int(s)
    default: return nil
    }
}

func ints(_ value: Any?) -> [Int]? { (value as? [Any])?.compactMap { int($0) } }
