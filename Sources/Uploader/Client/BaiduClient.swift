import Foundation
import Logging
import Synchronization

/// The one client that speaks DESIGN.md's protocol, to Baidu and to the emulator alike.
///
/// Every call carries the access token in the query, decodes errors through ``NetdiskError/fromBaidu(code:message:)``,
/// refreshes the token once on -6/111/31045 (see ``TokenManager``), and retries transient failures with
/// bounded, jittered backoff (``RetryPolicy``). Part uploads go to the host locateupload gave for their
/// uploadid, and read the part straight from the caller's memory.
public final class BaiduClient: NetdiskAPI {
    public let endpoints: Endpoints
    public let tokens: TokenManager
    public let oauth: OAuthClient
    public let retryPolicy: RetryPolicy
    private let transport: HTTPTransport
    private let logger: Logger
    private let uploads = UploadHostRegistry()
    /// Download connections held at once, account-wide (set from the tier by the mount and `get`).
    public let downloadSlots = DownloadSlots()
    /// The account-wide pause on 31034.
    public let frequencyControl: FrequencyControl
    /// The host the last locateupload gave, reused for new uploadids while its answer is valid: a
    /// small file then costs precreate, superfile2 and create. Each uploadid still keeps one host.
    private let recentUploadHost = Mutex<(host: String, until: ContinuousClock.Instant)?>(nil)

    public init(endpoints: Endpoints, oauth: OAuthClient, tokens: TokenManager,
                transport: HTTPTransport = .shared, retryPolicy: RetryPolicy = RetryPolicy(),
                logger: Logger = Logger(label: "netdiskfs.client")) {
        self.endpoints = endpoints
        self.oauth = oauth
        self.tokens = tokens
        self.transport = transport
        self.retryPolicy = retryPolicy
        self.logger = logger
        frequencyControl = FrequencyControl(logger: logger)
    }

    // MARK: - Account

    private struct UserInfoAnswer: Decodable {
        var baidu_name: String?
        var netdisk_name: String?
        var uk: LenientInt?
        var vip_type: LenientInt?
    }

    public func accountInfo() async throws(NetdiskError) -> AccountInfo {
        let answer = try await call("uinfo", UserInfoAnswer.self) { token in
            HTTPRequest(method: .get, url: URLBuilder(self.endpoints.api, "/rest/2.0/xpan/nas")
                .adding("method", "uinfo").adding("access_token", token).string)
        }
        let name = answer.baidu_name.flatMap { $0.isEmpty ? nil : $0 } ?? answer.netdisk_name ?? ""
        return AccountInfo(name: name, uk: Int64(answer.uk?.value ?? 0),
                           tier: AccountTier(rawValue: answer.vip_type?.value ?? 0) ?? .normal)
    }

    private struct QuotaAnswer: Decodable {
        var total: LenientInt
        var used: LenientInt
    }

    public func quota() async throws(NetdiskError) -> Quota {
        let answer = try await call("quota", QuotaAnswer.self) { token in
            HTTPRequest(method: .get, url: URLBuilder(self.endpoints.api, "/api/quota")
                .adding("checkfree", "1").adding("checkexpire", "1").adding("access_token", token).string)
        }
        return Quota(total: Int64(answer.total.value), used: Int64(answer.used.value))
    }

    // MARK: - Listing and download

    private struct ListAnswer: Decodable { var list: [WireEntry]? }

    public func list(directory: String, start: Int, limit: Int) async throws(NetdiskError) -> [RemoteEntry] {
        let answer = try await call("list", ListAnswer.self) { token in
            HTTPRequest(method: .get, url: URLBuilder(self.endpoints.api, "/rest/2.0/xpan/file")
                .adding("method", "list").adding("dir", directory).adding("start", String(start))
                .adding("limit", String(min(max(limit, 1), 1000))).adding("order", "name")
                .adding("access_token", token).string)
        }
        var entries = [RemoteEntry]()
        entries.reserveCapacity(answer.list?.count ?? 0)
        for wire in answer.list ?? [] { entries.append(try wire.entry()) }
        return entries
    }

