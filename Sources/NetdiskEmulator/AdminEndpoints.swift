import Foundation
import Hummingbird

/// `/__emulator/`: what tests and benchmarks need to see and steer. No token needed.
extension Emulator {
    func admin(_ request: Request) async -> Response {
        do {
            switch (request.method, request.uri.path) {
            case (.get, "/__emulator/files"):
                var files: [[String: Any]] = []
                for record in try await store.allFiles() {
                    var item: [String: Any] = ["path": record.path, "size": record.size, "isdir": record.isDir ? 1 : 0,
                                               "fs_id": record.fsID]
                    if !record.isDir { item["md5"] = try await contentMD5(of: record) }
                    files.append(item)
                }
                return Reply.json(["files": files])
            case (.get, "/__emulator/stats"):
                let s = stats.snapshot
                return Reply.json([
                    "calls": s.calls, "refreshes": s.refreshes, "bytes_received": s.bytesReceived,
                    "open_uploads": try await store.openUploadCount(),
                    "parts_by_upload": s.partsByUpload, "parts_by_path": s.partsByPath, "faults_fired": s.faultsFired,
                    "downloads_open": s.openDownloadsTotal, "downloads_peak": s.peakDownloads,
                    "downloads_peak_per_link": s.peakDownloadsPerLink, "downloads_refused": s.downloadsRefused,
                    "profile": options.profile.summary,
                ])
            case (.post, "/__emulator/stats/reset"):
                stats.reset()
                return Reply.json(["ok": true])
            case (.get, "/__emulator/faults"):
                return Reply.json(["rules": faults.rules.map { "\($0)" }])
            case (.post, "/__emulator/faults"):
                var body = request
                let text = String(buffer: try await body.collectBody(upTo: 1 << 20))
                do {
                    let rules = try FaultSpec.parse(text)
                    faults.replace(rules)
                    return Reply.json(["ok": true, "rules": rules.count])
                } catch {
                    return Reply.json(["ok": false, "error": "\(error)"], status: 400)
                }
            case (.post, "/__emulator/expire-tokens"):
                try await store.expireAllTokens()
                return Reply.json(["ok": true])
            case (.post, "/__emulator/expire-uploads"):
                try await store.expireUploads(nil)
                return Reply.json(["ok": true])
            case (.post, "/__emulator/expire-dlinks"):
                try await store.expireDlinks()
                return Reply.json(["ok": true])
            case (.post, "/__emulator/token"):
                // Skips the device flow for tests and benchmarks: a fresh access/refresh pair.
                return try await issueTokens()
            default:
                return Reply.json(["error": "unknown admin endpoint"], status: 404)
            }
        } catch {
            return Reply.json(["error": "\(error)"], status: 500)
        }
    }
}
