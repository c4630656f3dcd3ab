import Foundation
import Hummingbird

/// precreate (both forms), locateupload, superfile2 and create, with Baidu's strictness.
extension Emulator {
    func precreate(_ call: Call) async throws -> Response {
        guard call.isPost else { throw BaiduFailure.badParameter }
        let streamingAllowed = call.request.uri.path == "/api/precreate"
        let path = try RemotePath.normalize(call.fields["path"])
        let rtype = call.fields.int("rtype") ?? 0
        if call.fields["isdir"] == "1" {
            let record = try await store.place(NewFile(path: path, isDir: true), rtype: rtype, quota: options.quota)
            return Reply.json(["errno": 0, "return_type": 2, "path": record.path, "info": entry(record),
                               "request_id": Random.requestID()])
        }
        let size = call.fields.int64("size")
        // Placeholder entries (empty strings, one per part) with a real size: Duplicati's OAuth form.
        let placeholdersAllowed = options.profile.xpanAcceptsPlaceholderBlocks && size != nil
        guard let blockList = call.fields.stringArray("block_list"), !blockList.isEmpty,
              blockList.allSatisfy({ Self.isMD5($0) || (placeholdersAllowed && $0.isEmpty) }) else {
            throw BaiduFailure(2, "block_list missing or invalid")
        }
        if blockList.count > options.profile.maxParts { throw BaiduFailure(2, "block_list has more than \(options.profile.maxParts) parts") }
        if size == nil && !streamingAllowed { throw BaiduFailure(2, "size is required") }
        if let size {
            guard size >= 0 else { throw BaiduFailure.badParameter }
            if size == 0 && options.profile.refuseEmptyFiles { throw BaiduFailure(2, "param error: empty file") }
            if size > tier.maxFileSize { throw BaiduFailure(31365, "file is too large") }
            // An overwrite (rtype 3) frees the replaced file's bytes.
            let replaced = rtype == 3 ? (try await store.file(at: path)).map { $0.isDir ? 0 : $0.size } ?? 0 : 0
            if try await store.usedBytes() - replaced + size > options.quota { throw BaiduFailure(-10, "quota exceeded") }
            if let contentMD5 = call.fields["content-md5"], let sliceMD5 = call.fields["slice-md5"],
               let hit = try await findContent(md5: contentMD5.lowercased(), size: size, sliceMD5: sliceMD5.lowercased()) {
                let record = try await store.place(
                    NewFile(path: path, isDir: false, size: size, blocks: hit.blocks, partSize: hit.partSize,
                            contentMD5: contentMD5.lowercased(), localMtime: call.fields.int64("local_mtime")),
                    rtype: rtype, quota: options.quota)
                return Reply.json(["errno": 0, "return_type": 2, "path": record.path, "info": entry(record),
                                   "request_id": Random.requestID()])
            }
            if let open = try await store.resumableUpload(path: path, size: size, blockList: blockList,
                                                          notBefore: now() - options.uploadIDLifetime) {
                let stored = Dictionary(try await store.parts(of: open.uploadID).map { ($0.partseq, $0.md5) },
                                        uniquingKeysWith: { a, _ in a })
                let missing = blockList.indices.filter { stored[$0] != blockList[$0] }
                return Reply.json(["errno": 0, "return_type": 1, "path": path, "uploadid": open.uploadID,
                                   "block_list": missing, "request_id": Random.requestID()])
            }
        }
        let id = try await store.createUpload(path: path, size: size, blockList: blockList, rtype: rtype)
        return Reply.json(["errno": 0, "return_type": 1, "path": path, "uploadid": id,
                           "block_list": Array(blockList.indices), "request_id": Random.requestID()])
    }

    /// The upload hosts, in an order that rotates with every call: Baidu does not promise the same
    /// host twice, so a client must pin the host per uploadid (and journal it to resume elsewhere).
    func locateupload() -> Response {
        var servers = uploadURLs
        if !servers.isEmpty {
            let turn = locateTurn.withLock { turn -> Int in defer { turn &+= 1 }; return turn }
            servers = Array(servers[(turn % servers.count)...] + servers[..<(turn % servers.count)])
        }
        return Reply.json([
            "error_code": 0, "host": servers.first.map { String($0.dropFirst("http://".count)) } ?? "",
            "servers": servers.map { ["server": $0] }, "bak_servers": [[String: String]](),
            "quic_servers": [[String: String]](), "client_ip": "127.0.0.1", "expire": 60,
            "request_id": Random.requestID(),
        ])
    }

    /// An open upload that is known and not past the uploadid lifetime.
    private func liveUpload(_ id: String?, forPart: Bool = false) async throws -> UploadRecord {
        guard let id, !id.isEmpty, let upload = try await store.upload(id) else {
            throw BaiduFailure(31355, "uploadid not found")
        }
        if upload.created + options.uploadIDLifetime < now() {
            // The real superfile2 says it this way, spelling included (DESIGN.md research).
            if forPart && options.profile.expiredUploadAnswers31299 { throw BaiduFailure(31299, "Expried Time Not Match") }
            throw BaiduFailure(31363, "upload state expired")
        }
        return upload
    }

