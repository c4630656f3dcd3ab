import Foundation
import Testing
@testable import Uploader

@Suite struct ConfigTests {
    @Test func configFileIsReadAndFlagsWin() throws {
        let directory = try TempDirectory.make()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try #"""
        {"client_id": "app", "client_secret": "sec", "remote_root": "apps/mine/",
         "endpoints": {"api": "https://api.example", "upload": "https://up.example/", "oauth": "https://oauth.example"}}
        """#.write(toFile: directory + "/config.json", atomically: true, encoding: .utf8)
        let settings = try ResolvedSettings.resolve(configDirectory: directory, environment: [:])
        #expect(settings.clientID == "app" && settings.clientSecret == "sec")
        #expect(settings.remoteRoot == "/apps/mine")
        #expect(settings.endpoints == Endpoints(api: "https://api.example", upload: "https://up.example", oauth: "https://oauth.example"))
        try settings.requireAppCredentials()
        let overridden = try ResolvedSettings.resolve(configDirectory: directory, endpoint: "http://127.0.0.1:4",
                                                      environment: ["NETDISKFS_ENDPOINT": "http://127.0.0.1:5"])
        #expect(overridden.endpoints == .single("http://127.0.0.1:4"))
        #expect(overridden.clientID == "app", "configured keys are kept for an emulator too")
        let fromEnvironment = try ResolvedSettings.resolve(configDirectory: directory, environment: ["NETDISKFS_ENDPOINT": "http://127.0.0.1:5"])
        #expect(fromEnvironment.endpoints == .single("http://127.0.0.1:5"))

        try "{not json".write(toFile: directory + "/config.json", atomically: true, encoding: .utf8)
        #expect(throws: NetdiskError.self) { _ = try ResolvedSettings.resolve(configDirectory: directory, environment: [:]) }
    }

    /// Config, cache, state and data all follow one rule, so they share a home.
    @Test func xdgDirectoriesFollowOneRule() {
        let home = ["HOME": "/home/u"]
        #expect(XDGDirectories.netdiskfs(.config, environment: home) == "/home/u/.config/netdiskfs")
        #expect(XDGDirectories.netdiskfs(.cache, environment: home) == "/home/u/.cache/netdiskfs")
        #expect(XDGDirectories.netdiskfs(.state, environment: home) == "/home/u/.local/state/netdiskfs")
        #expect(XDGDirectories.base(.data, environment: home) == "/home/u/.local/share")
        let xdg = ["HOME": "/home/u", "XDG_STATE_HOME": "/s", "XDG_CACHE_HOME": "relative/is/ignored"]
        #expect(XDGDirectories.netdiskfs(.state, environment: xdg) == "/s/netdiskfs")
        #expect(XDGDirectories.netdiskfs(.cache, environment: xdg) == "/home/u/.cache/netdiskfs")
        #expect(ConfigPaths.resolve(environment: home).directory == "/home/u/.config/netdiskfs")
        #expect(XDGDirectories.base(.config, environment: [:]).hasSuffix("/.config"), "HOME unset: the password database's home")
    }

    @Test func credentialsAreWrittenPrivatelyAndAtomically() throws {
        let directory = try TempDirectory.make() + "/nested/netdiskfs"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = CredentialStore(path: directory + "/credentials.json")
        #expect(try store.load() == nil)
        let pair = TokenPair(accessToken: "a", refreshToken: "r", expiresAt: 100, lifetime: 50, issuer: "http://127.0.0.1:1")
        let previous = umask(0)
        defer { umask(previous) }
        try store.save(pair)
        #expect(try fileMode(store.path) == 0o600)
        #expect(try fileMode(directory) == 0o700)
        // A file someone widened is replaced by a private one, never rewritten in place.
        chmod(store.path, 0o644)
        let inode = try FileManager.default.attributesOfItem(atPath: store.path)[.systemFileNumber] as? Int
        var second = pair
        second.refreshToken = "r2"
        try store.save(second)
        #expect(try fileMode(store.path) == 0o600)
        #expect(try FileManager.default.attributesOfItem(atPath: store.path)[.systemFileNumber] as? Int != inode)
        #expect(try store.load() == second)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["credentials.json"])
        try "garbage".write(toFile: store.path, atomically: false, encoding: .utf8)
        #expect(throws: NetdiskError.self) { _ = try store.load() }
    }

    @Test func expiryMarginScalesWithLifetime() {
        let pair = TokenPair(accessToken: "a", refreshToken: "r", expiresAt: 1000, lifetime: 2_592_000, issuer: "x")
        #expect(pair.needsRefresh(now: 701))
        #expect(!pair.needsRefresh(now: 699))
        let short = TokenPair(accessToken: "a", refreshToken: "r", expiresAt: 1000, lifetime: 10, issuer: "x")
        #expect(!short.needsRefresh(now: 998.9) && short.needsRefresh(now: 999.1))
    }
}