    /// Every entry of a directory, paging with `limit` 1000 until a short page.
    public func listAll(directory: String) async throws(NetdiskError) -> [RemoteEntry] {
        var all = [RemoteEntry]()
        while true {
            let page = try await list(directory: directory, start: all.count, limit: 1000)
            all.append(contentsOf: page)
            if page.count < 1000 { return all }
        }
    }

    public func downloadLinks(fsIDs: [UInt64]) async throws(NetdiskError) -> [UInt64: String] {
        guard !fsIDs.isEmpty else { return [:] }
        let ids = "[" + fsIDs.map(String.init).joined(separator: ",") + "]"
        let answer = try await call("filemetas", ListAnswer.self) { token in
            HTTPRequest(method: .get, url: URLBuilder(self.endpoints.api, "/rest/2.0/xpan/multimedia")
                .adding("method", "filemetas").adding("fsids", ids).adding("dlink", "1")
                .adding("access_token", token).string)
        }
        var links = [UInt64: String]()
        for wire in answer.list ?? [] {
            if let id = wire.fs_id, let link = wire.dlink { links[id] = link }
        }
        return links
    }

    public func download(dlink: String, offset: Int64, length: Int) async throws(NetdiskError) -> [UInt8] {
        guard length > 0 else { return [] }
        await downloadSlots.acquire()
        let slots = downloadSlots
        defer { Task { await slots.release() } }
        let response = try await execute("download") { token in
            let separator = dlink.contains("?") ? "&" : "?"
            return HTTPRequest(method: .get, url: dlink + separator + "access_token=" + FormEncoding.percentEncode(token),
                               headers: ["User-Agent: \(BaiduProtocol.downloadUserAgent)",
                                         "Range: bytes=\(offset)-\(offset + Int64(length) - 1)"],
                               timeout: Self.transferDeadline(bytes: length), stallTimeout: Self.downloadStallSeconds,
                               expectedResponseSize: length, maxResponseSize: max(length, 1 << 16),
                               followRedirects: true)
        } accept: { response throws(NetdiskError) in
            if response.status == 416 { return }
            try ResponseDecoding.check(response)
        }
        switch response.status {
        case 416:
            return []
        case 206:
            return response.body
        default:
            // A server that ignores Range sends the whole file: cut out the range asked for.
            let start = Int(min(offset, Int64(response.body.count)))
            return Array(response.body[start..<min(start + length, response.body.count)])
        }
    }

    public func download(dlink: String, offset: Int64, into sink: BufferSink) async throws(NetdiskError) -> Int {
        let length = sink.capacity
        guard length > 0 else { return 0 }
        await downloadSlots.acquire()
        let slots = downloadSlots
        defer { Task { await slots.release() } }
        let response = try await execute("download") { token in
            let separator = dlink.contains("?") ? "&" : "?"
            var request = HTTPRequest(method: .get, url: dlink + separator + "access_token=" + FormEncoding.percentEncode(token),
                                      headers: ["User-Agent: \(BaiduProtocol.downloadUserAgent)",
                                                "Range: bytes=\(offset)-\(offset + Int64(length) - 1)"],
                                      timeout: Self.transferDeadline(bytes: length), stallTimeout: Self.downloadStallSeconds,
                                      maxResponseSize: 1 << 16, followRedirects: true)
            request.sink = sink
            return request
        } accept: { response throws(NetdiskError) in
            if response.status == 416 || response.status == 206 { return }
            try ResponseDecoding.check(response)
            // A 200 answer ignores Range: its body is the whole file, refused past 64 KiB.
        }
        switch response.status {
        case 416:
            return 0
        case 206:
            return sink.count
        default:
            let start = Int(min(offset, Int64(response.body.count)))
            let count = min(length, response.body.count - start)
            response.body.withUnsafeBytes { sink.base.copyMemory(from: $0.baseAddress! + start, byteCount: count) }
            return count
        }
    }

