import ArgumentParser
import Foundation
import NetdiskEmulator

/// `netdiskfs emulator`: runs the Baidu-compatible server for tests, benchmarks and trying the mount
/// without an account.
public struct EmulatorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "emulator",
        abstract: "Run a local Baidu Netdisk emulator (OAuth, xpan API, uploads, downloads).",
        discussion: """
            Prints `netdiskfs emulator listening on http://HOST:PORT` as its first line, then serves until \
            SIGINT or SIGTERM. That one URL serves /oauth/2.0/..., /rest/2.0/xpan/..., /api/..., \
            /rest/2.0/pcs/... and downloads; locateupload hands out extra upload hosts on their own ports. \
            Admin API: GET /__emulator/files, GET /__emulator/stats, POST /__emulator/faults (see doc/EMULATOR.md).

            Fault spec: comma-separated rules `endpoint:action[:p=0.1][:n=3][:count=K]`, e.g. \
            `superfile2:status=500:p=0.1,create:errno=31034:n=1,superfile2:reset:n=2,list:delay=200ms`. \
            Actions: status=5xx, reset, reset-after, delay=MS, errno=N, expire-token, expire-upload, badmd5, \
            pending, slow_down, expired_token.
            """
    )

    @Option(name: .customLong("data"), help: "Data directory (content, parts, SQLite). Default: a temp dir removed on exit.")
    var dataDirectory: String?

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free port).")
    var listen: String = "127.0.0.1:0"

    @Option(help: "Account tier: 0 normal (4 MiB slices, 4 GB files), 1 VIP (16 MiB, 10 GB), 2 SVIP (32 MiB, 20 GB).")
    var vipType: Int = 0

    @Option(help: "Account quota in bytes.")
    var quota: Int64 = 2 << 40

    @Option(help: "Fault spec (see above and doc/EMULATOR.md).")
    var faults: String = ""

    @Option(help: "Access token lifetime in seconds.")
    var tokenLifetime: Double = 30 * 86_400

    @Option(help: "Uploadid lifetime in seconds (older uploads get errno 31363).")
    var uploadidLifetime: Double = 86_400

    @Option(help: "dlink lifetime in seconds (older links get errno 31360).")
    var dlinkLifetime: Double = 8 * 3_600

    @Option(help: "Which reading of Baidu's uncertain behaviour to emulate: default (as first specified) or documented (the strict reading of every point in DESIGN.md's research). The flags below override single knobs.")
    var profile: String = "default"

    @Option(help: ArgumentHelp("Whether /api/precreate and /api/create accept an OAuth token (documented: false, errno -6).", valueName: "bool"))
    var webApiAcceptsOauth: Bool?

    @Option(help: ArgumentHelp("Whether xpan precreate with a size accepts placeholder (empty) block_list entries (documented: true).", valueName: "bool"))
    var xpanAcceptsPlaceholderBlocks: Bool?

    @Option(help: ArgumentHelp("Whether create must repeat the size precreate was given, errno 10 otherwise (default: true, documented: false).", valueName: "bool"))
    var createMustRepeatPrecreateSize: Bool?

    @Option(help: ArgumentHelp("Whether 0-byte uploads are refused with errno 2 (documented: true).", valueName: "bool"))
    var refuseEmptyFiles: Bool?

    @Option(help: "Most parts per upload (default 2048, documented 1024).")
    var maxParts: Int?

    @Option(help: ArgumentHelp("Whether rapid upload through create answers 31500 (documented: true).", valueName: "bool"))
    var rapidCreateUnavailable: Bool?

    @Option(help: ArgumentHelp("Whether superfile2 answers an expired uploadid with 31299 \"Expried Time Not Match\" (documented: true).", valueName: "bool"))
    var expiredUploadAnswers31299: Bool?

    @Option(help: "Download connections a normal account may hold at once; one more answers 31034 (0: no limit; documented: 1).")
    var normalAccountDownloadConnections: Int?

    @Option(help: ArgumentHelp("Whether request_id comes as a float like 1.8e+17 (documented: true).", valueName: "bool"))
    var requestIdAsFloat: Bool?

    public init() {}

    /// The named profile with this command's knob flags applied.
    func resolvedProfile() throws -> EmulatorProfile {
        guard var resolved = EmulatorProfile.named(profile) else {
            throw ValidationError("--profile must be one of: \(EmulatorProfile.names.joined(separator: ", "))")
        }
        if let webApiAcceptsOauth { resolved.webAPIAcceptsOAuth = webApiAcceptsOauth }
        if let xpanAcceptsPlaceholderBlocks { resolved.xpanAcceptsPlaceholderBlocks = xpanAcceptsPlaceholderBlocks }
        if let createMustRepeatPrecreateSize { resolved.createMustRepeatPrecreateSize = createMustRepeatPrecreateSize }
        if let refuseEmptyFiles { resolved.refuseEmptyFiles = refuseEmptyFiles }
        if let maxParts {
            guard maxParts > 0 else { throw ValidationError("--max-parts must be positive") }
            resolved.maxParts = maxParts
        }
        if let rapidCreateUnavailable { resolved.rapidCreateUnavailable = rapidCreateUnavailable }
        if let expiredUploadAnswers31299 { resolved.expiredUploadAnswers31299 = expiredUploadAnswers31299 }
        if let normalAccountDownloadConnections {
            guard normalAccountDownloadConnections >= 0 else { throw ValidationError("--normal-account-download-connections must be ≥ 0") }
            resolved.normalAccountDownloadConnections = normalAccountDownloadConnections
        }
        if let requestIdAsFloat { resolved.requestIDAsFloat = requestIdAsFloat }
        return resolved
    }

    public func validate() throws {
        _ = try resolvedProfile()
        guard (0...2).contains(vipType) else { throw ValidationError("--vip-type must be 0, 1 or 2") }
        guard quota > 0 else { throw ValidationError("--quota must be positive") }
        guard Self.parseListen(listen) != nil else { throw ValidationError("--listen must be HOST:PORT") }
    }

    static func parseListen(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65_535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }

    public func run() async throws {
        var options = EmulatorOptions()
        options.dataDirectory = dataDirectory
        (options.host, options.port) = Self.parseListen(listen)!
        options.vipType = vipType
        options.quota = quota
        options.faults = faults
        options.accessTokenLifetime = tokenLifetime
        options.uploadIDLifetime = uploadidLifetime
        options.dlinkLifetime = dlinkLifetime
        options.profile = try resolvedProfile()
        let server = try await EmulatorServer.start(options)
        // Written straight to fd 1 so the line is out before anyone reads it, whatever stdout buffering is.
        FileHandle.standardOutput.write(Data("netdiskfs emulator listening on \(server.baseURL)\n".utf8))
        await Self.waitForTerminationSignal()
        await server.shutdown()
    }

    /// Suspends until SIGINT or SIGTERM arrives (delivered on a dispatch queue, not a cooperative thread).
    static func waitForTerminationSignal() async {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0, queue: .global()) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = OnceFlag()
            for source in sources {
                source.setEventHandler { if once.claim() { continuation.resume() } }
                source.resume()
            }
        }
        for source in sources { source.cancel() }
    }
}

/// True exactly once, whichever signal handler asks first.
private final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false
    func claim() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if claimed { return false }
        claimed = true
        return true
    }
}
