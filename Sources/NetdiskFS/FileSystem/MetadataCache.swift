import Foundation
import Synchronization
import Uploader

/// Directory listings with a TTL, a negative-lookup cache, and an overlay of our own changes.
///
/// Baidu has no stat-by-path call, so a lookup is answered from the parent's listing. Listings are
/// fetched whole (paged 1000 at a time), shared by concurrent lookups (single flight), and kept for
/// `ttl`. Our own creates, deletes and renames are applied to cached listings at once and pinned
/// for `overlayTTL`, so a file we just wrote is visible whatever the cloud's listing lag.
final class MetadataCache: Sendable {
    struct Listing: Sendable {
        var entries: [String: RemoteEntry]
        var fetchedAt: ContinuousClock.Instant
        /// Read from the cloud (by a lookup, an ls or an O_EXCL check), not made up by our own mkdir:
        /// only such a listing can say what the cloud had at `fetchedAt`.
        var fetchedFromCloud = false
    }

    /// How old a fetched listing may be and still count as the cloud "now" for O_EXCL.
    static let freshWindow: Duration = .seconds(1)

    private struct State {
        var listings: [String: Listing] = [:]
        var negative: [String: ContinuousClock.Instant] = [:]
        var pinned: [String: (entry: RemoteEntry, until: ContinuousClock.Instant)] = [:]
        /// Paths we removed: when, and until when they stay hidden whatever a listing says.
        var hidden: [String: (since: ContinuousClock.Instant, until: ContinuousClock.Instant)] = [:]
        var inflight: [String: InflightFetch] = [:]
        /// Refreshes running on their own threads (capped: see ``maxBackgroundRefreshes``).
        var backgroundRefreshes = 0

        /// Our change made in-flight fetches at or under `path` out of date: they still answer
        /// their waiters but are not stored, and the next caller fetches anew.
        mutating func discardFetches(under path: String) {
            for (key, fetch) in inflight where MetadataCache.isSelfOrDescendant(key, of: path) {
                fetch.discarded = true
                inflight[key] = nil
            }
        }
    }

    /// One fetch of a listing that concurrent lookups wait on. `discarded` is read and written
    /// under the state lock.
    private final class InflightFetch: @unchecked Sendable {
        let done = Gate()
        var result: Result<Listing, NetdiskError>?
        var discarded = false
    }

    /// At most this many listings refresh in the background at once; past it an expired listing
    /// answers without one (a `find` on a slow cloud would otherwise pile up list calls).
    static let maxBackgroundRefreshes = 4

    static let pageSize = 1000
    private let api: any NetdiskAPI
    private let ttl: Duration
    private let negativeTTL: Duration
    private let overlayTTL: Duration
    private let state = Mutex(State())
    private let clock = ContinuousClock()

    /// Entries the cloud does not hold but the mount shows (empty files it refused), per directory.
    private let localEntries: @Sendable (String) -> [RemoteEntry]
    /// Entries newer than the cloud's (files queued for upload): they win over a listed version.
    private let pendingEntries: @Sendable (String) -> [RemoteEntry]

    init(api: any NetdiskAPI, ttl: Duration, negativeTTL: Duration = .seconds(5), overlayTTL: Duration = .seconds(60),
         localEntries: @escaping @Sendable (String) -> [RemoteEntry] = { _ in [] },
         pendingEntries: @escaping @Sendable (String) -> [RemoteEntry] = { _ in [] }) {
        self.localEntries = localEntries
        self.pendingEntries = pendingEntries
        self.api = api
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.overlayTTL = overlayTTL
    }

    /// The entry at a remote path, or nil when it does not exist.
    func entry(at path: String) throws(NetdiskError) -> RemoteEntry? {
        if path == "/" { return RemoteEntry(fsID: 0, path: "/", name: "", size: 0, isDirectory: true) }
        let now = clock.now
        let negative = state.withLock { state -> Bool in
            if let until = state.negative[path] {
                if until > now { return true }
                state.negative[path] = nil
            }
            return false
        }
        if negative { return nil }
        let parent = RemotePath.split(path).parent
        return try lookUp(path) { () throws(NetdiskError) in try listing(of: parent) }
    }

    /// The entry at `path` in the listing of its directory that `read` gives; a miss, or a
    /// directory that is gone, is remembered (the negative cache).
    private func lookUp(_ path: String, in read: () throws(NetdiskError) -> Listing) throws(NetdiskError) -> RemoteEntry? {
        let listing: Listing
        do throws(NetdiskError) {
            listing = try read()
        } catch {
            if case .notFound = error { rememberMissing(path); return nil }
            throw error
        }
        if let entry = listing.entries[RemotePath.split(path).name] { return entry }
        rememberMissing(path)
        return nil
    }

