/// Account tiers decide slice size and maximum file size (DESIGN.md, "Chunks").
public enum AccountTier: Int, Sendable, Codable, CaseIterable {
    case normal = 0
    case vip = 1
    case svip = 2

    /// The largest slice the tier accepts; every part but the last has exactly the slice size.
    public var maxSliceSize: Int {
        switch self {
        case .normal: return 4 << 20
        case .vip: return 16 << 20
        case .svip: return 32 << 20
        }
    }

    /// The largest file the tier accepts (4, 10 and 20 GB in Baidu's decimal units).
    public var maxFileSize: Int64 {
        switch self {
        case .normal: return 4 * 1_000_000_000
        case .vip: return 10 * 1_000_000_000
        case .svip: return 20 * 1_000_000_000
        }
    }

    public var displayName: String {
        switch self {
        case .normal: return "normal"
        case .vip: return "VIP"
        case .svip: return "SVIP"
        }
    }
}

/// Baidu protocol constants shared by the client and the engine.
public enum BaiduProtocol {
    /// Parts per upload; the docs say 1024, uploaders observe 2048.
    public static let maxParts = 2048
    /// slice-md5 covers the first 256 KiB.
    public static let sliceMD5Length = 256 << 10
    /// Smallest first part of a multi-part file.
    public static let minFirstPartSize = 4 << 20
    /// The block list of a streaming precreate, before the size is known.
    public static let placeholderBlockList = ["5910a591dd8fc18c32a8f3df4fdc1761", "a5fc157d78e6ad1c7e114b056c92821e"]
    /// The MD5 of zero bytes: the block list of an empty file.
    public static let emptyMD5 = "d41d8cd98f00b204e9800998ecf8427e"
    /// Downloads without this User-Agent get errno 31326.
    public static let downloadUserAgent = "pan.baidu.com"
    public static let appID = "250528"
}

/// What to do when the target path exists (Baidu's `rtype`).
public enum ConflictPolicy: Int, Sendable {
    case fail = 0
    case rename = 1
    case overwrite = 3
}

/// `ondup` for filemanager operations.
public enum DuplicatePolicy: String, Sendable {
    case fail
    case overwrite
}

/// One file or directory as `list`, `create` and `filemetas` describe it.
public struct RemoteEntry: Sendable, Equatable, Hashable {
    public var fsID: UInt64
    public var path: String
    public var name: String
    public var size: Int64
    public var isDirectory: Bool
    /// Baidu's `md5`; for multi-part files this is not the content MD5.
    public var md5: String?
    public var serverMtime: Int64
    public var localMtime: Int64

    public init(fsID: UInt64, path: String, name: String, size: Int64, isDirectory: Bool,
                md5: String? = nil, serverMtime: Int64 = 0, localMtime: Int64 = 0) {
        self.fsID = fsID
        self.path = path
        self.name = name
        self.size = size
        self.isDirectory = isDirectory
        self.md5 = md5
        self.serverMtime = serverMtime
        self.localMtime = localMtime
    }
}

public struct AccountInfo: Sendable, Equatable {
    public var name: String
    public var uk: Int64
    public var tier: AccountTier
    public init(name: String, uk: Int64, tier: AccountTier) {
        self.name = name
        self.uk = uk
        self.tier = tier
    }
}

public struct Quota: Sendable, Equatable {
    public var total: Int64
    public var used: Int64
    public init(total: Int64, used: Int64) {
        self.total = total
        self.used = used
    }
}

/// The answer to a precreate with a known block list.
public struct PrecreateResult: Sendable, Equatable {
    public var uploadID: String?
    /// Part sequence numbers the server still needs; upload exactly these.
    public var missingParts: [Int]
    /// Set when `return_type` is 2: the server already holds the content and made the file.
    public var rapidHit: RemoteEntry?
    public init(uploadID: String?, missingParts: [Int], rapidHit: RemoteEntry?) {
        self.uploadID = uploadID
        self.missingParts = missingParts
        self.rapidHit = rapidHit
    }
}

/// Bytes of one part, borrowed from a buffer its owner keeps alive until the call returns.
///
/// Parts are handed to the HTTP layer without copying; the section that owns the memory
/// is released only after the upload call completes.
public struct PartBytes: @unchecked Sendable {
    public let base: UnsafeRawPointer?
    public let count: Int
    public init(base: UnsafeRawPointer?, count: Int) {
        self.base = base
        self.count = count
    }
    public var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}
