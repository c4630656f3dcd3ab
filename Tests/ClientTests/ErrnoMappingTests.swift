#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import Uploader

/// The one errno table (NetdiskError.fromBaidu) and how responses are routed through it.
@Suite struct ErrnoMappingTests {
    static let table: [(Int, NetdiskError)] = [
        (-6, .tokenInvalid(code: -6)), (111, .tokenInvalid(code: 111)), (31045, .tokenInvalid(code: 31045)),
        (31034, .rateLimited(code: 31034)), (20012, .rateLimited(code: 20012)),
        (-7, .invalidName(code: -7)), (31062, .invalidName(code: 31062)),
        (-8, .alreadyExists(code: -8)), (31061, .alreadyExists(code: 31061)),
        (-9, .notFound(code: -9)), (31066, .notFound(code: 31066)),
        (-10, .quotaExceeded),
        (2, .badParameter(code: 2, message: "m")), (31023, .badParameter(code: 31023, message: "m")),
        (10, .createFailed(code: 10)), (31190, .createFailed(code: 31190)),
        (31299, .firstPartTooSmall), (31355, .unknownUploadID), (31363, .uploadExpired), (31364, .partTooLarge),
        (31365, .fileTooLarge(limit: 0)), (31326, .badUserAgent), (31360, .dlinkExpired),
        (42, .server(code: 42, message: "m")),
    ]

    @Test(arguments: table.indices)
    func everyCodeMapsToItsType(_ index: Int) {
        let (code, expected) = Self.table[index]
        #expect(NetdiskError.fromBaidu(code: code, message: "m") == expected)
    }

    /// 31299 means three things on the real service, told apart by the text (DESIGN.md research).
    @Test func errno31299IsReadByItsMessage() {
        #expect(NetdiskError.fromBaidu(code: 31299, message: "Expried Time Not Match") == .uploadExpired)
        #expect(NetdiskError.fromBaidu(code: 31299, message: "Invalid param keylist") == .badParameter(code: 31299, message: "Invalid param keylist"))
        #expect(NetdiskError.fromBaidu(code: 31299, message: "first part is smaller than 4 MiB") == .firstPartTooSmall)
        #expect(BaiduClient.meansContentUnknown(.server(code: 31500, message: "")), "31500: rapid create not available here")
    }

    /// One 31034 pauses every call for a while; hits from calls already in flight do not stretch
    /// the pause, a hit after it doubles the next one, and a success lifts it.
    @Test func frequencyControlPausesTheAccountOnce() async {
        let control = FrequencyControl(logger: .init(label: "test"), minimum: .milliseconds(500), maximum: .seconds(4))
        await control.limited(code: 31034)
        await control.limited(code: 31034)
        #expect(await control.currentPause == .milliseconds(500), "a hit during the pause does not stretch it")
        var start = ContinuousClock.now
        await control.waitTurn()
        var waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(450), "every call waits out the pause: \(waited)")
        await control.limited(code: 31034)
        #expect(await control.currentPause == .seconds(1), "a hit after the pause doubles the next one")
        start = ContinuousClock.now
        await control.waitTurn()
        waited = ContinuousClock.now - start
        #expect(waited >= .milliseconds(950), "\(waited)")
        #expect(await control.isEngaged)
        await control.succeeded()
        #expect(await !control.isEngaged)
        start = ContinuousClock.now
        await control.waitTurn()
        #expect(ContinuousClock.now - start < .milliseconds(50))
    }

    @Test func posixMappingAndTransience() {
        #expect(NetdiskError.notFound(code: -9).posixErrno == ENOENT)
        #expect(NetdiskError.alreadyExists(code: -8).posixErrno == EEXIST)
        #expect(NetdiskError.quotaExceeded.posixErrno == ENOSPC)
        #expect(NetdiskError.fileTooLarge(limit: 0).posixErrno == EFBIG)
        #expect(NetdiskError.invalidName(code: -7).posixErrno == EINVAL)
        #expect(NetdiskError.rateLimited(code: 31034).isTransient)
        #expect(NetdiskError.http(status: 503).isTransient)
        #expect(NetdiskError.transport("reset").isTransient)
        #expect(!NetdiskError.http(status: 404).isTransient)
        #expect(!NetdiskError.tokenInvalid(code: 111).isTransient)
        #expect(!NetdiskError.createFailed(code: 10).isTransient)
    }

    @Test func responseShapes() throws {
        func check(_ status: Int, _ body: String) -> NetdiskError? {
            do { try ResponseDecoding.check(HTTPResponse(status: status, body: Array(body.utf8))); return nil } catch { return error }
        }
        #expect(check(200, #"{"errno":0,"list":[]}"#) == nil)
        #expect(check(200, #"{"errno":-9,"errmsg":"x"}"#) == .notFound(code: -9))
        #expect(check(400, #"{"error_code":31045,"error_msg":"user not exists"}"#) == .tokenInvalid(code: 31045))
        #expect(check(200, #"{"errno":"31034"}"#) == .rateLimited(code: 31034))
        // 5xx stays transient even when the body carries an error code.
        #expect(check(500, #"{"error_code":31021,"error_msg":"injected"}"#) == .http(status: 500))
        #expect(check(404, "not json") == .http(status: 404))
        // filemanager: the per-item errno says what went wrong.
        #expect(check(200, #"{"errno":12,"info":[{"errno":-9,"path":"/x"}]}"#) == .notFound(code: -9))
    }

    @Test func rapidUploadMissesAreRecognised() {
        #expect(BaiduClient.meansContentUnknown(.server(code: 31079, message: "")))
        #expect(BaiduClient.meansContentUnknown(.createFailed(code: 10)))
        #expect(!BaiduClient.meansContentUnknown(.quotaExceeded))
    }
}

