import Foundation
import Testing

@Suite("OAuth and access tokens")
struct OAuthTests {
    func deviceCode(_ emu: Emu) async throws -> String {
        let r = try await HTTP.send(emu.base + "/oauth/2.0/device/code?response_type=device_code&client_id=cid&scope=basic,netdisk")
        #expect(r.status == 200)
        for key in ["device_code", "user_code", "verification_url", "qrcode_url", "expires_in", "interval"] {
            #expect(r.json[key] != nil, "device/code lacks \(key)")
        }
        return r.json["device_code"] as! String
    }

    func poll(_ emu: Emu, _ code: String) async throws -> HTTPResult {
        try await HTTP.send(emu.base + "/oauth/2.0/token?grant_type=device_token&code=\(code)&client_id=cid&client_secret=sec")
    }

    @Test func deviceFlowIsPendingOnFirstPollThenIssuesTokens() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let code = try await deviceCode(emu)
            let first = try await poll(emu, code)
            #expect(first.status == 400)
            #expect(first.json["error"] as? String == "authorization_pending")
            let second = try await poll(emu, code)
            #expect(second.status == 200)
            let access = try #require(second.json["access_token"] as? String)
            #expect(second.json["refresh_token"] is String)
            #expect(int(second.json["expires_in"]) == 30 * 86_400)
            let uinfo = try await emu.get("/rest/2.0/xpan/nas?method=uinfo", token: access)
            #expect(uinfo.errno == 0)
            // A device code is redeemed once.
            #expect(try await poll(emu, code).json["error"] as? String == "invalid_grant")
        }
    }

    @Test func tokenFaultsHoldPendingSlowDownAndExpire() async throws {
        try await withEmulator(configure: { $0.faults = "token:pending:n=1:count=3" }) { (emu: Emu) async throws in
            let code = try await deviceCode(emu)
            for _ in 0..<3 { #expect(try await poll(emu, code).json["error"] as? String == "authorization_pending") }
            // The fault consumed those polls; the code's own first poll is still pending, then tokens.
            #expect(try await poll(emu, code).json["error"] as? String == "authorization_pending")
            #expect(try await poll(emu, code).json["access_token"] is String)
            try await emu.setFaults("token:slow_down:n=1")
            #expect(try await poll(emu, try await deviceCode(emu)).json["error"] as? String == "slow_down")
            try await emu.setFaults("token:expired_token")
            #expect(try await poll(emu, try await deviceCode(emu)).json["error"] as? String == "expired_token")
        }
    }

    @Test func refreshTokenWorksOnceAndIsCounted() async throws {
        try await withEmulator { (emu: Emu) async throws in
            let pair = try await HTTP.send(emu.base + "/__emulator/token", method: "POST").json
            let refresh = pair["refresh_token"] as! String
            let url = emu.base + "/oauth/2.0/token?grant_type=refresh_token&refresh_token=\(refresh)&client_id=cid&client_secret=sec"
            let first = try await HTTP.send(url)
            let newAccess = try #require(first.json["access_token"] as? String)
            #expect(first.json["refresh_token"] as? String != refresh)
            #expect(try await emu.get("/api/quota", token: newAccess).errno == 0)
            let reuse = try await HTTP.send(url)
            #expect(reuse.status == 400)
            #expect(reuse.json["error"] as? String == "expired_token")
            #expect(int(try await emu.stats()["refreshes"]) == 1)
        }
    }

    @Test func apiCallsNeedALiveToken() async throws {
        try await withEmulator { (emu: Emu) async throws in
            #expect(try await emu.get("/api/quota", token: "").errno == -6)
            #expect(try await emu.get("/rest/2.0/xpan/nas?method=uinfo", token: "nope").errno == -6)
            let pcs = try await emu.get("/rest/2.0/pcs/file?method=locateupload", token: "nope")
            #expect(pcs.errorCode == 31045)
            try await emu.admin("expire-tokens")
            #expect(try await emu.get("/api/quota").errno == 111)
            #expect(try await emu.get("/rest/2.0/pcs/file?method=locateupload").errorCode == 31045)
        }
    }

    /// The lifetime is 20 s, not a few: on CI's loaded machine, more than 6 s passed between the
    /// emulator issuing the test's token and the first call, which then already saw it expired.
    @Test func accessTokensExpireAfterTheirLifetime() async throws {
        try await withEmulator(configure: { $0.accessTokenLifetime = 20 }) { (emu: Emu) async throws in
            #expect(try await emu.get("/api/quota").errno == 0)
            try await Task.sleep(for: .milliseconds(20_500))
            #expect(try await emu.get("/api/quota").errno == 111)
        }
    }

    @Test func configuredClientIDIsEnforced() async throws {
        try await withEmulator(configure: { $0.clientID = "mine" }) { (emu: Emu) async throws in
            let r = try await HTTP.send(emu.base + "/oauth/2.0/device/code?response_type=device_code&client_id=other&scope=basic")
            #expect(r.json["error"] as? String == "invalid_client")
        }
    }
}

@Suite("Account")
struct AccountTests {
    @Test func uinfoReportsTheTierAndQuotaTheUsage() async throws {
        try await withEmulator(configure: { $0.vipType = 2; $0.quota = 1 << 30 }) { (emu: Emu) async throws in
            let uinfo = try await emu.get("/rest/2.0/xpan/nas?method=uinfo")
            #expect(int(uinfo.json["vip_type"]) == 2)
            #expect(uinfo.json["baidu_name"] is String && uinfo.json["uk"] != nil)
            try await emu.upload("/a/b.bin", randomData(1000))
            let quota = try await emu.get("/api/quota")
            #expect(int(quota.json["total"]).map(Int64.init) == 1 << 30)
            #expect(int(quota.json["used"]) == 1000)
        }
    }
}