    public func stream(dlink: String, offset: Int64, length: Int64, into sink: ResponseSink) async throws(NetdiskError) {
        guard length > 0 else { return }
        await downloadSlots.acquire()
        let slots = downloadSlots
        defer { Task { await slots.release() } }
        let token = try await tokens.accessToken()
        let separator = dlink.contains("?") ? "&" : "?"
        // No whole-transfer deadline (a reader may take its time); the stall limit bounds each wait,
        // and a paused transfer is not a stalled one (curl skips the speed check while paused).
        let request = HTTPRequest(method: .get, url: dlink + separator + "access_token=" + FormEncoding.percentEncode(token),
                                  headers: ["User-Agent: \(BaiduProtocol.downloadUserAgent)",
                                            "Range: bytes=\(offset)-\(offset + length - 1)"],
                                  timeout: 0, stallTimeout: Self.downloadStallSeconds, maxResponseSize: 1 << 16,
                                  followRedirects: true)
        var streaming = request
        streaming.sink = sink
        let response = try await transport.send(streaming, logger: logger)
        guard response.status == 206 else {
            try ResponseDecoding.check(response)
            throw .http(status: response.status)
        }
    }

    /// Every network wait is bounded (doc/SEMANTICS.md, "Bounded waits"): a transfer under
    /// ``HTTPRequest/stallRate`` (1 KiB/s) for its stall time (60 s, downloads 30 s) fails, and a
    /// part or a range has a deadline of 30 s plus its size at 64 KiB/s (4.5 min for 16 MiB), other
    /// calls 120 s. A trickle ends in a clean, retried error, never a FUSE thread waiting forever.
    public static let downloadStallSeconds = 30

    static func transferDeadline(bytes: Int) -> Double { 30 + Double(bytes) / Double(64 << 10) }

    // MARK: - Upload

    private struct PrecreateAnswer: Decodable {
        var return_type: LenientInt?
        var uploadid: String?
        var block_list: [LenientInt]?
        var info: WireEntry?
    }

    public func precreate(path: String, size: Int64, blockList: [String], contentMD5: String?, sliceMD5: String?,
                          localMtime: Int64?, policy: ConflictPolicy) async throws(NetdiskError) -> PrecreateResult {
        var form: [(String, String)] = [("path", path), ("size", String(size)), ("isdir", "0"), ("autoinit", "1"),
                                        ("rtype", String(policy.rawValue)), ("block_list", Self.jsonList(blockList))]
        if let contentMD5 { form.append(("content-md5", contentMD5)) }
        if let sliceMD5 { form.append(("slice-md5", sliceMD5)) }
        if let localMtime { form.append(("local_mtime", String(localMtime))) }
        let answer = try await call("precreate", PrecreateAnswer.self) { token in
            self.formPost(self.endpoints.api, "/rest/2.0/xpan/file", query: [("method", "precreate")], token: token, form: form)
        }
        if answer.return_type?.value == 2 {
            return PrecreateResult(uploadID: answer.uploadid, missingParts: [], rapidHit: try answer.info?.entry())
        }
        guard let uploadID = answer.uploadid, !uploadID.isEmpty else {
            throw NetdiskError.protocolViolation("precreate answered without uploadid")
        }
        return PrecreateResult(uploadID: uploadID, missingParts: (answer.block_list ?? []).map(\.value), rapidHit: nil)
    }

