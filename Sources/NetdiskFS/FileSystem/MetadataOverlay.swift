import Foundation
import GRDB
import Logging
import Synchronization
import Uploader

/// What POSIX tools set that Baidu cannot store, for one path.
public struct OverlayAttributes: Sendable, Equatable {
    /// The remote file this belongs to: an entry whose fs_id or size differ was changed behind our
    /// back, and its overlay no longer applies. 0 while the file is being written (bound at commit).
    public var fsID: UInt64
    public var size: Int64
    public var mtime: timespec?
    /// Permission bits only (07777).
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    /// A symlink's target, once read (links are stored in the cloud; this only saves a download).
    public var linkTarget: String?

    public init(fsID: UInt64, size: Int64) {
        self.fsID = fsID
        self.size = size
    }

    var isEmpty: Bool {
        fsID != Self.localFileID && mtime == nil && mode == nil && uid == nil && gid == nil && linkTarget == nil
    }

    /// The fs_id of an empty file the cloud refused and the overlay keeps (no remote file has it).
    public static let localFileID = UInt64.max
    var isLocalFile: Bool { fsID == Self.localFileID }

    func applies(to entry: RemoteEntry) -> Bool {
        fsID != 0 && fsID == entry.fsID && (entry.isDirectory || size == entry.size)
    }

    public static func == (a: OverlayAttributes, b: OverlayAttributes) -> Bool {
        a.fsID == b.fsID && a.size == b.size && a.mtime?.tv_sec == b.mtime?.tv_sec && a.mtime?.tv_nsec == b.mtime?.tv_nsec
            && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.linkTarget == b.linkTarget
    }
}

/// The local overlay of metadata Baidu cannot store (DESIGN.md, "Metadata Baidu cannot store"):
/// mtime with nanoseconds, mode, uid and gid, keyed by remote path.
///
/// Why it is shaped this way:
/// - Reads are from memory: getattr and readdir of 100,000 files must not touch SQLite.
/// - Writes are batched: changes collect in memory and one transaction a second writes them
///   (WAL, synchronous=NORMAL), so `rsync` of 100,000 files is not 100,000 fsyncs. A kill -9 loses
///   at most the last second of changes, never the database.
/// - Entries follow renames (a directory's whole subtree) and are dropped on delete; an entry
///   whose remote file changed behind our back (fs_id or size differ) is ignored and forgotten.
public final class MetadataOverlay: @unchecked Sendable {
    private let queue: DatabaseQueue?
    private let logger: Logger
    private let state = Mutex(State())
    private let flushing = NSLock()
    private var flusher: Thread?
    private let stopped = Mutex(false)

    private struct State {
        var entries: [String: OverlayAttributes] = [:]
        /// Paths changed since the last flush (written, or deleted when absent from `entries`).
        var dirty: Set<String> = []
        /// Whether any entry is a local empty file (listings skip the scan when none ever was).
        var hasLocalFiles = false
    }

    /// An overlay kept in memory only (tests, or when the database cannot be opened).
    public init(logger: Logger) {
        queue = nil
        self.logger = logger
    }