    /// The entry at a path as the cloud has it now (O_EXCL must see a file made behind the mount's
    /// back, as git's lock files need): the parent's listing is fetched again unless it was read
    /// from the cloud under a second ago. Who read it does not matter, only when: `cp` looks the
    /// name up (a listing) and then opens it O_EXCL, and asking twice cost a round trip per new
    /// file (100 ms per copy at 100 ms per call). `tar -x` (every file O_EXCL) costs one listing
    /// per directory per second, not one per file. Our own recent changes still win.
    func freshEntry(at path: String) throws(NetdiskError) -> RemoteEntry? {
        if path == "/" { return try entry(at: path) }
        let parent = RemotePath.split(path).parent
        let now = clock.now
        let fresh = state.withLock { state -> Bool in
            guard let listing = state.listings[parent], listing.fetchedFromCloud else { return false }
            return now - listing.fetchedAt < Self.freshWindow
        }
        if fresh {
            // From the listing itself: a miss remembered from an older listing (the negative
            // cache) must not hide a file the fresh one holds.
            do throws(NetdiskError) {
                return try listing(of: parent).entries[RemotePath.split(path).name]
            } catch {
                if case .notFound = error { return nil }
                throw error
            }
        }
        // Fetched anew for this check alone: the listing others read stays until the new one
        // lands, so lookups of its neighbours do not wait on this round trip (dropping it made a
        // `stat` beside a `cp` wait out a slow list or a frequency-control pause).
        return try lookUp(path) { () throws(NetdiskError) in merged(try listingFetchedNow(parent), directory: parent) }
    }

    /// A listing fetched from the cloud after this call began, stored when it lands. A fetch
    /// already running began before: it still answers its own waiters, but is not stored.
    private func listingFetchedNow(_ directory: String) throws(NetdiskError) -> Listing {
        let fetch = state.withLock { state -> InflightFetch in
            state.inflight[directory]?.discarded = true
            let fetch = InflightFetch()
            state.inflight[directory] = fetch
            return fetch
        }
        refresh(directory, fetch)
        return try fetch.result!.get()
    }

    /// The listing of a remote directory (cached, or fetched page by page), with the entries kept
    /// locally that the cloud does not have.
    func listing(of directory: String) throws(NetdiskError) -> Listing {
        merged(try cloudListing(of: directory), directory: directory)
    }

    /// A cloud listing with the entries kept locally added and the pending ones winning.
    private func merged(_ cloud: Listing, directory: String) -> Listing {
        var listing = cloud
        for entry in localEntries(directory) where listing.entries[entry.name] == nil {
            listing.entries[entry.name] = entry
        }
        for entry in pendingEntries(directory) { listing.entries[entry.name] = entry }
        return listing
    }

    /// How long the caller that starts a listing's refresh waits for it when the expired listing
    /// can answer instead.
    static let staleAnswerAfter = 0.5

    /// A listing past its TTL is refreshed, but when the cloud takes longer than
    /// ``staleAnswerAfter`` (a frequency-control pause, a slow or stalled server) the expired
    /// listing answers, as it does at once for callers that find the refresh already running; the
    /// refresh lands in the cache when it ends. So `ls` and `stat` stay well under a second per
    /// directory whatever the cloud does (our own changes are in the overlay anyway).
    private func cloudListing(of directory: String) throws(NetdiskError) -> Listing {
        let now = clock.now
        enum Plan { case cached(Listing), wait(InflightFetch, stale: Listing?), fetch(InflightFetch, stale: Listing?) }
        let plan = state.withLock { state -> Plan in
            let known = state.listings[directory]
            if let known, now - known.fetchedAt < ttl { return .cached(known) }
            if let fetch = state.inflight[directory] { return .wait(fetch, stale: known) }
            if let known, state.backgroundRefreshes >= Self.maxBackgroundRefreshes { return .cached(known) }
            let fetch = InflightFetch()
            state.inflight[directory] = fetch
            if known != nil { state.backgroundRefreshes += 1 }
            return .fetch(fetch, stale: known)
        }
        switch plan {
        case .cached(let listing):
            return listing
        case .wait(let fetch, let stale):
            if let stale { return stale }
            fetch.done.wait()
            return try fetch.result!.get()
        case .fetch(let fetch, nil):
            refresh(directory, fetch)
            return try fetch.result!.get()
        case .fetch(let fetch, let stale?):
            // A plain thread: the refresh may outlive this FUSE request.
            NamedThread.start("nd.list") {
                self.refresh(directory, fetch)
                self.state.withLock { $0.backgroundRefreshes -= 1 }
            }
            guard fetch.done.wait(atMost: Self.staleAnswerAfter) else {
                // The listing as it is now: our own changes since `stale` was read are applied to it.
                return state.withLock { $0.listings[directory] } ?? stale
            }
            return try fetch.result!.get()
        }
    }

