import Foundation
import Hummingbird

/// list, filemetas and filemanager.
extension Emulator {
    func list(_ call: Call) async throws -> Response {
        let dir = try RemotePath.normalize(call.fields["dir"] ?? "/")
        let start = max(0, call.fields.int("start") ?? 0)
        let limit = min(1000, max(1, call.fields.int("limit") ?? 1000))
        guard let records = try await store.list(directory: dir, start: start, limit: limit,
                                                 order: call.fields["order"] ?? "name",
                                                 descending: call.fields["desc"] == "1",
                                                 foldersOnly: call.fields["folder"] == "1") else {
            throw BaiduFailure.notFound(dir)
        }
        return Reply.json(["errno": 0, "guid_info": "", "guid": 0, "list": records.map(entry),
                           "request_id": Random.requestID()])
    }

    func filemetas(_ call: Call) async throws -> Response {
        guard let raw = call.fields.jsonArray("fsids") else { throw BaiduFailure.badParameter }
        let ids = raw.compactMap { ($0 as? NSNumberConvertible)?.int64Value ?? Int64("\($0)") }
        let records = try await store.files(fsIDs: ids)
        if records.isEmpty { throw BaiduFailure(42213, "fs_id not found") }
        var list: [[String: Any]] = []
        for record in records {
            var item = entry(record)
            if call.fields["dlink"] == "1", !record.isDir {
                let id = try await store.createDlink(fsID: record.fsID, lifetime: options.dlinkLifetime)
                item["dlink"] = "\(baseURL)/file/\(id)?fid=\(record.fsID)&dstime=\(Int(now()))&rt=pr&sign=\(Random.hex(8))"
            }
            list.append(item)
        }
        return Reply.json(["errno": 0, "list": list, "names": [String: String](), "request_id": Random.requestID()])
    }

    /// opera=delete|move|copy|rename. A failed item sets the top-level errno to that item's errno
    /// (e.g. -9 not found, -8 exists); `info` lists every item.
    func filemanager(_ call: Call) async throws -> Response {
        guard call.isPost else { throw BaiduFailure.badParameter }
        guard let opera = call.fields["opera"], let items = call.fields.jsonArray("filelist"), !items.isEmpty else {
            throw BaiduFailure.badParameter
        }
        let defaultOndup = call.fields["ondup"] ?? "fail"
        var info: [[String: Any]] = []
        var firstError = 0
        for item in items {
            let dict = item as? [String: Any]
            let rawPath = (item as? String) ?? (dict?["path"] as? String)
            var code = 0
            do {
                let path = try RemotePath.normalize(rawPath)
                switch opera {
                case "delete":
                    code = try await store.delete([path]).first?.1 ?? 0
                case "move", "copy":
                    let dest = try RemotePath.normalize(dict?["dest"] as? String)
                    let newName = (dict?["newname"] as? String) ?? RemotePath.name(path)
                    let target = try RemotePath.normalize(RemotePath.join(dest, newName))
                    try await store.transfer(from: path, to: target, copy: opera == "copy",
                                             ondup: (dict?["ondup"] as? String) ?? defaultOndup, quota: options.quota)
                case "rename":
                    guard let newName = dict?["newname"] as? String else { throw BaiduFailure.badParameter }
                    let target = try RemotePath.normalize(RemotePath.join(RemotePath.parent(path), newName))
                    try await store.transfer(from: path, to: target, copy: false,
                                             ondup: (dict?["ondup"] as? String) ?? defaultOndup, quota: options.quota)
                default:
                    throw BaiduFailure.badParameter
                }
            } catch let failure as BaiduFailure {
                code = failure.code
            }
            if code != 0, firstError == 0 { firstError = code }
            info.append(["errno": code, "path": rawPath ?? ""])
        }
        return Reply.json(["errno": firstError, "info": info, "taskid": 0, "request_id": Random.requestID()])
    }
}

/// JSON numbers arrive as NSNumber on Linux and Darwin alike.
protocol NSNumberConvertible { var int64Value: Int64 { get } }
extension NSNumber: NSNumberConvertible {}