    public init(path: String, logger: Logger) throws {
        self.logger = logger
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        try queue.write { db in
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS overlay (
                    path TEXT PRIMARY KEY NOT NULL, fsID INTEGER NOT NULL, size INTEGER NOT NULL,
                    mtimeSec INTEGER, mtimeNsec INTEGER, mode INTEGER, uid INTEGER, gid INTEGER, linkTarget TEXT)
                """)
        }
        let loaded = try queue.read { db -> [String: OverlayAttributes] in
            var loaded: [String: OverlayAttributes] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM overlay") {
                var attributes = OverlayAttributes(fsID: UInt64(bitPattern: row["fsID"]), size: row["size"])
                if let seconds: Int64 = row["mtimeSec"] {
                    attributes.mtime = timespec(tv_sec: Int(seconds), tv_nsec: Int(row["mtimeNsec"] as Int64? ?? 0))
                }
                attributes.mode = (row["mode"] as Int64?).map { UInt32($0) }
                attributes.uid = (row["uid"] as Int64?).map { UInt32($0) }
                attributes.gid = (row["gid"] as Int64?).map { UInt32($0) }
                attributes.linkTarget = row["linkTarget"]
                loaded[row["path"]] = attributes
            }
            return loaded
        }
        state.withLock {
            $0.entries = loaded
            $0.hasLocalFiles = loaded.values.contains { $0.isLocalFile }
        }
        self.queue = queue
        logger.debug("metadata overlay \(path): \(loaded.count) entries")
    }

    /// Starts the once-a-second writer.
    public func startFlushing() {
        guard queue != nil, flusher == nil else { return }
        flusher = NamedThread.start("nd.overlay") { [self] in
            while !stopped.withLock({ $0 }) {
                Thread.sleep(forTimeInterval: 1)
                flush()
            }
        }
    }

    /// Stops the writer and writes what is pending (unmount).
    public func close() {
        stopped.withLock { $0 = true }
        flush()
    }

    public var count: Int { state.withLock { $0.entries.count } }

    // MARK: empty files the cloud refused

    /// Keeps an empty file at `path` here, because the account refuses 0-byte uploads: the mount
    /// lists it, reads it as empty and renames and deletes it locally, until it gets content.
    func keepLocalFile(_ path: String, mtime: timespec) -> RemoteEntry {
        state.withLock { state in
            var attributes = state.entries[path] ?? OverlayAttributes(fsID: 0, size: 0)
            attributes.fsID = OverlayAttributes.localFileID
            attributes.size = 0
            attributes.linkTarget = nil
            if attributes.mtime == nil { attributes.mtime = mtime }
            state.entries[path] = attributes
            state.dirty.insert(path)
            state.hasLocalFiles = true
        }
        return Self.localEntry(path, mtime: mtime)
    }

    func isLocalFile(_ path: String) -> Bool {
        state.withLock { $0.entries[path]?.isLocalFile == true }
    }

    /// The empty files kept here in `directory`, as entries for its listing.
    func localFiles(in directory: String) -> [RemoteEntry] {
        state.withLock { state -> [RemoteEntry] in
            guard state.hasLocalFiles else { return [] }
            return state.entries.compactMap { path, attributes -> RemoteEntry? in
                guard attributes.isLocalFile, RemotePath.split(path).parent == directory else { return nil }
                return Self.localEntry(path, mtime: attributes.mtime ?? timespec(tv_sec: 0, tv_nsec: 0))
            }
        }
    }

    static func localEntry(_ path: String, mtime: timespec) -> RemoteEntry {
        RemoteEntry(fsID: OverlayAttributes.localFileID, path: path, name: RemotePath.split(path).name, size: 0,
                    isDirectory: false, serverMtime: Int64(mtime.tv_sec), localMtime: Int64(mtime.tv_sec))
    }

    /// The overlay of `path` if it still describes `entry`. A stale one is forgotten when
    /// `forgetStale` (not while a commit through the mount may be about to bind it).
    func attributes(at path: String, for entry: RemoteEntry, forgetStale: Bool = true) -> OverlayAttributes? {
        state.withLock { state in
            guard let attributes = state.entries[path] else { return nil }
            if attributes.applies(to: entry) { return attributes }
            if attributes.fsID != 0 && forgetStale {
                state.entries[path] = nil
                state.dirty.insert(path)
            }
            return nil
        }
    }

    /// The overlay of a file being written (bound to no remote file yet), or of whatever is there.
    func pending(at path: String) -> OverlayAttributes? {
        state.withLock { $0.entries[path] }
    }

    /// Changes the overlay of `path`, which now is `entry` (or a file being written, when nil).
    func update(_ path: String, entry: RemoteEntry?, _ change: (inout OverlayAttributes) -> Void) {
        state.withLock { state in
            var attributes = state.entries[path] ?? OverlayAttributes(fsID: 0, size: 0)
            if let entry {
                if !attributes.applies(to: entry) && attributes.fsID != 0 { attributes = OverlayAttributes(fsID: 0, size: 0) }
                attributes.fsID = entry.fsID
                attributes.size = entry.size
            }
            change(&attributes)
            state.entries[path] = attributes.isEmpty ? nil : attributes
            state.dirty.insert(path)
        }
    }

    /// A file at `path` was committed as `entry`: its pending overlay now describes that file.
    /// `keepMtime` false drops an mtime set before the last write (the write made it now).
    func bind(_ path: String, to entry: RemoteEntry, keepMtime: Bool) {
        state.withLock { state in
            guard var attributes = state.entries[path] else { return }
            attributes.fsID = entry.fsID
            attributes.size = entry.size
            if !keepMtime { attributes.mtime = nil }
            attributes.linkTarget = nil
            state.entries[path] = attributes.isEmpty ? nil : attributes
            state.dirty.insert(path)
        }
    }

    /// A queued file (write-back) was committed: what was set on it now describes the real file.
    func rebind(_ path: String, from localID: UInt64, to entry: RemoteEntry) {
        state.withLock { state in
            guard var attributes = state.entries[path], attributes.fsID == localID else { return }
            attributes.fsID = entry.fsID
            attributes.size = entry.size
            state.entries[path] = attributes
            state.dirty.insert(path)
        }
    }

    /// rename: the entry at `source` moves to `target`, replacing what was there; with `subtree`
    /// (a directory) everything below it moves too. Only a directory's rename scans the entries:
    /// rsync renames every file it writes, and 100,000 of them must not cost 100,000 scans.
    func move(from source: String, to target: String, subtree: Bool) {
        state.withLock { state in
            if subtree {
                for path in state.entries.keys where MetadataCache.isSelfOrDescendant(path, of: target) {
                    state.entries[path] = nil
                    state.dirty.insert(path)
                }
                let moving = state.entries.filter { MetadataCache.isSelfOrDescendant($0.key, of: source) }
                for (path, attributes) in moving {
                    let newPath = target + path.dropFirst(source.count)
                    state.entries[path] = nil
                    state.entries[newPath] = attributes
                    state.dirty.insert(path)
                    state.dirty.insert(newPath)
                }
                return
            }
            let attributes = state.entries.removeValue(forKey: source)
            state.entries[target] = attributes
            state.dirty.insert(source)
            state.dirty.insert(target)
        }
    }

    /// delete: the entry at `path`, and with `subtree` (a directory) everything below it.
    func remove(_ path: String, subtree: Bool = false) {
        state.withLock { state in
            if subtree {
                for key in state.entries.keys where MetadataCache.isSelfOrDescendant(key, of: path) {
                    state.entries[key] = nil
                    state.dirty.insert(key)
                }
            } else {
                state.entries[path] = nil
            }
            state.dirty.insert(path)
        }
    }

    /// Drops a directory's mtime (its entries changed) but keeps its mode and owner.
    func touchDirectory(_ path: String) {
        state.withLock { state in
            guard var attributes = state.entries[path], attributes.mtime != nil else { return }
            attributes.mtime = nil
            state.entries[path] = attributes.isEmpty ? nil : attributes
            state.dirty.insert(path)
        }
    }

    private static func row(_ path: String, _ a: OverlayAttributes) -> StatementArguments {
        let seconds: Int64? = a.mtime.map { Int64($0.tv_sec) }
        let nanoseconds: Int64? = a.mtime.map { Int64($0.tv_nsec) }
        let mode: Int64? = a.mode.map { Int64($0) }
        let uid: Int64? = a.uid.map { Int64($0) }
        let gid: Int64? = a.gid.map { Int64($0) }
        return [path, Int64(bitPattern: a.fsID), a.size, seconds, nanoseconds, mode, uid, gid, a.linkTarget]
    }

    /// Writes pending changes in one transaction.
    public func flush() {
        guard let queue else { return }
        flushing.withLock {
            let batch = state.withLock { state -> [(String, OverlayAttributes?)] in
                let batch = state.dirty.map { ($0, state.entries[$0]) }
                state.dirty.removeAll()
                return batch
            }
            guard !batch.isEmpty else { return }
            do {
                try queue.write { db in
                    for (path, attributes) in batch {
                        guard let a = attributes else {
                            try db.execute(sql: "DELETE FROM overlay WHERE path = ?", arguments: [path])
                            continue
                        }
                        try db.execute(sql: """
                            INSERT OR REPLACE INTO overlay (path, fsID, size, mtimeSec, mtimeNsec, mode, uid, gid, linkTarget)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """, arguments: Self.row(path, a))
                    }
                }
            } catch {
                // Put them back for the next attempt; nothing is lost while the daemon runs.
                state.withLock { state in for (path, _) in batch { state.dirty.insert(path) } }
                logger.error("metadata overlay: could not write \(batch.count) change(s): \(error)")
            }
        }
    }
}