@Suite struct URLPolicyTests {
    @Test(arguments: ["https://pan.baidu.com/x", "http://127.0.0.1:8080/a", "http://127.9.9.9/", "http://localhost:1/",
                      "http://[::1]:5/", "HTTP://LOCALHOST/"])
    func allowed(_ url: String) throws {
        try URLPolicy.check(url)
    }

    @Test(arguments: ["http://pan.baidu.com/x", "http://128.0.0.1/", "http://127.0.0.1.evil.com/", "http://10.0.0.1/",
                      "ftp://127.0.0.1/", "file:///etc/passwd", "http://[::2]/", "not a url"])
    func refused(_ url: String) {
        #expect(throws: NetdiskError.self) { try URLPolicy.check(url) }
    }

    @Test func transportRefusesBeforeConnecting() async {
        // The policy's refusal, not a failed DNS look-up or connection (a transport error).
        let error = await #expect(throws: NetdiskError.self) {
            _ = try await HTTPTransport.shared.send(HTTPRequest(method: .get, url: "http://example.invalid/"))
        }
        guard case .protocolViolation(let message)? = error else {
            Issue.record("expected the URL policy to refuse, got \(String(describing: error))")
            return
        }
        #expect(message.contains("http"), "\(message)")
    }

    @Test func endpointsMustBeSafe() throws {
        #expect(throws: NetdiskError.self) {
            _ = try ResolvedSettings.resolve(configDirectory: "/nonexistent-netdiskfs", endpoint: "http://192.168.1.1:80",
                                             environment: [:])
        }
        let local = try ResolvedSettings.resolve(configDirectory: "/nonexistent-netdiskfs", endpoint: "http://127.0.0.1:9/",
                                                 environment: [:])
        #expect(local.endpoints == Endpoints.single("http://127.0.0.1:9"))
        #expect(local.clientID == NetdiskConfig.emulatorClientID)
        let real = try ResolvedSettings.resolve(configDirectory: "/nonexistent-netdiskfs", environment: [:])
        #expect(real.endpoints == .baidu)
        #expect(throws: NetdiskError.self) { try real.requireAppCredentials() }
        let fromEnvironment = try ResolvedSettings.resolve(
            configDirectory: nil, environment: ["NETDISKFS_ENDPOINT": "http://127.0.0.1:7", "XDG_CONFIG_HOME": "/tmp/xdg-x"])
        #expect(fromEnvironment.endpoints.api == "http://127.0.0.1:7")
        #expect(fromEnvironment.paths.credentialsFile == "/tmp/xdg-x/netdiskfs/credentials.json")
    }
}