    func superfile2(_ call: Call) async throws -> Response {
        guard call.isPost else { throw BaiduFailure(31023, "superfile2 needs POST") }
        guard let partseq = call.query.int("partseq"), partseq >= 0 else {
            throw BaiduFailure(31023, "partseq missing or out of range")
        }
        if partseq >= options.profile.maxParts { throw BaiduFailure(31299, "Invalid param keylist") }
        let upload = try await liveUpload(call.query["uploadid"], forPart: true)
        if let path = call.query["path"], (try? RemotePath.normalize(path)) != upload.path {
            throw BaiduFailure(31355, "uploadid does not belong to this path")
        }
        guard let boundary = Multipart.boundary(contentType: call.request.headers[.contentType]) else {
            throw BaiduFailure(31023, "multipart/form-data body required")
        }
        let body = try await collectPart(call.request, limit: tier.maxSliceSize + (1 << 20))
        stats.received(body.readableBytes)
        guard let range = Multipart.fieldRange(in: body, boundary: boundary) else {
            throw BaiduFailure(31023, "multipart field 'file' not found")
        }
        if range.count > tier.maxSliceSize { throw BaiduFailure(31364, "part is larger than the account's slice size") }
        let md5 = try await blobs.storePart(uploadID: upload.uploadID, partseq: partseq, buffer: body, range: range,
                                            corrupt: call.has(.badMD5))
        try await store.recordPart(uploadID: upload.uploadID, partseq: partseq, size: Int64(range.count), md5: md5,
                                   host: call.listener)
        stats.part(uploadID: upload.uploadID, path: upload.path, partseq: partseq)
        return Reply.json(["md5": md5, "partseq": String(partseq), "uploadid": upload.uploadID,
                           "request_id": Random.requestID()])
    }

    /// Collects a superfile2 body into one buffer sized from Content-Length up front (no regrowth copies).
    /// Bodies are bounded by the tier's slice size plus framing; larger ones are 31364 before they are read.
    private func collectPart(_ request: Request, limit: Int) async throws -> ByteBuffer {
        let declared = request.headers[.contentLength].flatMap(Int.init)
        if let declared, declared > limit { throw BaiduFailure(31364, "part is larger than the account's slice size") }
        var buffer = ByteBufferAllocator().buffer(capacity: declared ?? (1 << 20))
        for try await chunk in request.body {
            if buffer.readableBytes + chunk.readableBytes > limit {
                throw BaiduFailure(31364, "part is larger than the account's slice size")
            }
            var chunk = chunk
            buffer.writeBuffer(&chunk)
        }
        return buffer
    }

    func create(_ call: Call) async throws -> Response {
        guard call.isPost else { throw BaiduFailure.badParameter }
        let path = try RemotePath.normalize(call.fields["path"])
        let rtype = call.fields.int("rtype") ?? 0
        let localCtime = call.fields.int64("local_ctime")
        let localMtime = call.fields.int64("local_mtime")
        if call.fields["isdir"] == "1" {
            let record = try await store.place(NewFile(path: path, isDir: true, localCtime: localCtime, localMtime: localMtime),
                                               rtype: rtype, quota: options.quota)
            return created(record)
        }
        guard let size = call.fields.int64("size"), size >= 0 else { throw BaiduFailure(2, "size is required") }
        guard let blockList = call.fields.stringArray("block_list"), !blockList.isEmpty,
              blockList.allSatisfy(Self.isMD5) else {
            throw BaiduFailure(2, "block_list missing or invalid")
        }
        let blocks = blockList.map { $0.lowercased() }
        if size == 0 && options.profile.refuseEmptyFiles { throw BaiduFailure(2, "param error: empty file") }
        if size > tier.maxFileSize { throw BaiduFailure(31365, "file is too large") }
        let isEmptyFile = size == 0 && blocks == [KnownMD5.empty]

        guard let uploadID = call.fields["uploadid"], !uploadID.isEmpty else {
            if isEmptyFile {
                return created(try await store.place(
                    NewFile(path: path, isDir: false, contentMD5: KnownMD5.empty, localCtime: localCtime, localMtime: localMtime),
                    rtype: rtype, quota: options.quota))
            }
            if options.profile.rapidCreateUnavailable {
                throw BaiduFailure(31500, "rapid upload through create is not available")
            }
            // Rapid upload: one content MD5 of content the server already holds.
            guard blocks.count == 1, let hit = try await findContent(md5: blocks[0], size: size, sliceMD5: nil) else {
                throw BaiduFailure(31079, "file md5 not found, you should use upload API to upload the whole file")
            }
            return created(try await store.place(
                NewFile(path: path, isDir: false, size: size, blocks: hit.blocks, partSize: hit.partSize,
                        contentMD5: blocks[0], localCtime: localCtime, localMtime: localMtime),
                rtype: rtype, quota: options.quota))
        }

        let upload = try await liveUpload(uploadID)
        if upload.path != path { throw BaiduFailure(10, "create path differs from the precreate path") }
        if let declared = upload.size, declared != size, options.profile.createMustRepeatPrecreateSize { throw BaiduFailure(10, "size differs from precreate") }
        let parts = try await store.parts(of: uploadID)
        if isEmptyFile && parts.isEmpty {
            let record = try await store.commitUpload(uploadID, file: NewFile(
                path: path, isDir: false, contentMD5: KnownMD5.empty, localCtime: localCtime, localMtime: localMtime),
                rtype: call.fields.int("rtype") ?? upload.rtype, quota: options.quota)
            return created(record)
        }
        try Self.validate(parts: parts, blocks: blocks, size: size)
        try await blobs.commitParts(uploadID: uploadID, parts: parts.map { ($0.partseq, $0.md5) })
        let record = try await store.commitUpload(uploadID, file: NewFile(
            path: path, isDir: false, size: size, blocks: blocks, partSize: parts[0].size,
            contentMD5: parts.count == 1 ? parts[0].md5 : nil, localCtime: localCtime, localMtime: localMtime),
            rtype: call.fields.int("rtype") ?? upload.rtype, quota: options.quota)
        await blobs.discardParts(uploadID: uploadID, partseqs: parts.map(\.partseq))
        return created(record)
    }

