/// How an emulator instance behaves: where it keeps data, which account tier it plays, and how long
/// its credentials live. Lifetimes are configurable so tests can watch tokens, uploadids and dlinks expire.
public struct EmulatorOptions: Sendable {
    /// Where content, open parts and the SQLite metadata live. nil: a fresh temp dir removed at shutdown.
    public var dataDirectory: String?
    public var host: String = "127.0.0.1"
    /// 0 picks a free port.
    public var port: Int = 0
    /// 0 normal (4 MiB slices, 4 GB files), 1 VIP (16 MiB, 10 GB), 2 SVIP (32 MiB, 20 GB).
    public var vipType: Int = 0
    /// Account size in bytes.
    public var quota: Int64 = 2 << 40
    /// The fault spec (see doc/EMULATOR.md).
    public var faults: String = ""
    public var accessTokenLifetime: Double = 30 * 86_400
    public var uploadIDLifetime: Double = 86_400
    public var dlinkLifetime: Double = 8 * 3_600
    /// Seconds the device-code answer tells clients to wait between polls.
    public var devicePollInterval: Int = 1
    /// Extra upload listeners that locateupload hands out (each on its own port).
    public var uploadHostCount: Int = 2
    /// When set, only this client_id (and secret, if set) is accepted by the OAuth endpoints.
    public var clientID: String?
    public var clientSecret: String?
    /// Which reading of Baidu's uncertain behaviour to emulate (see ``EmulatorProfile``).
    public var profile: EmulatorProfile = .default

    public init() {}
}

/// Slice and file limits of one account tier (DESIGN.md, "Chunks").
struct Tier: Sendable {
    let maxSliceSize: Int
    let maxFileSize: Int64

    init(vipType: Int) {
        switch vipType {
        case 2: self.init(maxSliceSize: 32 << 20, maxFileSize: 20_000_000_000)
        case 1: self.init(maxSliceSize: 16 << 20, maxFileSize: 10_000_000_000)
        default: self.init(maxSliceSize: 4 << 20, maxFileSize: 4_000_000_000)
        }
    }

    init(maxSliceSize: Int, maxFileSize: Int64) {
        self.maxSliceSize = maxSliceSize
        self.maxFileSize = maxFileSize
    }

    static let minFirstPart = 4 << 20
    static let maxParts = 2048
}

/// A Baidu-style refusal: the numeric errno (xpan) or error_code (pcs) and its message.
struct BaiduFailure: Error, Sendable {
    let code: Int
    let message: String
    init(_ code: Int, _ message: String) {
        self.code = code
        self.message = message
    }

    static let badParameter = BaiduFailure(2, "param error")
    static func notFound(_ what: String) -> BaiduFailure { BaiduFailure(-9, "file does not exist: \(what)") }
    static func exists(_ what: String) -> BaiduFailure { BaiduFailure(-8, "file already exists: \(what)") }
}

/// The well-known MD5s of the protocol.
enum KnownMD5 {
    static let empty = "d41d8cd98f00b204e9800998ecf8427e"
    static let placeholders = ["5910a591dd8fc18c32a8f3df4fdc1761", "a5fc157d78e6ad1c7e114b056c92821e"]
}
