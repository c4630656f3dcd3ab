import COpenSSL

/// Incremental MD5 on libcrypto's EVP interface.
///
/// Baidu identifies parts and files by MD5; the engine's CPU budget is measured against
/// `openssl md5`, so this uses the same implementation rather than a Swift one.
public struct MD5Hasher: ~Copyable {
    private let context: OpaquePointer

    public init() {
        guard let context = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
        EVP_DigestInit_ex(context, EVP_md5(), nil)
        self.context = context
    }

    deinit { EVP_MD_CTX_free(context) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(context, base, bytes.count)
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Lower-case hex digest, the form Baidu uses everywhere.
    public consuming func finalizeHex() -> String {
        var digest = [UInt8](repeating: 0, count: 16)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &digest, &length)
        return hexString(digest)
    }

    public static func hex(of bytes: UnsafeRawBufferPointer) -> String {
        var hasher = MD5Hasher()
        hasher.update(bytes)
        return hasher.finalizeHex()
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

func hexString(_ bytes: [UInt8]) -> String {
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}
