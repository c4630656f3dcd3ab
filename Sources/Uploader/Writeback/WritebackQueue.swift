import Foundation
import GRDB
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The durable queue behind `--writeback`: small files are fsynced to local disk and journaled in
/// SQLite at close(), then uploaded N at a time in the background.
///
/// Why it is shaped this way (JuiceFS's write-back, with Baidu's constraints):
/// - close() must not wait for three round trips per file: `tar` and `rsync` write one file at a
///   time, so at 30–200 ms per call nothing overlaps. Here close() costs a local fsync.
/// - Nothing queued is ever dropped. The spool file is fsynced before its row is committed
///   (synchronous=FULL), a row leaves only after its upload committed, and a failed upload stays
///   with its reason and is retried with backoff. A killed daemon resumes the queue at its next mount;
///   an upload that committed just before the kill is sent again onto the same path (overwrite), so
///   nothing is duplicated.
/// - One entry per path. An entry is never changed while it uploads: moving or cancelling it
///   waits for that upload to end, so a rename can never race a commit.
/// - Its disk use has a cap of its own; past it, enqueue (close) waits for uploads to drain.
public final class WritebackQueue: @unchecked Sendable {
    public struct Options: Sendable {
        /// Files up to this size are queued; larger ones stream as usual.
        public var threshold: Int64
        public var uploaders: Int
        /// Bytes the spool may hold; close() waits past it.
        public var diskCap: Int64
        /// Holds `queue.sqlite` and `files/`.
        public var directory: String
        /// First retry delay; doubles per failure up to `maxBackoff`.
        public var baseBackoff: Double = 1
        public var maxBackoff: Double = 300

        public init(threshold: Int64, uploaders: Int = 4, diskCap: Int64 = 1 << 30, directory: String) {
            self.threshold = threshold
            self.uploaders = max(1, uploaders)
            self.diskCap = max(1, diskCap)
            self.directory = directory
        }
    }

    /// One queued file.
    public struct Entry: Sendable, Equatable {
        public var id: Int64
        public var remotePath: String
        public var size: Int64
        public var mtime: Int64
        public var enqueuedAt: Double
        public var attempts: Int
        public var lastError: String?
        public var nextAttemptAt: Double
        public var uploading: Bool
        /// The spool file's name under `files/` (written and fsynced before the row).
        public var file: String
        /// When the last attempt failed (seconds since 1970; 0: never).
        public var lastErrorAt: Double = 0

        /// The fs_id the mount shows for it until it is committed.
        public var localFSID: UInt64 { WritebackQueue.fsIDBase | UInt64(id) }
    }

    /// Queued files show with fs_ids from here up (no remote file has one this large).
    public static let fsIDBase: UInt64 = 0xFFFE_0000_0000_0000
    public static func isQueued(fsID: UInt64) -> Bool { fsID & 0xFFFF_0000_0000_0000 == fsIDBase }

    public let options: Options
    private let api: any NetdiskAPI
    private let engine: EngineOptions
    private let budget: MemoryBudget
    private let logger: Logger
    private let database: DatabaseQueue
    private let condition = NSCondition()
    private var entries: [Int64: Entry] = [:]
    private var byPath: [String: Int64] = [:]
    /// Ids by parent directory: a lookup lists one directory's queued files without a scan.
    private var byParent: [String: Set<Int64>] = [:]
    /// Bytes promised to enqueues still writing their spool files.
    private var reservedBytes: Int64 = 0
    private var pausedSubtrees: [String] = []
    private var stopping = false
    private var workers: [Thread] = []
    private var onCommitted: (@Sendable (Entry, RemoteEntry) -> Void)?