    /// The create rules: parts 0..<n all present, from one upload host, MD5s equal to the block list
    /// in order, every part but the last of the first part's size (≥ 4 MiB when there are several),
    /// and the size the sum of the parts.
    static func validate(parts: [PartRecord], blocks: [String], size: Int64) throws {
        if parts.count < blocks.count || parts.map(\.partseq) != Array(0..<parts.count) {
            throw BaiduFailure(31363, "parts are missing")
        }
        if parts.count > blocks.count { throw BaiduFailure(10, "more parts were uploaded than block_list names") }
        if Set(parts.map(\.host)).count > 1 {
            throw BaiduFailure(10, "parts of one uploadid arrived on different upload hosts")
        }
        if parts.map(\.md5) != blocks { throw BaiduFailure(10, "block_list does not match the uploaded parts") }
        if parts.count > 1 {
            let slice = parts[0].size
            if slice < Int64(Tier.minFirstPart) { throw BaiduFailure(31299, "first part is smaller than 4 MiB") }
            if parts.dropLast().contains(where: { $0.size != slice }) {
                throw BaiduFailure(10, "every part but the last must have the same size")
            }
            if let last = parts.last, last.size > slice || last.size == 0 {
                throw BaiduFailure(10, "the last part must be non-empty and no larger than the others")
            }
        }
        if parts.reduce(Int64(0), { $0 + $1.size }) != size { throw BaiduFailure(10, "size does not match the parts") }
    }

    private func created(_ record: FileRecord) -> Response {
        var object = entry(record)
        object["errno"] = 0
        object["name"] = record.path
        object["ctime"] = record.ctime
        object["mtime"] = record.mtime
        object["request_id"] = Random.requestID()
        return Reply.json(object)
    }

    static func isMD5(_ s: String) -> Bool {
        s.utf8.count == 32 && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) || (65...70).contains($0) }
    }

    /// Content the server holds with this MD5 and size (and slice MD5, when given). Content MD5s of
    /// multi-part files are computed lazily, only for files of the asked size, so uploads never pay for it.
    func findContent(md5: String, size: Int64, sliceMD5: String?) async throws -> (blocks: [String], partSize: Int64)? {
        var hit = try await store.content(md5: md5, size: size)
        if hit == nil {
            for record in try await store.filesWithoutContentMD5(size: size) {
                let computed = try await blobs.contentMD5(blocks: record.blocks, size: record.size)
                try await store.setContentMD5(computed, for: record)
                if computed == md5 {
                    hit = (record.blocks, record.partSize)
                    break
                }
            }
        }
        guard let hit else { return nil }
        if let sliceMD5 {
            let head = try await blobs.read(blocks: hit.blocks, partSize: max(hit.partSize, 1), offset: 0,
                                            length: Int(min(size, 256 << 10)))
            let actual = head.withUnsafeReadableBytes { BlobStore.md5(bytes: $0) }
            if actual != sliceMD5 { return nil }
        }
        return hit
    }

    /// The true content MD5 of a stored file (computed and remembered on first use).
    func contentMD5(of record: FileRecord) async throws -> String {
        if let known = record.contentMD5 { return known }
        let computed = try await blobs.contentMD5(blocks: record.blocks, size: record.size)
        try await store.setContentMD5(computed, for: record)
        return computed
    }
}
