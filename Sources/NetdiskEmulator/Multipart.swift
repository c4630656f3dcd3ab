import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Finds the `file` field of a multipart/form-data body with memchr/memcmp, no per-byte Swift loops.
///
/// superfile2 bodies are collected whole (at most one slice plus a little framing: 4–32 MiB, bounded
/// by the tier) and then parsed in place; the part's bytes are never copied out of the buffer.
enum Multipart {
    static func boundary(contentType: String?) -> String? {
        guard let contentType, contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for parameter in contentType.split(separator: ";").dropFirst() {
            let kv = parameter.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0].lowercased() == "boundary" {
                return String(kv[1]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        return nil
    }

    /// The byte range (within the readable bytes of `body`) of the field named `field`.
    static func fieldRange(in body: ByteBuffer, boundary: String, field: String = "file") -> Range<Int>? {
        let delimiter = Array(("--" + boundary).utf8)
        let headerEnd = Array("\r\n\r\n".utf8)
        let closing = Array(("\r\n--" + boundary).utf8)
        return body.withUnsafeReadableBytes { bytes -> Range<Int>? in
            var cursor = 0
            guard var start = find(delimiter, in: bytes, from: cursor) else { return nil }
            while true {
                cursor = start + delimiter.count
                guard let headersEnd = find(headerEnd, in: bytes, from: cursor) else { return nil }
                let headers = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[cursor..<headersEnd]), as: UTF8.self)
                let dataStart = headersEnd + headerEnd.count
                guard let dataEnd = find(closing, in: bytes, from: dataStart) else { return nil }
                if headers.lowercased().contains("name=\"\(field)\"") { return dataStart..<dataEnd }
                start = dataEnd + 2
            }
        }
    }

    /// memchr for the needle's first byte, then memcmp: both are vectorised in libc.
    private static func find(_ needle: [UInt8], in haystack: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from <= haystack.count, let base = haystack.baseAddress, let head = needle.first else { return nil }
        return needle.withUnsafeBytes { n -> Int? in
            var position = from
            while haystack.count - position >= n.count {
                guard let hit = memchr(base + position, Int32(head), haystack.count - position - n.count + 1) else { return nil }
                let index = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(hit, n.baseAddress!, n.count) == 0 { return index }
                position = index + 1
            }
            return nil
        }
    }
}
