import Foundation

/// An OAuth token pair and when its access token expires.
public struct TokenPair: Sendable, Equatable, Codable {
    public var accessToken: String
    public var refreshToken: String
    /// Seconds since 1970 at which the access token expires.
    public var expiresAt: Double
    /// The lifetime the server granted, used to refresh a little before expiry.
    public var lifetime: Double
    /// The OAuth endpoint that issued the pair; a pair from the emulator is never sent to Baidu.
    public var issuer: String

    public init(accessToken: String, refreshToken: String, expiresAt: Double, lifetime: Double, issuer: String) {
        self.accessToken = accessToken
        self.refreshToken = refreshToken
        self.expiresAt = expiresAt
        self.lifetime = lifetime
        self.issuer = issuer
    }

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token"
        case refreshToken = "refresh_token"
        case expiresAt = "expires_at"
        case lifetime = "expires_in"
        case issuer = "oauth_endpoint"
    }

    /// True when the access token expires within a tenth of its lifetime (at most 5 minutes).
    public func needsRefresh(now: Double = Date().timeIntervalSince1970) -> Bool {
        now >= expiresAt - min(300, lifetime / 10)
    }
}

/// The credentials file (`credentials.json`, mode 0600, written atomically).
public struct CredentialStore: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    public func load() throws(NetdiskError) -> TokenPair? {
        guard let bytes = try AtomicFile.read(path) else { return nil }
        do {
            return try JSONDecoder().decode(TokenPair.self, from: Data(bytes))
        } catch {
            throw NetdiskError.localIO("\(path) is not a valid credentials file; run `netdiskfs login`")
        }
    }

    public func save(_ tokens: TokenPair) throws(NetdiskError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do { data = try encoder.encode(tokens) } catch { throw NetdiskError.localIO("cannot encode credentials: \(error)") }
        try AtomicFile.write([UInt8](data), to: path, mode: 0o600)
    }

    public func loadAsync() async throws(NetdiskError) -> TokenPair? {
        let store = self
        return try await BlockingIO.run { () -> Result<TokenPair?, NetdiskError> in
            do throws(NetdiskError) { return .success(try store.load()) } catch { return .failure(error) }
        }
    }

    public func saveAsync(_ tokens: TokenPair) async throws(NetdiskError) {
        let store = self
        try await BlockingIO.run { () -> Result<Void, NetdiskError> in
            do throws(NetdiskError) { try store.save(tokens); return .success(()) } catch { return .failure(error) }
        }
    }
}