    private func refresh(_ directory: String, _ fetch: InflightFetch) {
        let result: Result<Listing, NetdiskError>
        do throws(NetdiskError) {
            result = .success(try fetchListing(directory))
        } catch {
            result = .failure(error)
        }
        state.withLock { state in
            if state.inflight[directory] === fetch { state.inflight[directory] = nil }
            if case .success(var listing) = result {
                applyOverlay(to: &listing, directory: directory, state: &state)
                if !fetch.discarded {
                    state.listings[directory] = listing
                    // A miss remembered from an older listing is void for a name this one holds
                    // (`>>` of a file another machine just made would create it over).
                    for name in listing.entries.keys { state.negative[RemotePath.join(directory, name)] = nil }
                }
                fetch.result = .success(listing)
            } else {
                fetch.result = result
            }
        }
        fetch.done.open()
    }

    private func fetchListing(_ directory: String) throws(NetdiskError) -> Listing {
        // When the first page was asked for: what the listing can vouch for.
        let started = clock.now
        var entries: [String: RemoteEntry] = [:]
        var start = 0
        let api = self.api
        while true {
            let offset = start
            let page = try Blocking.await { () async throws(NetdiskError) in
                try await api.list(directory: directory, start: offset, limit: Self.pageSize)
            }
            for entry in page { entries[entry.name] = entry }
            if page.count < Self.pageSize { break }
            start += page.count
        }
        return Listing(entries: entries, fetchedAt: started, fetchedFromCloud: true)
    }

    /// Our pins and hides win over a fresh listing until the cloud shows the same thing.
    private func applyOverlay(to listing: inout Listing, directory: String, state: inout State) {
        let now = clock.now
        for (path, pin) in state.pinned where RemotePath.split(path).parent == directory {
            if pin.until < now { state.pinned[path] = nil; continue }
            let name = RemotePath.split(path).name
            if listing.entries[name]?.fsID == pin.entry.fsID && pin.entry.fsID != 0 { state.pinned[path] = nil; continue }
            listing.entries[name] = pin.entry
        }
        for (path, hide) in state.hidden where RemotePath.split(path).parent == directory {
            if hide.until < now { state.hidden[path] = nil; continue }
            let name = RemotePath.split(path).name
            // Only a listing asked for after the removal vouches that the cloud shows it gone: one
            // that began before (a slow refresh) lacked the name perhaps only because the file was
            // not made yet, and dropping the hide on its word let a lagging listing bring it back.
            if listing.entries[name] == nil {
                if listing.fetchedAt > hide.since { state.hidden[path] = nil }
                continue
            }
            listing.entries[name] = nil
        }
    }

    private func rememberMissing(_ path: String) {
        let until = clock.now + negativeTTL
        state.withLock { state in
            // A path we just created is not missing, whatever an older listing said.
            if state.pinned[path] == nil { state.negative[path] = until }
        }
    }

    // MARK: our own changes

    /// A file or directory we created or committed: visible at once.
    func didCreate(_ entry: RemoteEntry) {
        let until = clock.now + overlayTTL
        state.withLock { state in
            let (parent, name) = RemotePath.split(entry.path)
            state.hidden[entry.path] = nil
            state.pinned[entry.path] = (entry, until)
            state.listings[parent]?.entries[name] = entry
            // A negative entry for this path or anything under it is now wrong.
            state.negative = state.negative.filter { !Self.isSelfOrDescendant($0.key, of: entry.path) }
            if entry.isDirectory, state.listings[entry.path] == nil {
                state.listings[entry.path] = Listing(entries: [:], fetchedAt: clock.now)
                state.discardFetches(under: entry.path)
            }
        }
    }

    /// A file or directory we deleted: gone at once, with everything cached under it.
    func didRemove(_ path: String) {
        let until = clock.now + overlayTTL
        state.withLock { state in
            let (parent, name) = RemotePath.split(path)
            state.pinned = state.pinned.filter { !Self.isSelfOrDescendant($0.key, of: path) }
            state.hidden[path] = (clock.now, until)
            state.listings[parent]?.entries[name] = nil
            state.listings = state.listings.filter { !Self.isSelfOrDescendant($0.key, of: path) }
            state.discardFetches(under: path)
            state.negative[path] = clock.now + negativeTTL
        }
    }

    func didRename(from source: String, to target: String, entry: RemoteEntry) {
        didRemove(source)
        var moved = entry
        moved.path = target
        moved.name = RemotePath.split(target).name
        didCreate(moved)
        if entry.isDirectory {
            // Its children's cached listings carry old paths; fetch again when needed.
            state.withLock { state in
                state.listings[target] = nil
                state.discardFetches(under: target)
            }
        }
    }

    /// Forgets a directory's listing (and our negative entries under it).
    func invalidate(_ directory: String) {
        state.withLock { state in
            state.listings[directory] = nil
            // An O_EXCL check must not join a fetch that began before it asked.
            state.discardFetches(under: directory)
            state.negative = state.negative.filter { !Self.isSelfOrDescendant($0.key, of: directory) }
        }
    }

    static func isSelfOrDescendant(_ path: String, of ancestor: String) -> Bool {
        if path == ancestor { return true }
        if ancestor == "/" { return true }
        return path.hasPrefix(ancestor + "/")
    }
}

