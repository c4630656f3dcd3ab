/// How many download connections the account may hold at once, across every reader of a mount or a `get`.
///
/// Why account-wide: Baidu throttles a normal account for hours once it opens more than one download
/// connection (BaiduPCS-Go README); SVIP accounts tolerate many. A per-file limit would still let two
/// readers break the rule. Waiters suspend (never block a thread) and are served in order.
public actor DownloadSlots {
    private var limit: Int
    private var used = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init(limit: Int = 8) { self.limit = max(1, limit) }

    public var currentLimit: Int { limit }

    public func setLimit(_ newLimit: Int) {
        limit = max(1, newLimit)
        while used < limit, !waiters.isEmpty {
            used += 1
            waiters.removeFirst().resume()
        }
    }

    func acquire() async {
        if used < limit {
            used += 1
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if used <= limit, !waiters.isEmpty {
            waiters.removeFirst().resume()
        } else {
            used -= 1
        }
    }
}

extension AccountTier {
    /// Download connections used when the user names no number: one for a normal account (more gets
    /// it throttled), several for VIP and SVIP.
    public var defaultDownloadConnections: Int {
        switch self {
        case .normal: return 1
        case .vip: return 4
        case .svip: return 8
        }
    }
}
