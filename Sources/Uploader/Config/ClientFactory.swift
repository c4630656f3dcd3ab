import Logging

/// Builds a ``BaiduClient`` from configuration: what every command (ls, put, get, mount) uses.
///
///     let settings = try ResolvedSettings.resolve(configDirectory: nil, endpoint: nil)
///     let client = try ClientFactory.makeClient(settings: settings)
///
/// Tests and `--emulator` modes log in non-interactively with ``loginToEmulator(settings:logger:)``.
public enum ClientFactory {
    public static func oauthClient(settings: ResolvedSettings, transport: HTTPTransport = .shared,
                                   logger: Logger = Logger(label: "netdiskfs.oauth")) -> OAuthClient {
        OAuthClient(endpoint: settings.endpoints.oauth, clientID: settings.clientID, clientSecret: settings.clientSecret,
                    transport: transport, logger: logger)
    }

    /// A client with the saved credentials (if any; calls fail with `.notLoggedIn` until `login`).
    public static func makeClient(settings: ResolvedSettings, transport: HTTPTransport = .shared,
                                  retryPolicy: RetryPolicy = RetryPolicy(),
                                  logger: Logger = Logger(label: "netdiskfs.client")) throws(NetdiskError) -> BaiduClient {
        let store = CredentialStore(path: settings.paths.credentialsFile)
        let saved = try store.load()
        let oauth = oauthClient(settings: settings, transport: transport, logger: logger)
        let tokens = TokenManager(tokens: saved, oauth: oauth, store: store, logger: logger)
        return BaiduClient(endpoints: settings.endpoints, oauth: oauth, tokens: tokens, transport: transport,
                           retryPolicy: retryPolicy, logger: logger)
    }

    /// Runs the device flow without a human (the emulator approves on its own) and saves the pair.
    ///
    /// For tests, benchmarks and `--emulator` modes only: real Baidu needs a person to approve.
    public static func loginToEmulator(settings: ResolvedSettings, transport: HTTPTransport = .shared,
                                       retryPolicy: RetryPolicy = RetryPolicy(),
                                       logger: Logger = Logger(label: "netdiskfs.client")) async throws(NetdiskError) -> BaiduClient {
        let client = try makeClient(settings: settings, transport: transport, retryPolicy: retryPolicy, logger: logger)
        let authorization = try await client.oauth.requestDeviceCode()
        let deadline = ContinuousClock.now + .seconds(authorization.expiresIn)
        var interval = 0.05
        while ContinuousClock.now < deadline {
            switch try await client.oauth.pollToken(deviceCode: authorization.deviceCode) {
            case .granted(let pair):
                try await client.tokens.install(pair)
                return client
            case .pending:
                break
            case .slowDown:
                interval *= 2
            case .expired:
                throw NetdiskError.notLoggedIn("the device code expired before approval")
            case .denied(let why):
                throw NetdiskError.notLoggedIn("authorization denied: \(why)")
            }
            try await sleep(seconds: interval)
        }
        throw NetdiskError.notLoggedIn("the device code expired before approval")
    }
}