    public func precreateStreaming(path: String, strategy: StreamingStrategy, provisionalSize: Int64,
                                   policy: ConflictPolicy) async throws(NetdiskError) -> String {
        let answer: PrecreateAnswer
        switch strategy {
        case .webPlaceholder:
            let form: [(String, String)] = [("path", path), ("isdir", "0"), ("autoinit", "1"), ("rtype", String(policy.rawValue)),
                                            ("block_list", Self.jsonList(BaiduProtocol.placeholderBlockList))]
            // No refresh on a rejected token: the web API may want a cookie login whatever the token
            // (errno -6), and a refresh would spend the single-use refresh token for nothing.
            answer = try await call("precreate (web, streaming)", PrecreateAnswer.self, refreshOnRejectedToken: false) { token in
                self.formPost(self.endpoints.api, "/api/precreate", query: [], token: token, form: form)
            }
        case .xpanProvisional:
            // Duplicati's OAuth form: a size and one empty entry per declared part. The true size and
            // the real MD5s come at create.
            let form: [(String, String)] = [("path", path), ("size", String(max(1, provisionalSize))), ("isdir", "0"),
                                            ("autoinit", "1"), ("rtype", String(policy.rawValue)),
                                            ("block_list", Self.jsonList([""]))]
            answer = try await call("precreate (xpan, streaming)", PrecreateAnswer.self) { token in
                self.formPost(self.endpoints.api, "/rest/2.0/xpan/file", query: [("method", "precreate")], token: token, form: form)
            }
        case .none:
            throw NetdiskError.protocolViolation("no streaming strategy: the cached path uploads this file")
        }
        guard let uploadID = answer.uploadid, !uploadID.isEmpty else {
            throw NetdiskError.protocolViolation("streaming precreate answered without uploadid")
        }
        if strategy == .webPlaceholder { await uploads.markStreaming(uploadID) }
        return uploadID
    }

    private struct LocateAnswer: Decodable {
        struct Server: Decodable { var server: String }
        var servers: [Server]?
        var host: String?
        /// Seconds the answer is valid.
        var expire: LenientInt?
    }

    /// The upload host for an uploadid: asked once from locateupload, then pinned.
    public func uploadHost(path: String, uploadID: String) async throws(NetdiskError) -> String {
        try await uploads.host(for: uploadID) { [self] () async -> Result<String, NetdiskError> in
            if let reused = recentUploadHost.withLock({ recent in recent.flatMap { $0.until > .now ? $0.host : nil } }) {
                return .success(reused)
            }
            do throws(NetdiskError) {
                return .success(try await locateUpload(path: path, uploadID: uploadID))
            } catch {
                return .failure(error)
            }
        }
    }

    public func pinnedUploadHost(path: String, uploadID: String) async throws(NetdiskError) -> String? {
        try await uploadHost(path: path, uploadID: uploadID)
    }

    public func pinUploadHost(_ host: String, uploadID: String) async {
        await uploads.pin(host, for: uploadID)
    }

    public func forgetUploadHost(uploadID: String) async {
        // A host that stopped answering is not handed to the next upload either.
        if let failed = await uploads.pinnedHost(for: uploadID) {
            recentUploadHost.withLock { recent in if recent?.host == failed { recent = nil } }
        }
        await uploads.forget(uploadID)
    }

    private func locateUpload(path: String, uploadID: String) async throws(NetdiskError) -> String {
        let answer = try await call("locateupload", LocateAnswer.self) { token in
            HTTPRequest(method: .get, url: URLBuilder(self.endpoints.upload, "/rest/2.0/pcs/file")
                .adding("method", "locateupload").adding("appid", BaiduProtocol.appID).adding("path", path)
                .adding("uploadid", uploadID).adding("upload_version", "2.0").adding("access_token", token).string)
        }
        var candidates = (answer.servers ?? []).map(\.server)
        if let host = answer.host { candidates.append(host) }
        for candidate in candidates {
            // Uploads go over https only: an http:// host from locateupload is asked over https, unless
            // it is loopback (the emulator).
            var url = candidate.contains("://") ? candidate : "https://" + candidate
            if url.lowercased().hasPrefix("http://"), let target = try? URLPolicy.parse(url), !URLPolicy.isLoopback(host: target.host) {
                url = "https://" + url.dropFirst("http://".count)
            }
            if (try? URLPolicy.check(url)) != nil {
                logger.debug("uploadid \(uploadID) pinned to \(url)")
                let host = url.hasSuffix("/") ? String(url.dropLast()) : url
                let valid = min(60, max(0, answer.expire?.value ?? 0))
                if valid > 0 { recentUploadHost.withLock { $0 = (host, .now + .seconds(valid)) } }
                return host
            }
        }
        if candidates.isEmpty { return endpoints.upload }
        throw NetdiskError.protocolViolation("locateupload offered no usable host (\(candidates.joined(separator: ", ")))")
    }

