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
    func download(fsID: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(NetdiskError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let api = self.api
        let sink = BufferSink(base: base, capacity: buffer.count)
        var attempt = 0
        while true {
            let link = try self.link(for: fsID)
            do throws(NetdiskError) {
                return try Blocking.await { () async throws(NetdiskError) in
                    try await api.download(dlink: link, offset: offset, into: sink)
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

extension DownloadLinkCache: RangeSource {
    var canStream: Bool { true }

    /// One paced GET of the range (see `DownloadStream`); a stale link is fetched again once.
    func stream(fsID: UInt64, offset: Int64, length: Int64, into sink: ResponseSink) throws(NetdiskError) {
        let api = self.api
        var attempt = 0
        while true {
            let link = try self.link(for: fsID)
            do throws(NetdiskError) {
                return try Blocking.await { () async throws(NetdiskError) in
                    try await api.stream(dlink: link, offset: offset, length: length, into: sink)
                }
            } catch {
                attempt += 1
                guard attempt == 1, Self.isStaleLink(error) else { throw error }
                invalidate(fsID)
            }
        }
    }
}
