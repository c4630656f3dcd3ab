import Foundation

/// Turns an HTTP answer into a value or a typed error, the same way for every call.
///
/// Order: 5xx is transient whatever its body says; then a Baidu `errno`/`error_code` goes through
/// ``NetdiskError/fromBaidu(code:message:)`` (the one errno table); then other 4xx; then the payload.
enum ResponseDecoding {
    struct Status: Decodable {
        var errno: LenientInt?
        var error_code: LenientInt?
        var error_msg: String?
        var errmsg: String?
        var show_msg: String?
        /// filemanager reports per-item errnos when the batch fails.
        var info: [Item]?
        struct Item: Decodable { var errno: LenientInt? }
    }

    static func baiduError(in body: [UInt8]) -> NetdiskError? {
        guard body.first == UInt8(ascii: "{"),
              let status = try? JSONDecoder().decode(Status.self, from: Data(body)) else { return nil }
        let message = status.error_msg ?? status.errmsg ?? status.show_msg ?? ""
        if let code = status.errno?.value, code != 0 {
            if let itemCode = status.info?.lazy.compactMap({ $0.errno?.value }).first(where: { $0 != 0 }) {
                return NetdiskError.fromBaidu(code: itemCode, message: message)
            }
            return NetdiskError.fromBaidu(code: code, message: message)
        }
        if let code = status.error_code?.value, code != 0 {
            return NetdiskError.fromBaidu(code: code, message: message)
        }
        return nil
    }

    static func check(_ response: HTTPResponse) throws(NetdiskError) {
        if response.status >= 500 { throw NetdiskError.http(status: response.status) }
        if let error = baiduError(in: response.body) { throw error }
        if response.status >= 400 || response.status < 200 { throw NetdiskError.http(status: response.status) }
    }

    static func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse, call: String) throws(NetdiskError) -> T {
        try check(response)
        do {
            return try JSONDecoder().decode(T.self, from: Data(response.body))
        } catch {
            throw NetdiskError.protocolViolation("\(call): cannot decode the answer (\(error))")
        }
    }
}

/// A number Baidu sometimes sends as a string.
struct LenientInt: Decodable, Sendable {
    var value: Int
    init(_ value: Int) { self.value = value }
    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int.self) {
            value = number
        } else if let text = try? container.decode(String.self), let number = Int(text) {
            value = number
        } else if let number = try? container.decode(Double.self) {
            value = Int(number)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected a number")
        }
    }
}

/// The file object of list, create, filemetas and precreate's rapid hit.
struct WireEntry: Decodable, Sendable {
    var fs_id: UInt64?
    var path: String?
    var server_filename: String?
    var name: String?
    var size: LenientInt?
    var isdir: LenientInt?
    var md5: String?
    var server_mtime: LenientInt?
    var local_mtime: LenientInt?
    var mtime: LenientInt?
    var dlink: String?

    /// The wire form of an entry already decoded (an answer recovered from a listing).
    init(_ entry: RemoteEntry) {
        fs_id = entry.fsID
        path = entry.path
        server_filename = entry.name
        size = LenientInt(Int(entry.size))
        isdir = LenientInt(entry.isDirectory ? 1 : 0)
        md5 = entry.md5
        server_mtime = LenientInt(Int(entry.serverMtime))
        local_mtime = LenientInt(Int(entry.localMtime))
    }

    func entry() throws(NetdiskError) -> RemoteEntry {
        guard let fsID = fs_id, let path else { throw NetdiskError.protocolViolation("file object without fs_id or path") }
        let name = server_filename ?? name ?? String(path.split(separator: "/").last ?? "")
        return RemoteEntry(fsID: fsID, path: path, name: name, size: Int64(size?.value ?? 0),
                           isDirectory: (isdir?.value ?? 0) != 0, md5: md5,
                           serverMtime: Int64(server_mtime?.value ?? mtime?.value ?? 0),
                           localMtime: Int64(local_mtime?.value ?? 0))
    }
}