    private struct PartAnswer: Decodable { var md5: String? }

    public func uploadPart(path: String, uploadID: String, partseq: Int, bytes: PartBytes) async throws(NetdiskError) -> String {
        let host = try await uploadHost(path: path, uploadID: uploadID)
        let frame = FormEncoding.multipartFrame(fieldName: "file", fileName: "part\(partseq)")
        let answer = try await call("superfile2", PartAnswer.self) { token in
            HTTPRequest(method: .post, url: URLBuilder(host, "/rest/2.0/pcs/superfile2")
                .adding("method", "upload").adding("type", "tmpfile").adding("path", path)
                .adding("uploadid", uploadID).adding("partseq", String(partseq)).adding("access_token", token).string,
                        headers: [frame.contentTypeHeader],
                        body: .multipart(prefix: frame.prefix, part: bytes, suffix: frame.suffix),
                        timeout: Self.transferDeadline(bytes: bytes.count), stallTimeout: 60)
        }
        guard let md5 = answer.md5, !md5.isEmpty else {
            throw NetdiskError.protocolViolation("superfile2 answered without md5")
        }
        return md5
    }

    public func create(path: String, size: Int64, uploadID: String, blockList: [String], localMtime: Int64?,
                       policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry {
        var form: [(String, String)] = [("path", path), ("size", String(size)), ("isdir", "0"),
                                        ("rtype", String(policy.rawValue)), ("uploadid", uploadID),
                                        ("block_list", Self.jsonList(blockList))]
        if let localMtime {
            form.append(("local_ctime", String(localMtime)))
            form.append(("local_mtime", String(localMtime)))
        }
        let streaming = await uploads.isStreaming(uploadID)
        let started = Int64(Date().timeIntervalSince1970)
        let entry = try await call("create", WireEntry.self, recover: { _ async -> WireEntry? in
            // The first create took effect and its answer was lost: the retry finds the uploadid spent.
            // Only a file that is provably this create's: the same size, made after it was sent, with the
            // local_mtime it gave (when it gave one) and, for one part, the same MD5. An older version
            // of the same size must never be taken for it: that would report a lost edit as saved.
            guard let found = await self.lookup(path), !found.isDirectory, found.size == size,
                  found.serverMtime >= started - 2,
                  localMtime.map({ found.localMtime == $0 }) ?? true,
                  blockList.count != 1 || found.md5 == nil || found.md5 == blockList[0] else { return nil }
            return WireEntry(found)
        }) { token in
            streaming
                ? self.formPost(self.endpoints.api, "/api/create", query: [], token: token, form: form)
                : self.formPost(self.endpoints.api, "/rest/2.0/xpan/file", query: [("method", "create")], token: token, form: form)
        }.entry()
        await uploads.forget(uploadID)
        return entry
    }

    public func rapidUpload(path: String, size: Int64, contentMD5: String, sliceMD5: String,
                            policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry? {
        let form: [(String, String)] = [("path", path), ("size", String(size)), ("isdir", "0"),
                                        ("rtype", String(policy.rawValue)), ("block_list", Self.jsonList([contentMD5])),
                                        ("content-md5", contentMD5), ("slice-md5", sliceMD5)]
        do throws(NetdiskError) {
            return try await call("create (rapid)", WireEntry.self) { token in
                self.formPost(self.endpoints.api, "/rest/2.0/xpan/file", query: [("method", "create")], token: token, form: form)
            }.entry()
        } catch {
            if Self.meansContentUnknown(error) { return nil }
            throw error
        }
    }

    /// The answers Baidu gives a rapid upload of content it does not hold (31079 "md5 not found", and the
    /// create-failed family when the one-entry block list does not match a stored file).
    static func meansContentUnknown(_ error: NetdiskError) -> Bool {
        switch error {
        case .createFailed, .server(code: 31079, message: _), .server(code: 31500, message: _), .uploadExpired: return true
        default: return false
        }
    }

    // MARK: - Directories and file management

    public func makeDirectory(path: String) async throws(NetdiskError) -> RemoteEntry {
        let form: [(String, String)] = [("path", path), ("isdir", "1"), ("rtype", String(ConflictPolicy.fail.rawValue))]
        return try await call("mkdir", WireEntry.self, recover: { error async -> WireEntry? in
            // A retried mkdir whose first attempt made the directory answers "exists": that is success.
            guard case .alreadyExists = error, let found = await self.lookup(path), found.isDirectory else { return nil }
            return WireEntry(found)
        }) { token in
            self.formPost(self.endpoints.api, "/rest/2.0/xpan/file", query: [("method", "create")], token: token, form: form)
        }.entry()
    }

    public func delete(paths: [String]) async throws(NetdiskError) {
        guard !paths.isEmpty else { return }
        try await fileManager("delete", fileList: paths.map { $0 as Any }, ondup: nil)
    }

    public func move(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError) {
        try await fileManager("move", fileList: [["path": from, "dest": toDirectory, "newname": newName, "ondup": ondup.rawValue]],
                              ondup: ondup, movedFrom: from, to: Self.join(toDirectory, newName))
    }

    public func copy(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError) {
        try await fileManager("copy", fileList: [["path": from, "dest": toDirectory, "newname": newName, "ondup": ondup.rawValue]],
                              ondup: ondup)
    }

    public func rename(path: String, newName: String) async throws(NetdiskError) {
        let parent = (path as NSString).deletingLastPathComponent
        try await fileManager("rename", fileList: [["path": path, "newname": newName]], ondup: nil,
                              movedFrom: path, to: Self.join(parent.isEmpty ? "/" : parent, newName))
    }

    private struct StatusAnswer: Decodable, Sendable {}

    private func fileManager(_ operation: String, fileList: [Any], ondup: DuplicatePolicy?,
                             movedFrom source: String? = nil, to target: String? = nil) async throws(NetdiskError) {
        let list: String
        do {
            let data = try JSONSerialization.data(withJSONObject: fileList, options: [.withoutEscapingSlashes])
            list = String(decoding: data, as: UTF8.self)
        } catch {
            throw NetdiskError.protocolViolation("cannot encode filelist: \(error)")
        }
        var form: [(String, String)] = [("async", "0"), ("filelist", list)]
        if let ondup { form.append(("ondup", ondup.rawValue)) }
        // Only a delete is safely "done" when its retry finds nothing; a move's source could have been absent all along.
        let done: ((NetdiskError) -> Bool)? = operation == "delete" ? { if case .notFound = $0 { return true }; return false } : nil
        // A retried move or rename whose first attempt took effect answers "not found" (or "exists"):
        // success when the source is gone and the target is there.
        var recover: (@Sendable (NetdiskError) async -> StatusAnswer?)?
        if let source, let target {
            recover = { _ in
                guard await self.lookup(source) == nil, await self.lookup(target) != nil else { return nil }
                return StatusAnswer()
            }
        }
        _ = try await call(operation, StatusAnswer.self, alreadyDoneAfterRetry: done, recover: recover) { token in
            self.formPost(self.endpoints.api, "/rest/2.0/xpan/file", query: [("method", "filemanager"), ("opera", operation)],
                          token: token, form: form)
        }
    }

    // MARK: - Plumbing

    private static func jsonList(_ items: [String]) -> String {
        "[" + items.map { "\"\($0)\"" }.joined(separator: ",") + "]"
    }

    private func formPost(_ base: String, _ path: String, query: [(String, String)], token: String,
                          form: [(String, String)]) -> HTTPRequest {
        var url = URLBuilder(base, path)
        url.query = query + [("access_token", token)]
        return HTTPRequest(method: .post, url: url.string,
                           headers: ["Content-Type: application/x-www-form-urlencoded"],
                           body: .bytes(Array(FormEncoding.encode(form).utf8)))
    }

    /// Sends, checks and decodes one call with refresh and retries.
    ///
    /// `recover` makes a call idempotent: when a retried call fails, its first attempt may have taken
    /// effect with only the answer lost (a reset after the server acted). `recover` looks for that
    /// effect (the moved file, the created directory) and returns it as the answer: never a false
    /// EEXIST, ENOENT or EIO for something that was done.
    private func call<T: Decodable>(_ name: String, _ type: T.Type, alreadyDoneAfterRetry: ((NetdiskError) -> Bool)? = nil,
                                    refreshOnRejectedToken: Bool = true,
                                    recover: (@Sendable (NetdiskError) async -> T?)? = nil,
                                    _ build: (String) -> HTTPRequest) async throws(NetdiskError) -> T {
        let attempts = AttemptLog()
        let response: HTTPResponse
        do throws(NetdiskError) {
            response = try await execute(name, build, alreadyDoneAfterRetry: alreadyDoneAfterRetry,
                                         refreshOnRejectedToken: refreshOnRejectedToken, attempts: attempts) { response throws(NetdiskError) in
                try ResponseDecoding.check(response)
            }
        } catch {
            if attempts.retried, let recover, let found = await recover(error) {
                logger.info("\(name): \(error) after a retry, but the first attempt had taken effect")
                return found
            }
            throw error
        }
        return try ResponseDecoding.decode(T.self, from: response, call: name)
    }

    /// Whether a call was sent more than once (so its first attempt may have acted unseen).
    private final class AttemptLog: @unchecked Sendable {
        var retried = false
    }

    /// The entry at a path, from its parent's listing; nil when absent or when the listing fails.
    private func lookup(_ path: String) async -> RemoteEntry? {
        let parent = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        do throws(NetdiskError) {
            return try await listAll(directory: parent.isEmpty ? "/" : parent).first { $0.name == name }
        } catch {
            return nil
        }
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory == "/" ? "/" + name : directory + "/" + name
    }

    /// The retry loop: one token refresh on -6/111/31045, backoff on transient failures, nothing else retried.
    ///
    /// `alreadyDoneAfterRetry` recognises the answer a retried call gets when its first attempt did reach the
    /// server before the connection failed (a delete retried after a reset finds nothing to delete).
    private func execute(_ name: String, _ build: (String) -> HTTPRequest,
                         alreadyDoneAfterRetry: ((NetdiskError) -> Bool)? = nil, refreshOnRejectedToken: Bool = true,
                         attempts: AttemptLog? = nil,
                         accept: (HTTPResponse) throws(NetdiskError) -> Void) async throws(NetdiskError) -> HTTPResponse {
        var retries = 0
        var refreshed = !refreshOnRejectedToken
        var refreshedToken: String?
        while true {
            let token: String
            if let refreshedToken { token = refreshedToken } else { token = try await tokens.accessToken() }
            refreshedToken = nil
            await frequencyControl.waitTurn()
            do throws(NetdiskError) {
                let response = try await transport.send(build(token), logger: logger)
                try accept(response)
                await frequencyControl.succeeded()
                return response
            } catch {
                if case .rateLimited(let code) = error { await frequencyControl.limited(code: code) }
                if case .tokenInvalid = error, !refreshed {
                    refreshed = true
                    logger.debug("\(name): access token rejected (\(error)); refreshing once")
                    refreshedToken = try await tokens.refresh(rejected: token)
                    continue
                }
                if retries > 0, let alreadyDoneAfterRetry, alreadyDoneAfterRetry(error) {
                    logger.debug("\(name): \(error) after a retry; the first attempt had taken effect")
                    return HTTPResponse(status: 200, body: Array("{}".utf8))
                }
                guard retryPolicy.shouldRetry(error, afterRetries: retries) else {
                    logger.debug("\(name) failed: \(error)")
                    throw error
                }
                retries += 1
                attempts?.retried = true
                let delay = retryPolicy.delay(beforeRetry: retries)
                logger.info("\(name): \(error); retry \(retries) of \(retryPolicy.maxRetries) in \(Int(delay * 1000)) ms")
                try await sleep(seconds: delay)
            }
        }
    }
}
