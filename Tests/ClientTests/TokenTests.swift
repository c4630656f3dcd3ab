import Foundation
import Testing
@testable import Uploader

/// Token refresh, its serialization, persistence of the new pair, and that no secret reaches a log.
@Suite struct TokenTests {
    @Test func tenConcurrentCallsAfterExpiryCauseExactlyOneRefresh() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let client = harness.client
        let before = try #require(try CredentialStore(path: harness.settings.paths.credentialsFile).load())
        #expect(try await harness.refreshes() == 0)
        _ = try await harness.admin(.post, "/__emulator/expire-tokens")
        try await withThrowingTaskGroup(of: Quota.self) { group in
            for index in 0..<10 {
                group.addTask { index.isMultiple(of: 2) ? try await client.quota() : Quota(total: try await client.accountInfo().uk, used: 0) }
            }
            var answers = 0
            for try await _ in group { answers += 1 }
            #expect(answers == 10)
        }
        #expect(try await harness.refreshes() == 1)
        #expect(await client.tokens.refreshCount == 1)
        // The new pair is on disk, replacing the used one, with mode 0600 and no temp file left behind.
        let after = try #require(try CredentialStore(path: harness.settings.paths.credentialsFile).load())
        #expect(after.refreshToken != before.refreshToken)
        #expect(after.accessToken == (await client.tokens.current)?.accessToken)
        #expect(try fileMode(harness.settings.paths.credentialsFile) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: harness.configDirectory) == ["credentials.json"])
        // And a fresh client built from disk works with it.
        let reloaded = try ClientFactory.makeClient(settings: harness.settings)
        _ = try await reloaded.quota()
        #expect(try await harness.refreshes() == 1)
    }

    @Test(arguments: ["uinfo:expire-token:n=1", "superfile2:expire-token:n=1", "list:errno=-6:n=1", "list:errno=111:n=1"])
    func tokenErrorRefreshesOnceAndRetries(_ spec: String) async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults(spec)
        _ = try await harness.client.accountInfo()
        _ = try await uploadFile(harness.client, path: "/apps/t/f", content: pattern(1000))
        _ = try await harness.client.list(directory: "/apps/t", start: 0, limit: 10)
        #expect(try await harness.refreshes() == 1)
    }

    @Test func persistentTokenRejectionGivesUpAfterOneRefresh() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        try await harness.setFaults("quota:errno=111")
        await #expect(throws: NetdiskError.tokenInvalid(code: 111)) { _ = try await harness.client.quota() }
        #expect(try await harness.refreshes() == 1)
        #expect(try await harness.calls("quota") == 2)
    }

    @Test func refusedRefreshTokenMeansLoggedOut() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        // Someone else spends the refresh token (refresh tokens work once) and keeps the new pair elsewhere.
        let saved = try #require(await harness.client.tokens.current)
        _ = try await harness.client.oauth.refresh(refreshToken: saved.refreshToken)
        _ = try await harness.admin(.post, "/__emulator/expire-tokens")
        let error = await #expect(throws: NetdiskError.self) { _ = try await harness.client.quota() }
        guard case .notLoggedIn(let why)? = error else { Issue.record("expected notLoggedIn, got \(String(describing: error))"); return }
        #expect(why.contains("netdiskfs login"))
    }

    @Test func refreshAdoptsAPairAnotherProcessSaved() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        _ = try await harness.admin(.post, "/__emulator/expire-tokens")
        // A second process (same config dir) refreshes first and saves its pair: our refresh token is spent.
        let other = try ClientFactory.makeClient(settings: harness.settings)
        let saved = try #require(await other.tokens.current)
        let newer = try await other.oauth.refresh(refreshToken: saved.refreshToken)
        try await other.tokens.install(newer)
        // Our rejected call finds the newer pair on disk instead of spending the dead refresh token.
        _ = try await harness.client.quota()
        #expect(try await harness.refreshes() == 1)
        #expect(await harness.client.tokens.current == newer)
    }

    @Test func deviceFlowAnswers() async throws {
        let harness = try await Harness.start { $0.faults = "token:slow_down:n=1" }
        defer { Task { await harness.stop() } }
        let oauth = harness.client.oauth
        let authorization = try await oauth.requestDeviceCode()
        #expect(!authorization.userCode.isEmpty && authorization.verificationURL.hasPrefix(harness.server.baseURL))
        #expect(authorization.interval >= 1 && authorization.expiresIn > 0)
        #expect(authorization.verificationURLWithCode.hasSuffix("?code=\(authorization.userCode)"))
        // The Harness login already made the first token poll, so n=1 fired there; arm fresh faults.
        try await harness.setFaults("token:slow_down:n=1")
        #expect(try await oauth.pollToken(deviceCode: authorization.deviceCode) == .slowDown)
        #expect(try await oauth.pollToken(deviceCode: authorization.deviceCode) == .pending)
        guard case .granted(let pair) = try await oauth.pollToken(deviceCode: authorization.deviceCode) else {
            Issue.record("third poll should grant"); return
        }
        #expect(pair.issuer == harness.server.baseURL && pair.lifetime > 0)
        #expect(try await oauth.pollToken(deviceCode: authorization.deviceCode) != .granted(pair))
        try await harness.setFaults("token:expired_token")
        let second = try await oauth.requestDeviceCode()
        #expect(try await oauth.pollToken(deviceCode: second.deviceCode) == .expired)
    }

    @Test func credentialsOfAnotherEndpointAreNotSent() async throws {
        let harness = try await Harness.start()
        defer { Task { await harness.stop() } }
        let settings = try ResolvedSettings.resolve(configDirectory: harness.configDirectory, endpoint: "http://127.0.0.1:1",
                                                    environment: [:])
        let client = try ClientFactory.makeClient(settings: settings)
        let error = await #expect(throws: NetdiskError.self) { _ = try await client.quota() }
        guard case .notLoggedIn? = error else { Issue.record("expected notLoggedIn, got \(String(describing: error))"); return }
    }

    @Test func debugLogOfAWholeSessionHoldsNoSecret() async throws {
        let harness = try await Harness.start { $0.faults = "superfile2:status=500:n=1" }
        defer { Task { await harness.stop() } }
        let client = harness.client
        let first = try #require(await client.tokens.current)
        _ = try await client.accountInfo()
        _ = try await client.quota()
        let entry = try await uploadFile(client, path: "/apps/t/a b.bin", content: pattern(50_000))
        let link = try #require(try await client.downloadLinks(fsIDs: [entry.fsID])[entry.fsID])
        _ = try await client.download(dlink: link, offset: 0, length: 100)
        _ = try await harness.admin(.post, "/__emulator/expire-tokens")
        _ = try await client.list(directory: "/apps/t", start: 0, limit: 10)
        await #expect(throws: NetdiskError.self) { try await client.delete(paths: ["/apps/t/none"]) }
        let second = try #require(await client.tokens.current)
        #expect(first.accessToken != second.accessToken)
        let log = harness.logs.text
        #expect(harness.logs.count > 10)
        #expect(log.contains("access_token=REDACTED"))
        for secret in [first.accessToken, first.refreshToken, second.accessToken, second.refreshToken,
                       harness.settings.clientSecret] {
            #expect(!log.contains(secret), "log leaks a secret")
        }
    }
}

func fileMode(_ path: String) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: path)
    return (attributes[.posixPermissions] as? Int ?? -1) & 0o777
}
