import Foundation
import Hummingbird
import Logging
import Synchronization

/// The emulated account: state, rules and the request dispatcher shared by all listeners.
final class Emulator: Sendable {
    let options: EmulatorOptions
    let tier: Tier
    let store: MetadataStore
    let blobs: BlobStore
    let faults: FaultInjector
    let stats = EmulatorStats()
    /// Rotates locateupload's host order (see `locateupload`).
    let locateTurn = Mutex(0)
    let logger: Logger
    private let urls = Mutex<(main: String, uploads: [String])>(("", []))

    init(options: EmulatorOptions, dataDirectory: String, logger: Logger) throws {
        self.options = options
        tier = Tier(vipType: options.vipType)
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        store = try MetadataStore(path: dataDirectory + "/metadata.sqlite")
        blobs = try BlobStore(root: dataDirectory)
        faults = FaultInjector(rules: try FaultSpec.parse(options.faults))
        self.logger = logger
    }

    var baseURL: String { urls.withLock { $0.main } }
    var uploadURLs: [String] { urls.withLock { $0.uploads } }
    func setURLs(main: String, uploads: [String]) { urls.withLock { $0 = (main, uploads) } }

    /// Which endpoint a request is, and which error shape it answers with.
    struct Route: Sendable {
        enum Family: Sendable { case xpan, pcs, oauth, admin }
        var endpoint: String
        var family: Family
    }

    func route(_ path: String, method: String?) -> Route? {
        switch (path, method) {
        case ("/oauth/2.0/device/code", _): return Route(endpoint: "device_code", family: .oauth)
        case ("/oauth/2.0/token", _): return Route(endpoint: "token", family: .oauth)
        case ("/rest/2.0/xpan/nas", "uinfo"): return Route(endpoint: "uinfo", family: .xpan)
        case ("/api/quota", _): return Route(endpoint: "quota", family: .xpan)
        case ("/rest/2.0/xpan/file", "list"): return Route(endpoint: "list", family: .xpan)
        case ("/rest/2.0/xpan/file", "precreate"), ("/api/precreate", _): return Route(endpoint: "precreate", family: .xpan)
        case ("/rest/2.0/xpan/file", "create"), ("/api/create", _): return Route(endpoint: "create", family: .xpan)
        case ("/rest/2.0/xpan/file", "filemanager"): return Route(endpoint: "filemanager", family: .xpan)
        case ("/rest/2.0/xpan/multimedia", "filemetas"): return Route(endpoint: "filemetas", family: .xpan)
        case ("/rest/2.0/pcs/file", "locateupload"): return Route(endpoint: "locateupload", family: .pcs)
        case ("/rest/2.0/pcs/superfile2", _): return Route(endpoint: "superfile2", family: .pcs)
        default:
            if path.hasPrefix("/file/") { return Route(endpoint: "download", family: .pcs) }
            if path.hasPrefix("/cdn/") { return Route(endpoint: "cdn", family: .pcs) }
            if path.hasPrefix("/__emulator/") { return Route(endpoint: "admin", family: .admin) }
            return nil
        }
    }

    /// One call as the handlers see it.
    struct Call: Sendable {
        var request: Request
        var query: Fields
        /// Query and form fields merged (form wins).
        var fields: Fields
        var listener: Int
        var actions: [FaultAction]
        var isPost: Bool { request.method == .post }
        func has(_ action: FaultAction) -> Bool { actions.contains(action) }
    }

    func respond(_ request: Request, listener: Int) async -> Response {
        let query = Fields(encoded: request.uri.query ?? "")
        guard let route = route(request.uri.path, method: query["method"]) else {
            return Reply.json(["error_code": 3, "error_msg": "Unsupported openapi method", "request_id": Random.requestID()],
                              status: 404)
        }
        if route.family == .admin { return await admin(request) }
        stats.call(route.endpoint)
        return await Reply.$requestIDAsFloat.withValue(options.profile.requestIDAsFloat) {
            await respond(request, route: route, query: query, listener: listener)
        }
    }

