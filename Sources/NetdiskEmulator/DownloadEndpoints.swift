import Foundation
import Hummingbird

/// dlink downloads: the dlink checks token and User-Agent and redirects to a range-capable "CDN" URL
/// that streams from the blob files in 1 MiB reads.
extension Emulator {
    func download(_ call: Call) async throws -> Response {
        let userAgent = call.request.headers[.userAgent] ?? ""
        guard userAgent.contains("pan.baidu.com") else {
            throw BaiduFailure(31326, "user is not authorized, hitcode:119 (User-Agent must be pan.baidu.com)")
        }
        let id = String(call.request.uri.path.dropFirst("/file/".count))
        _ = try await liveDlink(id)
        return Response(status: .found, headers: [.location: "\(baseURL)/cdn/\(id)?sign=\(Random.hex(8))",
                                                  .contentLength: "0"])
    }

    private func liveDlink(_ id: String) async throws -> FileRecord {
        guard let link = try await store.dlink(id) else { throw BaiduFailure(31066, "file does not exist") }
        if link.expires < now() { throw BaiduFailure(31360, "url expired") }
        guard let record = try await store.files(fsIDs: [link.fsID]).first else {
            throw BaiduFailure(31066, "file does not exist")
        }
        return record
    }

    func cdn(_ call: Call) async throws -> Response {
        let id = String(call.request.uri.path.dropFirst("/cdn/".count))
        let record = try await liveDlink(id)
        let size = record.size
        var status = HTTPResponse.Status.ok
        var first: Int64 = 0
        var last = size - 1
        var headers: HTTPFields = [.acceptRanges: "bytes", .contentType: "application/octet-stream"]
        if let range = call.request.headers[.range] {
            guard let parsed = Self.parseRange(range, size: size) else {
                headers[.contentRange] = "bytes */\(size)"
                return Response(status: .rangeNotSatisfiable, headers: headers, body: .init())
            }
            (first, last) = parsed
            status = .partialContent
            headers[.contentRange] = "bytes \(first)-\(last)/\(size)"
        }
        let length = max(0, last - first + 1)
        let blobs = self.blobs
        let start = first
        let limit = options.vipType == 0 ? options.profile.normalAccountDownloadConnections : 0
        guard stats.downloadOpened(id, limit: limit) else {
            // What the research says a normal account gets for a second download connection.
            throw BaiduFailure(31034, "hit frequency limit: more than \(limit) download connection(s) on a normal account")
        }
        let stats = self.stats
        let body = ResponseBody(contentLength: Int(length)) { writer in
            // Counted closed once the last byte is handed over, so a client that starts its next
            // request on receiving it is never taken for two at once.
            var open = true
            defer { if open { stats.downloadClosed(id) } }
            var offset = start
            var remaining = length
            while remaining > 0 {
                let chunk = try await blobs.read(blocks: record.blocks, partSize: max(record.partSize, 1), offset: offset,
                                                 length: Int(min(remaining, 1 << 20)))
                if chunk.readableBytes == 0 { throw CancellationError() }
                offset += Int64(chunk.readableBytes)
                remaining -= Int64(chunk.readableBytes)
                try await writer.write(chunk)
            }
            open = false
            stats.downloadClosed(id)
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`; nil when unsatisfiable.
    static func parseRange(_ header: String, size: Int64) -> (Int64, Int64)? {
        guard header.hasPrefix("bytes="), size > 0 else { return nil }
        let spec = header.dropFirst("bytes=".count).split(separator: ",").first.map(String.init) ?? ""
        let ends = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard ends.count == 2 else { return nil }
        if ends[0].isEmpty {
            guard let suffix = Int64(ends[1]), suffix > 0 else { return nil }
            return (max(0, size - suffix), size - 1)
        }
        guard let start = Int64(ends[0]), start < size else { return nil }
        let end = ends[1].isEmpty ? size - 1 : min(Int64(ends[1]) ?? -1, size - 1)
        return end >= start ? (start, end) : nil
    }
}
