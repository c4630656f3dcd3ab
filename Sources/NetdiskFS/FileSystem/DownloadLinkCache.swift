import Synchronization
import Uploader

/// dlinks by fs_id. A dlink lives 8 hours; we use one for at most `maxAge` and fetch a new one
/// early, or at once when the CDN says it expired (31360) or refuses it (HTTP 403).
final class DownloadLinkCache: Sendable {
    private let api: any NetdiskAPI
    private let maxAge: Duration
    private let links = Mutex([UInt64: (link: String, fetchedAt: ContinuousClock.Instant)]())

    init(api: any NetdiskAPI, maxAge: Duration = .seconds(7 * 3600)) {
        self.api = api
        self.maxAge = maxAge
    }

    func link(for fsID: UInt64) throws(NetdiskError) -> String {
        let now = ContinuousClock.now
        if let cached = links.withLock({ $0[fsID] }), now - cached.fetchedAt < maxAge { return cached.link }
        let api = self.api
        let fetched = try Blocking.await { () async throws(NetdiskError) in try await api.downloadLinks(fsIDs: [fsID]) }
        guard let link = fetched[fsID] else { throw .notFound(code: -9) }
        links.withLock { $0[fsID] = (link, now) }
        return link
    }

    func invalidate(_ fsID: UInt64) {
        _ = links.withLock { $0.removeValue(forKey: fsID) }
    }

    /// Reads a range through the file's dlink, fetching a new link once if the old one is stale.
    func download(fsID: UInt64, offset: Int64, length: Int) throws(NetdiskError) -> [UInt8] {
        let api = self.api
        var attempt = 0
        while true {
            let link = try self.link(for: fsID)
            do throws(NetdiskError) {
                return try Blocking.await { () async throws(NetdiskError) in
                    try await api.download(dlink: link, offset: offset, length: length)
                }
            } catch {
                attempt += 1
                guard attempt == 1, Self.isStaleLink(error) else { throw error }
                invalidate(fsID)
            }
        }
    }

    static func isStaleLink(_ error: NetdiskError) -> Bool {
        switch error {
        case .dlinkExpired: return true
        case .http(let status): return status == 403 || status == 410
        default: return false
        }
    }
}

/// Bytes of read-ahead held by all open files together; a reader that cannot reserve more
/// stops growing its window instead of growing memory.
final class ReadAheadBudget: Sendable {
    let limit: Int
    private let used = Mutex(0)

    init(limit: Int) { self.limit = limit }

    func reserve(_ bytes: Int) -> Bool {
        used.withLock { used in
            guard used + bytes <= limit else { return false }
            used += bytes
            return true
        }
    }

    func release(_ bytes: Int) {
        used.withLock { $0 -= bytes }
    }
}