    private func respond(_ request: Request, route: Route, query: Fields, listener: Int) async -> Response {
        let actions = faults.fire(route.endpoint)
        var call = Call(request: request, query: query, fields: query, listener: listener, actions: actions)
        do {
            if !actions.isEmpty {
                stats.fault(route.endpoint)
                if let early = try await applyFaults(actions, route: route, call: call) { return early }
            }
            if route.endpoint != "superfile2", request.method == .post,
               (request.headers[.contentType] ?? "").lowercased().hasPrefix("application/x-www-form-urlencoded") {
                var body = request
                let buffer = try await body.collectBody(upTo: 8 << 20)
                call.request = body
                call.fields.merge(encoded: String(buffer: buffer))
            }
            switch route.family {
            case .xpan, .pcs:
                if route.endpoint != "cdn" { try await authorize(call.query["access_token"], family: route.family) }
                if !options.profile.webAPIAcceptsOAuth, ["/api/precreate", "/api/create"].contains(request.uri.path) {
                    // The web API's upload calls want a BDUSS cookie; an OAuth token is not a login there.
                    throw BaiduFailure(-6, "user not logged in (the web API needs a cookie login)")
                }
            default: break
            }
            let response = try await handle(route.endpoint, call)
            for case .delayAfter(let seconds) in actions { try await Task.sleep(for: .milliseconds(Int64(seconds * 1000))) }
            return call.has(.resetAfter) ? Reply.reset() : response
        } catch let failure as BaiduFailure {
            switch route.family {
            case .xpan: return Reply.xpanError(failure)
            default:
                let status = [31326, 31360].contains(failure.code) ? 403 : (failure.code == -9 || failure.code == 31066 ? 404 : 400)
                return Reply.pcsError(failure, status: status)
            }
        } catch {
            logger.warning("\(route.endpoint) failed: \(error)")
            return Reply.json(["error_code": 31021, "error_msg": "internal error: \(error)"], status: 500)
        }
    }

    private func handle(_ endpoint: String, _ call: Call) async throws -> Response {
        switch endpoint {
        case "device_code": return try await deviceCode(call)
        case "token": return try await token(call)
        case "uinfo": return uinfo()
        case "quota": return try await quota()
        case "list": return try await list(call)
        case "filemetas": return try await filemetas(call)
        case "precreate": return try await precreate(call)
        case "create": return try await create(call)
        case "filemanager": return try await filemanager(call)
        case "locateupload": return locateupload()
        case "superfile2": return try await superfile2(call)
        case "download": return try await download(call)
        case "cdn": return try await cdn(call)
        default: throw BaiduFailure(3, "unsupported")
        }
    }

    /// Applies the faults that fired; returns a response when a fault answers the call itself.
    private func applyFaults(_ actions: [FaultAction], route: Route, call: Call) async throws -> Response? {
        for case .delay(let seconds) in actions {
            try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
        }
        for action in actions {
            switch action {
            case .status(let code):
                return Reply.json(["error_code": 31021, "error_msg": "injected HTTP \(code)"], status: code)
            case .reset:
                return Reply.reset()
            case .errno(let code):
                let failure = BaiduFailure(code, code == 31034 ? "hit frequency limit" : "injected errno \(code)")
                return route.family == .xpan ? Reply.xpanError(failure) : Reply.pcsError(failure)
            case .expireToken:
                try await store.expireAllTokens()
            case .expireUpload:
                try await store.expireUploads(call.query["uploadid"])
            case .delay, .delayAfter, .badMD5, .oauthError, .resetAfter:
                break
            }
        }
        return nil
    }

    /// Every API call needs a live access_token in the query.
    /// xpan: missing/unknown → errno -6, expired → errno 111. pcs hosts: error_code 31045 for both.
    private func authorize(_ token: String?, family: Route.Family) async throws {
        let state: TokenState
        if let token, !token.isEmpty { state = try await store.tokenState(token) } else { state = .unknown }
        switch (state, family) {
        case (.valid, _): return
        case (.expired, .xpan): throw BaiduFailure(111, "access token expired")
        case (.unknown, .xpan): throw BaiduFailure(-6, "invalid access token")
        default: throw BaiduFailure(31045, "user not exists (access token invalid or expired)")
        }
    }

    // MARK: account

    private func uinfo() -> Response {
        Reply.json(["errno": 0, "baidu_name": "emulator", "netdisk_name": "emulator", "avatar_url": "",
                    "vip_type": options.vipType, "uk": 3_141_592_653, "request_id": Random.requestID()])
    }

    private func quota() async throws -> Response {
        let used = try await store.usedBytes()
        return Reply.json(["errno": 0, "total": options.quota, "used": used, "free": max(0, options.quota - used),
                           "expire": false, "request_id": Random.requestID()])
    }

    func entry(_ record: FileRecord) -> [String: Any] {
        var entry: [String: Any] = [
            "fs_id": record.fsID, "path": record.path, "server_filename": record.name, "filename": record.name,
            "size": record.size, "isdir": record.isDir ? 1 : 0, "category": record.isDir ? 6 : 6,
            "server_mtime": record.mtime, "server_ctime": record.ctime,
            "local_mtime": record.localMtime, "local_ctime": record.localCtime,
        ]
        if !record.isDir { entry["md5"] = record.serverMD5 }
        return entry
    }
}
