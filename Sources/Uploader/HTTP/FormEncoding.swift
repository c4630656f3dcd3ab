/// `application/x-www-form-urlencoded` and query-string encoding, and multipart framing for one part.
public enum FormEncoding {
    private static let unreserved: Set<UInt8> = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8))
    private static let hex = Array("0123456789ABCDEF".utf8)

    public static func percentEncode(_ value: String) -> String {
        var out = [UInt8]()
        out.reserveCapacity(value.utf8.count)
        for byte in value.utf8 {
            if unreserved.contains(byte) {
                out.append(byte)
            } else {
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0x0f)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func encode(_ fields: [(String, String)]) -> String {
        fields.map { "\(percentEncode($0.0))=\(percentEncode($0.1))" }.joined(separator: "&")
    }

    /// The bytes around a single multipart file field, and the Content-Type header that names the boundary.
    public struct MultipartFrame: Sendable {
        public var prefix: [UInt8]
        public var suffix: [UInt8]
        public var contentTypeHeader: String
    }

    public static func multipartFrame(fieldName: String, fileName: String) -> MultipartFrame {
        var generator = SystemRandomNumberGenerator()
        let boundary = "netdiskfs-" + String(generator.next(), radix: 16) + String(generator.next(), radix: 16)
        let prefix = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(fieldName)\"; filename=\"\(fileName)\"\r\n"
            + "Content-Type: application/octet-stream\r\n\r\n"
        let suffix = "\r\n--\(boundary)--\r\n"
        return MultipartFrame(prefix: Array(prefix.utf8), suffix: Array(suffix.utf8),
                              contentTypeHeader: "Content-Type: multipart/form-data; boundary=\(boundary)")
    }
}

/// Builds `base + path + ?query` with every value percent-encoded.
struct URLBuilder {
    var base: String
    var path: String
    var query: [(String, String)] = []

    init(_ base: String, _ path: String) {
        self.base = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.path = path
    }

    func adding(_ name: String, _ value: String) -> URLBuilder {
        var copy = self
        copy.query.append((name, value))
        return copy
    }

    var string: String {
        query.isEmpty ? base + path : base + path + "?" + FormEncoding.encode(query)
    }
}
