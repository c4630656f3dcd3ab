import Foundation

/// Where netdiskfs keeps its files: `$XDG_CONFIG_HOME/netdiskfs` (default `~/.config/netdiskfs`).
public struct ConfigPaths: Sendable, Equatable {
    public var directory: String
    public var configFile: String { directory + "/config.json" }
    public var credentialsFile: String { directory + "/credentials.json" }

    public init(directory: String) { self.directory = directory }

    /// An explicit directory wins; then `$XDG_CONFIG_HOME/netdiskfs`; then `$HOME/.config/netdiskfs`.
    public static func resolve(override: String? = nil,
                               environment: [String: String] = ProcessInfo.processInfo.environment) -> ConfigPaths {
        if let override, !override.isEmpty { return ConfigPaths(directory: override) }
        return ConfigPaths(directory: XDGDirectories.netdiskfs(.config, environment: environment))
    }
}

/// `config.json`: the app credentials, endpoints and remote root.
///
/// JSON rather than TOML: Foundation decodes it, so a handful of keys needs no extra dependency,
/// and the credentials file next to it is JSON too. Every key is optional.
public struct NetdiskConfig: Sendable, Equatable, Codable {
    public var clientID: String?
    public var clientSecret: String?
    public var endpoints: Endpoints?
    /// Where the mount and relative CLI paths are rooted; Baidu apps write under `/apps/<app name>`.
    public var remoteRoot: String?

    enum CodingKeys: String, CodingKey {
        case clientID = "client_id"
        case clientSecret = "client_secret"
        case endpoints
        case remoteRoot = "remote_root"
    }

    public init(clientID: String? = nil, clientSecret: String? = nil, endpoints: Endpoints? = nil, remoteRoot: String? = nil) {
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.endpoints = endpoints
        self.remoteRoot = remoteRoot
    }

    public static let defaultRemoteRoot = "/apps/netdiskfs"
    /// The app credentials used against an emulator when the config names none (the emulator accepts any).
    public static let emulatorClientID = "netdiskfs-emulator"
    public static let emulatorClientSecret = "netdiskfs-emulator-secret"

    public static func load(from paths: ConfigPaths) throws(NetdiskError) -> NetdiskConfig {
        guard let bytes = try AtomicFile.read(paths.configFile) else { return NetdiskConfig() }
        do {
            return try JSONDecoder().decode(NetdiskConfig.self, from: Data(bytes))
        } catch {
            throw NetdiskError.localIO("\(paths.configFile) is not valid: \(error)")
        }
    }
}

/// The settings a client is built from, after config file, environment and flags are combined.
public struct ResolvedSettings: Sendable, Equatable {
    public var paths: ConfigPaths
    public var endpoints: Endpoints
    public var clientID: String
    public var clientSecret: String
    public var remoteRoot: String

    /// Flag beats `NETDISKFS_ENDPOINT` beats the config file beats Baidu's hosts.
    public static func resolve(configDirectory: String? = nil, endpoint: String? = nil,
                               environment: [String: String] = ProcessInfo.processInfo.environment) throws(NetdiskError) -> ResolvedSettings {
        let paths = ConfigPaths.resolve(override: configDirectory ?? environment["NETDISKFS_CONFIG_DIR"], environment: environment)
        let config = try NetdiskConfig.load(from: paths)
        let override = endpoint ?? environment["NETDISKFS_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 }
        let endpoints = override.map(Endpoints.single) ?? config.endpoints ?? .baidu
        try endpoints.validate()
        let emulator = endpoints.isLoopback
        let clientID = config.clientID ?? (emulator ? NetdiskConfig.emulatorClientID : "")
        let clientSecret = config.clientSecret ?? (emulator ? NetdiskConfig.emulatorClientSecret : "")
        var root = config.remoteRoot ?? NetdiskConfig.defaultRemoteRoot
        if !root.hasPrefix("/") { root = "/" + root }
        while root.count > 1, root.hasSuffix("/") { root.removeLast() }
        return ResolvedSettings(paths: paths, endpoints: endpoints, clientID: clientID, clientSecret: clientSecret, remoteRoot: root)
    }

    /// Fails with a clear message when Baidu's app credentials are missing.
    public func requireAppCredentials() throws(NetdiskError) {
        guard !clientID.isEmpty, !clientSecret.isEmpty else {
            throw NetdiskError.notLoggedIn(
                "no client_id/client_secret: put your Baidu app's keys in \(paths.configFile) (see doc/CONFIGURATION.md, \"config.json keys\")")
        }
    }
}
