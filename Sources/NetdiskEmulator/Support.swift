import Foundation

/// Form and query fields, `application/x-www-form-urlencoded` decoded. Later sources override earlier ones.
struct Fields: Sendable {
    private(set) var values: [String: String] = [:]

    init() {}

    init(encoded: String) {
        merge(encoded: encoded)
    }

    mutating func merge(encoded: String) {
        for pair in encoded.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = Fields.decode(parts[0])
            let value = parts.count > 1 ? Fields.decode(parts[1]) : ""
            values[key] = value
        }
    }

    private static func decode(_ s: Substring) -> String {
        let plusless = s.replacingOccurrences(of: "+", with: " ")
        return plusless.removingPercentEncoding ?? plusless
    }

    subscript(_ key: String) -> String? { values[key] }

    func int(_ key: String) -> Int? { values[key].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    func int64(_ key: String) -> Int64? { values[key].flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) } }

    /// A JSON array of strings (Baidu's `block_list`), or nil when absent or malformed.
    func stringArray(_ key: String) -> [String]? {
        guard let raw = values[key], let data = raw.data(using: .utf8),
              let array = try? JSONSerialization.jsonObject(with: data) as? [Any] else { return nil }
        var result: [String] = []
        for item in array {
            guard let s = item as? String else { return nil }
            result.append(s)
        }
        return result
    }

    /// A JSON array (filemanager's `filelist`, filemetas' `fsids`).
    func jsonArray(_ key: String) -> [Any]? {
        guard let raw = values[key], let data = raw.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [Any]
    }
}

enum Random {
    static func hex(_ bytes: Int) -> String {
        var g = SystemRandomNumberGenerator()
        var s = ""
        s.reserveCapacity(bytes * 2)
        for _ in 0..<bytes {
            let b = UInt8.random(in: 0...255, using: &g)
            s += String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16)
        }
        return s
    }

    static func requestID() -> Int64 { Int64.random(in: 1_000_000_000_000...9_000_000_000_000) }
}

func now() -> Double { Date().timeIntervalSince1970 }

/// Baidu's path rules: absolute, no empty or dot components, names without `\ ? | " > < : *`,
/// names ≤ 255 bytes and paths ≤ 1024 bytes. Violations are errno 31062.
enum RemotePath {
    static let forbidden: Set<Character> = ["\\", "?", "|", "\"", ">", "<", ":", "*"]

    static func normalize(_ raw: String?) throws(BaiduFailure) -> String {
        guard let raw, raw.hasPrefix("/") else { throw BaiduFailure(31062, "file name is invalid") }
        let components = raw.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let path = "/" + components.joined(separator: "/")
        if path.utf8.count > 1024 { throw BaiduFailure(31062, "file name is invalid: path longer than 1024 bytes") }
        for name in components {
            if name == "." || name == ".." || name.utf8.count > 255 || name.contains(where: forbidden.contains) {
                throw BaiduFailure(31062, "file name is invalid")
            }
        }
        return path
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    static func name(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    static func join(_ dir: String, _ name: String) -> String { dir == "/" ? "/" + name : dir + "/" + name }

    /// `a.txt` → `a(1).txt`: the name rtype=1 gives a conflicting upload.
    static func renamed(_ path: String, attempt: Int) -> String {
        let name = name(path)
        let dir = parent(path)
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return join(dir, "\(name[..<dot])(\(attempt))\(name[dot...])")
        }
        return join(dir, "\(name)(\(attempt))")
    }
}
