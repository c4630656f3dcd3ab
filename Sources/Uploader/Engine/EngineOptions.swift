import Foundation

/// How the engine cuts and uploads files; derived from the account tier, with the slice size configurable down.
public struct EngineOptions: Sendable {
    /// Bytes per part; every part but the last has exactly this size.
    public var sliceSize: Int
    /// Parts uploaded concurrently per file.
    public var threads: Int
    /// Where cached sessions keep their sparse cache files and the resume journal lives.
    public var cacheDirectory: String
    /// The tier's largest file; writing past it fails with `.fileTooLarge` before those bytes are sent.
    public var maxFileSize: Int64
    /// How far ahead of the write head (in slices) a write may land and still be held in memory.
    public var reorderWindowSlices: Int
    /// Engine-level attempts per part on top of the client's own retries (transient errors, MD5 mismatches).
    public var partAttempts: Int
    /// First backoff delay between engine-level part attempts; doubles each time.
    public var retryBaseDelay: Double
    /// Hidden directory where streams are assembled before they are moved to their target (nil: derived
    /// from the target, `/apps/<app>/.netdiskfs-staging` or `/.netdiskfs-staging`). The mount sets it under
    /// its remote root and hides it from listings.
    public var stagingDirectory: String?
    /// What to do when the target exists; the mount and `put` overwrite.
    public var conflictPolicy: ConflictPolicy
    /// How this account streams files of unknown size (learned once per account). nil: the web-API
    /// placeholder precreate, with no probe (tests of the engine alone).
    public var streaming: StreamingStrategies?

    public init(sliceSize: Int = AccountTier.normal.maxSliceSize, threads: Int = 4,
                cacheDirectory: String = EngineOptions.defaultCacheDirectory(),
                maxFileSize: Int64 = AccountTier.normal.maxFileSize, reorderWindowSlices: Int = 2,
                partAttempts: Int = 4, retryBaseDelay: Double = 0.25,
                stagingDirectory: String? = nil, conflictPolicy: ConflictPolicy = .overwrite) {
        self.sliceSize = max(1, sliceSize)
        self.threads = max(1, threads)
        self.cacheDirectory = cacheDirectory
        self.maxFileSize = maxFileSize
        self.reorderWindowSlices = max(1, reorderWindowSlices)
        self.partAttempts = max(1, partAttempts)
        self.retryBaseDelay = retryBaseDelay
        self.stagingDirectory = stagingDirectory
        self.conflictPolicy = conflictPolicy
    }

    /// Options for an account tier: its slice size (or `sliceSize` if smaller) and its maximum file size.
    public static func forTier(_ tier: AccountTier, sliceSize: Int? = nil, threads: Int = 4,
                               cacheDirectory: String = EngineOptions.defaultCacheDirectory()) -> EngineOptions {
        let slice = min(sliceSize ?? tier.maxSliceSize, tier.maxSliceSize)
        return EngineOptions(sliceSize: slice, threads: threads, cacheDirectory: cacheDirectory,
                             maxFileSize: tier.maxFileSize)
    }

    /// The smallest slice, in steps of 4 MiB up to the tier's, whose 2048 parts still hold `size`
    /// bytes (nil: the tier's largest file, for streams of unknown size): 4 MiB normal, 8 MiB VIP,
    /// 12 MiB SVIP for streams. Why the smallest: memory is counted in slices (a part is held until
    /// Baidu acknowledges it), so smaller slices mean more parts in flight in the same budget, which
    /// is what hides a long round trip: SVIP's 16 MiB (when slices doubled) left the default 64 MiB
    /// four buffers, and `cp` at 100 ms per call ran at 0.75-0.78 of its 0 ms speed. Baidu documents
    /// only the bounds (4 MiB fixed for normal accounts, "at most" 16 MiB VIP and 32 MiB SVIP); steps
    /// of 4 MiB keep every size a multiple of the normal account's slice.
    public static func smallestSlice(for tier: AccountTier, holding size: Int64? = nil) -> Int {
        let target = min(size ?? tier.maxFileSize, tier.maxFileSize)
        let step = BaiduProtocol.minFirstPartSize
        var slice = step
        while Int64(slice) * Int64(BaiduProtocol.maxParts) < target && slice < tier.maxSliceSize { slice += step }
        return slice
    }

    /// Parts in flight per file for a memory budget: as many as the budget holds slices, 4 to 16.
    /// Why: each part waits a round trip for Baidu's answer, so at 100 ms per call four 4 MiB parts
    /// carried 116 MB/s and eight 193 MB/s; eight still left the normal tier's 64 MiB budget half
    /// unused (13 of its 16 slices could be in flight). The budget, not this number, bounds the
    /// memory (a worker without a buffer waits), and workers start only when parts wait for one.
    public static func uploadThreads(budget: Int, slice: Int) -> Int {
        min(16, max(4, budget / max(1, slice)))
    }

    /// The largest file these options can upload: the tier's limit, or fewer if the slice is small.
    public var effectiveMaxFileSize: Int64 {
        min(maxFileSize, Int64(sliceSize) * Int64(BaiduProtocol.maxParts))
    }

    /// The staging directory for a target path.
    public func stagingDirectory(for target: String) -> String {
        if let stagingDirectory { return stagingDirectory }
        let components = target.split(separator: "/", omittingEmptySubsequences: true)
        if components.count >= 3, components[0] == "apps" { return "/apps/\(components[1])/.netdiskfs-staging" }
        return "/.netdiskfs-staging"
    }

    /// `$XDG_CACHE_HOME/netdiskfs` (default `~/.cache/netdiskfs`).
    public static func defaultCacheDirectory() -> String {
        XDGDirectories.netdiskfs(.cache)
    }
}