    public init(api: any NetdiskAPI, engine: EngineOptions, budget: MemoryBudget, options: Options, logger: Logger) throws(NetdiskError) {
        self.api = api
        self.engine = engine
        self.budget = budget
        self.options = options
        self.logger = logger
        do {
            try FileManager.default.createDirectory(atPath: options.directory + "/files", withIntermediateDirectories: true)
            var configuration = Configuration()
            configuration.prepareDatabase { db in
                try db.execute(sql: "PRAGMA journal_mode = WAL")
                // close() promises durability: every enqueue is on disk before it returns.
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            database = try DatabaseQueue(path: options.directory + "/queue.sqlite", configuration: configuration)
            try database.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS queue (
                        id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, size INTEGER NOT NULL,
                        mtime INTEGER NOT NULL, enqueuedAt REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                        lastError TEXT, file TEXT NOT NULL)
                    """)
            }
            let rows = try database.read { db in try Row.fetchAll(db, sql: "SELECT * FROM queue ORDER BY id") }
            for row in rows {
                let entry = Entry(id: row["id"], remotePath: row["path"], size: row["size"], mtime: row["mtime"],
                                  enqueuedAt: row["enqueuedAt"], attempts: row["attempts"], lastError: row["lastError"],
                                  nextAttemptAt: 0, uploading: false, file: row["file"])
                if let older = byPath[entry.remotePath] { forgetLocked(older) }
                insertLocked(entry)
            }
        } catch {
            throw .localIO("cannot open the write-back queue in \(options.directory): \(error)")
        }
        removeUnreferencedFiles()
        if !entries.isEmpty {
            logger.info("write-back queue: resuming \(entries.count) file(s) (\(entries.values.reduce(0) { $0 + $1.size }) bytes) left by the last run")
        }
    }

    /// Starts the uploaders. `onCommitted` runs when a file is committed, before it leaves the
    /// queue (so whoever looks finds it in one place or the other).
    public func start(onCommitted: @escaping @Sendable (Entry, RemoteEntry) -> Void) {
        condition.withLock { self.onCommitted = onCommitted }
        for index in 0..<options.uploaders {
            workers.append(NamedThread.start("nd.writeback\(index)") { [self] in work() })
        }
    }

    func spoolPath(_ file: String) -> String { options.directory + "/files/" + file }

    // MARK: - What the mount shows

    public func entry(at path: String) -> Entry? {
        condition.withLock { byPath[path].flatMap { entries[$0] } }
    }

    public func entry(id: Int64) -> Entry? { condition.withLock { entries[id] } }

    /// Queued files directly in `directory`.
    public func entries(in directory: String) -> [Entry] {
        condition.withLock {
            guard let ids = byParent[directory] else { return [] }
            return ids.compactMap { entries[$0] }
        }
    }

    public var snapshot: [Entry] { condition.withLock { entries.values.sorted { $0.id < $1.id } } }
    public var queuedBytes: Int64 { condition.withLock { entries.values.reduce(0) { $0 + $1.size } } }

    /// The spool file of a queued file, opened for reading (nil once it was committed).
    public func openSpool(id: Int64) -> LocalFileSource? {
        guard let file = condition.withLock({ entries[id]?.file }) else { return nil }
        return try? LocalFileSource(path: spoolPath(file))
    }

    // MARK: - Enqueue

    /// Spools `size` bytes (written to the given descriptor by `fill`), fsyncs them, journals the
    /// file, and returns its entry. Waits up to `maxWait` seconds while the spool is over its cap
    /// (nil then: the caller uploads the file itself), and while another entry for this path is
    /// uploading (it is replaced: the newer content wins).
    public func enqueue(path: String, size: Int64, mtime: Int64, maxWait: Double = 60,
                        fill: (Int32) throws(NetdiskError) -> Void) throws(NetdiskError) -> Entry? {
        // Room first, so a full queue costs no spool write; an empty queue always takes one file.
        let deadline = Date().addingTimeInterval(maxWait)
        let reserved = condition.withLock { () -> Bool in
            while !(entries.isEmpty && reservedBytes == 0),
                  entries.values.reduce(0, { $0 + $1.size }) + reservedBytes + size > options.diskCap {
                if stopping || Date() > deadline { return false }
                _ = condition.wait(until: min(deadline, Date().addingTimeInterval(1)))
            }
            reservedBytes += size
            return true
        }
        guard reserved else { return nil }
        defer { condition.withLock { reservedBytes -= size; condition.broadcast() } }

        let file = UUID().uuidString
        let spool = spoolPath(file)
        let fd = open(spool, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .localIO("cannot create \(spool): \(String(cString: strerror(errno)))") }
        do throws(NetdiskError) {
            try fill(fd)
            guard fsync(fd) == 0 else { throw .localIO("fsync \(spool): \(String(cString: strerror(errno)))") }
        } catch {
            close(fd)
            unlink(spool)
            throw error
        }
        close(fd)
        // The file's name is in place and on disk before the row that names it.
        Self.syncDirectory(options.directory + "/files")

        condition.lock()
        defer { condition.unlock() }
        try replaceLocked(path)
        let now = Date().timeIntervalSince1970
        let id: Int64
        do {
            id = try database.write { db -> Int64 in
                try db.execute(sql: "INSERT INTO queue (path, size, mtime, enqueuedAt, file) VALUES (?, ?, ?, ?, ?)",
                               arguments: [path, size, mtime, now, file])
                return db.lastInsertedRowID
            }
        } catch {
            unlink(spool)
            throw .localIO("cannot journal \(path) in the write-back queue: \(error)")
        }
        let entry = Entry(id: id, remotePath: path, size: size, mtime: mtime, enqueuedAt: now, attempts: 0, lastError: nil,
                          nextAttemptAt: 0, uploading: false, file: file)
        insertLocked(entry)
        condition.broadcast()
        return entry
    }

    // MARK: - Changes to queued files

    /// Drops the entry at `path` (its content is replaced or deleted). One that is uploading is
    /// waited for first: then it has committed (or failed, and is dropped all the same).
    /// True when an entry was there.
    @discardableResult
    public func cancel(path: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard let id = byPath[path] else { return false }
        while entries[id]?.uploading == true { condition.wait() }
        guard entries[id] != nil else { return true }
        forgetLocked(id)
        return true
    }

    /// Waits for an upload of `path` running now; true when it committed (the entry is gone).
    public func waitIfUploading(path: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard let id = byPath[path], entries[id]?.uploading == true else { return false }
        while entries[id]?.uploading == true { condition.wait() }
        return entries[id] == nil
    }

    /// Waits until nothing is queued at `path` any more (committed), or `timeout` passes; nil on
    /// success, else the reason the upload keeps failing. Triggers an attempt now.
    public func waitCommitted(path: String, timeout: Double) -> String? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while let id = byPath[path], let entry = entries[id] {
            if !entry.uploading && entry.nextAttemptAt > Date().timeIntervalSince1970 {
                entries[id]?.nextAttemptAt = 0
                condition.broadcast()
            }
            if Date() > deadline { return entry.lastError ?? "still uploading after \(Int(timeout)) s" }
            _ = condition.wait(until: min(deadline, Date().addingTimeInterval(0.5)))
        }
        return nil
    }

    /// Renames a queued file locally; false when it is uploading right now (the caller waits for
    /// the commit, then moves it in the cloud). An entry queued at `target` is replaced.
    public func move(from source: String, to target: String) throws(NetdiskError) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard let id = byPath[source], let entry = entries[id] else { return false }
        if entry.uploading { return false }
        if byPath[target] != nil { try replaceLocked(target) }
        guard entries[id]?.uploading == false else { return false }
        do {
            try database.write { db in try db.execute(sql: "UPDATE queue SET path = ? WHERE id = ?", arguments: [target, id]) }
        } catch {
            throw .localIO("cannot rename \(source) in the write-back queue: \(error)")
        }
        relocateLocked(id, to: target)
        return true
    }

    /// Runs `body` (a directory's rename or delete in the cloud) with no upload running or starting
    /// under `directory`, then moves what is queued under it to `newDirectory` (nil: leaves it).
    public func withSubtreePaused<T>(_ directory: String, movingTo newDirectory: String?,
                                     _ body: () throws -> T) throws -> T {
        condition.lock()
        pausedSubtrees.append(directory)
        while entries.values.contains(where: { $0.uploading && Self.isSelfOrDescendant($0.remotePath, of: directory) }) {
            condition.wait()
        }
        condition.unlock()
        defer {
            condition.withLock {
                if let index = pausedSubtrees.firstIndex(of: directory) { pausedSubtrees.remove(at: index) }
                condition.broadcast()
            }
        }
        let result = try body()
        if let newDirectory {
            condition.withLock {
                let moving = entries.values.filter { Self.isSelfOrDescendant($0.remotePath, of: directory) }
                    .map { ($0.id, newDirectory + $0.remotePath.dropFirst(directory.count)) }
                guard !moving.isEmpty else { return }
                do {
                    try database.write { db in
                        for (id, moved) in moving {
                            try db.execute(sql: "UPDATE queue SET path = ? WHERE id = ?", arguments: [moved, id])
                        }
                    }
                } catch {
                    logger.error("write-back queue: could not record the move of \(directory) to \(newDirectory): \(error)")
                }
                for (id, moved) in moving { relocateLocked(id, to: moved) }
            }
        }
        return result
    }

    /// Waits until the queue is empty, or until every file left has failed since this call began
    /// (then those are left for the next mount). Returns what is left.
    public func drain(log: Bool = true) -> [Entry] {
        condition.lock()
        defer { condition.unlock() }
        let started = Date().timeIntervalSince1970
        var failedSince: Set<Int64> = []
        for id in entries.keys { entries[id]?.nextAttemptAt = 0 }
        condition.broadcast()
        var lastNotice = Date.distantPast
        while !entries.isEmpty {
            for (id, entry) in entries where entry.lastErrorAt >= started && entry.lastError != nil { failedSince.insert(id) }
            if Set(entries.keys).isSubset(of: failedSince) { break }
            if log, Date().timeIntervalSince(lastNotice) > 5 {
                logger.info("write-back queue: waiting for \(entries.count) file(s) to upload")
                lastNotice = Date()
            }
            _ = condition.wait(until: Date().addingTimeInterval(0.5))
        }
        return entries.values.sorted { $0.id < $1.id }
    }

    /// Every file waiting for a retry is tried now (`netdiskfs sync`).
    public func retryNow() {
        condition.withLock {
            for id in entries.keys where entries[id]?.uploading == false { entries[id]?.nextAttemptAt = 0 }
            condition.broadcast()
        }
    }

    /// Stops the uploaders after their current file.
    public func stop() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        for worker in workers { while worker.isExecuting { usleep(10_000) } }
    }

    // MARK: - Uploading

    private func work() {
        while let entry = next() {
            let source: LocalFileSource
            do throws(NetdiskError) {
                source = try LocalFileSource(path: spoolPath(entry.file))
            } catch {
                failed(entry, error)
                continue
            }
            let progress = ProgressCounters(mode: .cached)
            let upload = CachedUpload(api: api, options: engine, budget: budget, progress: progress, logger: logger)
            do throws(NetdiskError) {
                let committed = try upload.upload(source, to: entry.remotePath, localMtime: entry.mtime)
                let callback = condition.withLock { onCommitted }
                callback?(entry, committed)
                condition.withLock {
                    forgetLocked(entry.id)
                    condition.broadcast()
                }
                logger.info("committed \(entry.remotePath) (\(entry.size) bytes, write-back, \(String(format: "%.2f", Date().timeIntervalSince1970 - entry.enqueuedAt)) s after close)")
            } catch {
                failed(entry, error)
            }
        }
    }

    /// The next entry due, marked uploading; nil when stopping.
    private func next() -> Entry? {
        condition.lock()
        defer { condition.unlock() }
        while !stopping {
            let now = Date().timeIntervalSince1970
            let due = entries.values
                .filter { !$0.uploading && $0.nextAttemptAt <= now && !isPausedLocked($0.remotePath) }
                .min { $0.id < $1.id }
            if let due {
                entries[due.id]?.uploading = true
                return entries[due.id]
            }
            let soonest = entries.values.filter { !$0.uploading }.map(\.nextAttemptAt).min() ?? now + 1
            _ = condition.wait(until: Date(timeIntervalSince1970: min(max(soonest, now + 0.05), now + 1)))
        }
        return nil
    }

    private func failed(_ entry: Entry, _ error: NetdiskError) {
        condition.lock()
        defer { condition.unlock() }
        guard var current = entries[entry.id] else { return }
        current.attempts += 1
        current.lastError = "\(error)"
        current.lastErrorAt = Date().timeIntervalSince1970
        let delay = min(options.maxBackoff, options.baseBackoff * pow(2, Double(min(current.attempts - 1, 20))))
        current.nextAttemptAt = Date().timeIntervalSince1970 + delay
        current.uploading = false
        entries[entry.id] = current
        _ = try? database.write { db in
            try db.execute(sql: "UPDATE queue SET attempts = ?, lastError = ? WHERE id = ?",
                           arguments: [current.attempts, current.lastError, entry.id])
        }
        logger.warning("write-back upload of \(entry.remotePath) failed (attempt \(current.attempts), next in \(Int(delay)) s; it stays queued): \(error)")
        condition.broadcast()
    }

    // MARK: - Plumbing (condition held)

    /// Makes room for a new entry at `path`: the old one is dropped, after its upload if one runs.
    private func replaceLocked(_ path: String) throws(NetdiskError) {
        while let id = byPath[path], entries[id]?.uploading == true { condition.wait() }
        if let id = byPath[path] { forgetLocked(id) }
    }

    private func insertLocked(_ entry: Entry) {
        entries[entry.id] = entry
        byPath[entry.remotePath] = entry.id
        byParent[Self.parent(of: entry.remotePath), default: []].insert(entry.id)
    }

    private func unindexLocked(_ entry: Entry) {
        if byPath[entry.remotePath] == entry.id { byPath[entry.remotePath] = nil }
        let parent = Self.parent(of: entry.remotePath)
        byParent[parent]?.remove(entry.id)
        if byParent[parent]?.isEmpty == true { byParent[parent] = nil }
    }

    private func relocateLocked(_ id: Int64, to path: String) {
        guard var entry = entries[id] else { return }
        unindexLocked(entry)
        entry.remotePath = path
        insertLocked(entry)
    }

    private func forgetLocked(_ id: Int64) {
        guard let entry = entries.removeValue(forKey: id) else { return }
        unindexLocked(entry)
        _ = try? database.write { db in try db.execute(sql: "DELETE FROM queue WHERE id = ?", arguments: [id]) }
        unlink(spoolPath(entry.file))
    }

    private func isPausedLocked(_ path: String) -> Bool {
        pausedSubtrees.contains { Self.isSelfOrDescendant(path, of: $0) }
    }

    /// Spool files no row names (a kill between writing one and journaling it: its close() had not
    /// returned), and rows whose spool file is gone (deleted by hand): neither can be uploaded.
    private func removeUnreferencedFiles() {
        let directory = options.directory + "/files"
        let known = Set(entries.values.map(\.file))
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where !known.contains(name) {
            unlink(directory + "/" + name)
        }
        for entry in entries.values where !FileManager.default.fileExists(atPath: spoolPath(entry.file)) {
            logger.error("write-back queue: the spool file of \(entry.remotePath) is missing (\(spoolPath(entry.file))); it cannot be uploaded and leaves the queue")
            forgetLocked(entry.id)
        }
    }

    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    static func isSelfOrDescendant(_ path: String, of ancestor: String) -> Bool {
        path == ancestor || ancestor == "/" || path.hasPrefix(ancestor + "/")
    }
}
