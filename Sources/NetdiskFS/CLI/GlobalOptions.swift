import ArgumentParser
import Logging
import Synchronization
import Uploader
import Foundation

/// Options every command that talks to the cloud accepts: `--endpoint`, `--config-dir`, `-v`.
///
/// Include with `@OptionGroup var global: GlobalOptions`; then `settings()` and `makeClient()` give the
/// configured ``BaiduClient`` (put, get and mount reuse these).
public struct GlobalOptions: ParsableArguments, Sendable {
    @Option(name: .long, help: ArgumentHelp(
        "Base URL that serves all three Baidu hosts (API, upload, OAuth), e.g. an emulator's http://127.0.0.1:PORT. Overrides NETDISKFS_ENDPOINT and config.json.",
        valueName: "url"))
    public var endpoint: String?

    @Option(name: .long, help: ArgumentHelp(
        "Directory holding config.json and credentials.json (default: $XDG_CONFIG_HOME/netdiskfs or ~/.config/netdiskfs).",
        valueName: "dir"))
    public var configDir: String?

    @Flag(name: [.short, .long], help: "Log debug details (HTTP calls with secrets redacted) to stderr.")
    public var verbose = false

    public init() {}

    public func settings() throws(NetdiskError) -> ResolvedSettings {
        try ResolvedSettings.resolve(configDirectory: configDir, endpoint: endpoint)
    }

    /// A logger writing to stderr, at debug level with `-v`, warnings otherwise.
    public func logger(label: String = "netdiskfs") -> Logger {
        CommandLogging.bootstrapOnce()
        var logger = Logger(label: label)
        let verboseFromEnvironment = ProcessInfo.processInfo.environment["NETDISKFS_VERBOSE"].map { !$0.isEmpty && $0 != "0" } ?? false
        logger.logLevel = verbose || verboseFromEnvironment ? .debug : .warning
        return logger
    }

    /// The client built from configuration and saved credentials.
    public func makeClient() throws(NetdiskError) -> BaiduClient {
        try ClientFactory.makeClient(settings: settings(), logger: logger())
    }
}

/// Logging goes to stderr so stdout stays clean for scripts.
enum CommandLogging {
    private static let done = Mutex(false)

    static func bootstrapOnce() {
        let first = done.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) } }
    }
}
