#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Synchronization
import Uploader

/// The filesystem's logic, with no FUSE types: the FUSE adapter calls these with mount-relative
/// paths, and maps what they throw (`NetdiskError`, `FileSystemError`) to errno.
public final class NetdiskFileSystem: Sendable {
    public struct Options: Sendable {
        public var root: String = "/"
        public var readOnly = false
        public var dirCacheTTL: Duration = .seconds(30)
        /// Download connections the account may hold at once (1 for a normal account): read-ahead
        /// keeps at most this many windows in flight, and makes them larger when it is one.
        public var downloadConnections = 3
        public init() {}
    }

    let api: any NetdiskAPI
    let options: Options
    let paths: RemotePath
    let metadata: MetadataCache
    let links: DownloadLinkCache
    /// The daemon's one memory budget: read-ahead windows draw from it beside the write slices.
    let memory: MemoryBudget
    let writers: any WriteSessionFactory
    let uploads = UploadRegistry()
    let logger: Logger
    let handles = HandleTable()
    private let quotaCache = Mutex<(Quota, ContinuousClock.Instant)?>(nil)
    /// The (fs_id, size, mtime) each path had when last opened: same again → keep the page cache.
    let lastOpened = Mutex([String: RemoteEntry]())

    /// What Baidu cannot store (mtime, mode, owner), kept locally.
    let overlay: MetadataOverlay
    let readAheadTuning: RemoteFileReader.Tuning
    /// `--writeback`: small files queued at close() (nil: close() waits for the commit).
    let writeback: WritebackQueue?
    /// Whether the log has said once that empty files are kept locally.
    let emptyFileNotice = Mutex(false)
    /// Who owns what the overlay says nothing about: the user who mounted.
    let defaultOwner = (uid: UInt32(getuid()), gid: UInt32(getgid()))

    public init(api: any NetdiskAPI, writers: any WriteSessionFactory, memory: MemoryBudget, options: Options,
                overlay: MetadataOverlay? = nil, writeback: WritebackQueue? = nil, logger: Logger) {
        self.api = api
        self.writeback = writeback
        let overlay = overlay ?? MetadataOverlay(logger: logger)
        self.overlay = overlay
        self.writers = writers
        self.options = options
        self.paths = RemotePath(root: options.root)
        self.metadata = MetadataCache(api: api, ttl: options.dirCacheTTL,
                                      localEntries: { directory in overlay.localFiles(in: directory) },
                                      pendingEntries: { directory in
                                          writeback?.entries(in: directory).map(NetdiskFileSystem.queuedEntry) ?? [] })
        self.links = DownloadLinkCache(api: api)
        self.memory = memory
        var tuning = RemoteFileReader.Tuning()
        tuning.prefetchDepth = max(1, min(3, options.downloadConnections))
        // One connection: each window is one request and one round trip, so fewer, larger ones.
        if options.downloadConnections == 1 { tuning.maxWindow = 32 << 20 }
        self.readAheadTuning = tuning
        self.logger = logger
        uploads.queue.withLock { $0 = writeback }
        uploads.memory.withLock { $0 = memory }
        writeback?.start { [weak self] queued, committed in self?.queuedFileCommitted(queued, as: committed) }
    }

    public func statistics() throws(NetdiskError) -> Quota {
        let now = ContinuousClock.now
        if let (quota, at) = quotaCache.withLock({ $0 }), now - at < .seconds(10) { return quota }
        let api = self.api
        let quota = try Blocking.await { () async throws(NetdiskError) in try await api.quota() }
        quotaCache.withLock { $0 = (quota, now) }
        return quota
    }

    // MARK: directory operations

    public func makeDirectory(_ path: String, mode: UInt32 = FileAttributes.defaultDirectoryMode,
                              owner: (uid: UInt32, gid: UInt32)? = nil) throws {
        try requireWritable()
        let remote = paths.remote(path)
        if try resolve(remote) != nil { throw FileSystemError(EEXIST) }
        try RemotePath.checkNewName(remote)
        try requireDirectory(RemotePath.split(remote).parent)
        let api = self.api
        let entry = try Blocking.await { () async throws(NetdiskError) in try await api.makeDirectory(path: remote) }
        metadata.didCreate(entry)
        overlay.remove(remote, subtree: true)
        recordNew(remote, entry: entry, mode: mode, defaultMode: FileAttributes.defaultDirectoryMode, owner: owner)
        overlay.touchDirectory(RemotePath.split(remote).parent)
        logger.info("mkdir \(remote)")
    }

    public func removeDirectory(_ path: String) throws {
        try requireWritable()
        let remote = paths.remote(path)
        guard remote != paths.root else { throw FileSystemError.busy }
        guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
        guard entry.isDirectory else { throw FileSystemError.notDirectory }
        metadata.invalidate(remote)
        if !(try metadata.listing(of: remote).entries.isEmpty) || !handles.writers(in: remote).isEmpty {
            throw FileSystemError.notEmpty
        }
        try delete(remote, directory: true)
    }

    /// unlink(2). A file being written is aborted first: nothing of it is ever committed, and its
    /// open handles answer EIO from now on. A version it had already committed is deleted too.
    public func unlink(_ path: String) throws {
        try requireWritable()
        let remote = paths.remote(path)
        var abortedWriter = false
        if let writer = handles.writer(for: remote) {
            // Wait for a commit in flight, so the version it lands is the one deleted below.
            writer.commitLock.withLock { abortedWriter = handles.abortWriter(for: remote) != nil }
        }
        if abortedWriter {
            overlay.remove(remote)
            logger.info("unlink \(remote): upload in progress aborted, nothing committed")
        }
        if try unlinkQueued(remote) { return }
        guard let entry = try metadata.entry(at: remote) else {
            if abortedWriter { return }
            if case .link(let link)? = try resolve(remote) { return try delete(link.path) }
            throw FileSystemError.notFound
        }
        if entry.isDirectory { throw FileSystemError.isDirectory }
        try delete(remote)
    }

    /// Deletes in the cloud; `directory` also forgets the overlay of everything below it.
    func delete(_ remote: String, directory: Bool = false) throws {
        let api = self.api
        if !directory, let writeback, writeback.entry(at: remote) != nil {
            writeback.cancel(path: remote)
            // It may have been only queued: nothing in the cloud then.
            try deleteInCloudIfThere(remote)
            metadata.didRemove(remote)
            overlay.remove(remote)
            overlay.touchDirectory(RemotePath.split(remote).parent)
            logger.info("delete \(remote) (was queued for upload)")
            return
        }
        if !directory && overlay.isLocalFile(remote) {
            // An empty file the cloud refused lives only here.
            overlay.remove(remote)
            metadata.didRemove(remote)
            logger.info("delete \(remote) (kept locally)")
            return
        }
        try Blocking.await { () async throws(NetdiskError) in try await api.delete(paths: [remote]) }
        metadata.didRemove(remote)
        overlay.remove(remote, subtree: directory)
        overlay.touchDirectory(RemotePath.split(remote).parent)
        logger.info("delete \(remote)")
    }

    // MARK: files

    public struct Opened: Sendable {
        public var handle: UInt64
        public var keepCache: Bool
    }

    /// open(2). `caller` is the opening process (thread group): its close is the commit point.
    public func open(_ path: String, flags: Int32, caller: pid_t) throws -> Opened {
        let remote = paths.remote(path)
        let access = flags & O_ACCMODE
        if access == O_RDONLY && flags & O_TRUNC == 0 {
            if let writer = handles.writer(for: remote) {
                // A reader of a file being written: reads only, never commits or detaches the writer.
                return Opened(handle: handles.add(OpenFile(writer: writer, access: .read, opener: caller)), keepCache: false)
            }
            guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
            if entry.isDirectory { throw FileSystemError.isDirectory }
            let previous = lastOpened.withLock { last -> RemoteEntry? in
                defer { last[remote] = entry }
                return last[remote]
            }
            let keep = previous.map { $0.fsID == entry.fsID && $0.size == entry.size && $0.serverMtime == entry.serverMtime } ?? false
            return Opened(handle: handles.add(OpenFile(reader: makeReader(entry))), keepCache: keep)
        }
        try requireWritable()
        var existing = try metadata.entry(at: remote)
        if let queued = existing, WritebackQueue.isQueued(fsID: queued.fsID), handles.writer(for: remote) == nil {
            try settleQueued(remote, replacing: access == O_WRONLY && flags & O_TRUNC != 0)
            // Replaced (dropped from the queue) or committed: the name exists either way.
            existing = try metadata.entry(at: remote).flatMap { WritebackQueue.isQueued(fsID: $0.fsID) ? nil : $0 } ?? queued
        }
        if existing?.isDirectory == true { throw FileSystemError.isDirectory }
        if existing == nil && handles.writer(for: remote) == nil { throw FileSystemError.notFound }
        let mode: WriteMode = (access == O_WRONLY && flags & O_TRUNC != 0) ? .streaming : .cached(existing: existing)
        let (writer, handle) = try handles.attachWriteHandle(remotePath: remote, opener: caller) { () throws -> PathWriter in
            try makeWriter(remote, mode: mode)
        }
        do {
            if flags & O_TRUNC != 0 && writer.size > 0 { try writer.truncate(to: 0) }
        } catch {
            _ = handles.remove(handle)
            if handles.releaseWriteHandle(handle, of: writer) && handles.forgetWriterIfUnused(writer) {
                _ = writer.abortIfUncommitted()
                uploads.remove(writer.session)
            }
            throw UploadFailure.wrap(error)
        }
        lastOpened.withLock { $0[remote] = nil }
        return Opened(handle: handle, keepCache: false)
    }

    /// create(2) (open with O_CREAT of a name the kernel did not find).
    ///
    /// With O_EXCL the name is checked against a fresh listing, not the cached one: git's lock files
    /// (and every program that uses O_EXCL as a lock) depend on it seeing files made elsewhere.
    public func create(_ path: String, flags: Int32, mode: UInt32 = FileAttributes.defaultFileMode,
                       owner: (uid: UInt32, gid: UInt32)? = nil, caller: pid_t) throws -> UInt64 {
        try requireWritable()
        let remote = paths.remote(path)
        try RemotePath.checkNewName(remote)
        try requireDirectory(RemotePath.split(remote).parent)
        if flags & O_EXCL == 0, handles.writer(for: remote) == nil { try settleQueued(remote, replacing: true) }
        let existing = flags & O_EXCL != 0 ? try metadata.freshEntry(at: remote) : try metadata.entry(at: remote)
        if flags & O_EXCL != 0 && (existing != nil || handles.writer(for: remote) != nil) {
            throw FileSystemError(EEXIST)
        }
        if existing?.isDirectory == true { throw FileSystemError.isDirectory }
        if existing == nil && handles.writer(for: remote) == nil {
            // A new file: nothing recorded for an earlier one of that name applies.
            overlay.remove(remote)
            recordNew(remote, entry: nil, mode: mode, defaultMode: FileAttributes.defaultFileMode, owner: owner)
        }
        let (_, handle) = try handles.attachWriteHandle(remotePath: remote, opener: caller) { () throws -> PathWriter in
            try makeWriter(remote, mode: .streaming)
        }
        lastOpened.withLock { $0[remote] = nil }
        return handle
    }

    private func makeReader(_ entry: RemoteEntry) -> RemoteFileReader {
        if WritebackQueue.isQueued(fsID: entry.fsID) {
            if let reader = queuedReader(entry) { return reader }
            // Committed meanwhile: the cloud's copy.
            if let committed = try? metadata.entry(at: entry.path), !WritebackQueue.isQueued(fsID: committed.fsID) {
                return RemoteFileReader(entry: committed, links: links, budget: memory, tuning: readAheadTuning)
            }
        }
        return RemoteFileReader(entry: entry, links: links, budget: memory, tuning: readAheadTuning)
    }

    private func makeWriter(_ remote: String, mode: WriteMode) throws -> PathWriter {
        let session = try writers.makeSession(remotePath: remote, mode: mode)
        uploads.add(session, path: remote)
        let modeName: String
        if case .streaming = mode { modeName = "streaming" } else { modeName = "cached" }
        logger.info("open for write \(remote) (\(modeName))")
        let writers = self.writers, uploads = self.uploads
        // Streaming sessions always commit (a touched empty file must not be lost); a cached
        // session opened over an existing file commits only if something was written.
        let pendingAtStart: Bool
        if case .streaming = mode { pendingAtStart = true } else { pendingAtStart = false }
        var base: RemoteEntry?
        if case .cached(let existing) = mode { base = existing }
        return PathWriter(remotePath: remote, session: session, pendingAtStart: pendingAtStart, base: base) { [weak self] path, committed in
            var committed = committed
            if WritebackQueue.isQueued(fsID: committed.fsID), let self {
                // A write after a queued commit builds on it: the cloud must hold it first.
                try self.settleQueued(path, replacing: false)
                committed = try self.metadata.entry(at: path) ?? committed
            }
            let again = try writers.makeSession(remotePath: path, mode: .cached(existing: committed))
            uploads.add(again, path: path)
            return again
        }
    }

    public func read(handle: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        guard let file = handles.get(handle) else { throw FileSystemError.badHandle }
        if let reader = file.reader { return try reader.read(into: buffer, at: offset) }
        guard let writer = file.writer else { throw FileSystemError.badHandle }
        do {
            if file.isWriteHandle { return try writer.read(into: buffer, at: offset) }
            // A read-only share: once the writer committed, read the committed file (never reopen it).
            // A write handle may reopen it between the two looks; then the session answers again.
            for _ in 0..<3 {
                if let count = try writer.readWithoutReopening(into: buffer, at: offset) { return count }
                if let committed = writer.committed {
                    return try file.committedReader(for: committed, make: makeReader).read(into: buffer, at: offset)
                }
            }
            throw FileSystemError(EIO, "\(writer.remotePath) kept changing while it was read")
        } catch {
            throw UploadFailure.wrap(error)
        }
    }

    public func write(handle: UInt64, bytes: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        guard let file = handles.get(handle), file.isWriteHandle, let writer = file.writer else { throw FileSystemError.badHandle }
        do { try writer.write(bytes, at: offset) } catch { throw UploadFailure.wrap(error) }
        return bytes.count
    }

    public func truncate(_ path: String, size: Int64, handle: UInt64?) throws {
        try requireWritable()
        let remote = paths.remote(path)
        if let writer = handle.flatMap({ handles.get($0) }).flatMap({ $0.isWriteHandle ? $0.writer : nil }) ?? handles.writer(for: remote) {
            do { try writer.truncate(to: size) } catch { throw UploadFailure.wrap(error) }
            return
        }
        guard var entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
        if WritebackQueue.isQueued(fsID: entry.fsID) {
            try settleQueued(remote, replacing: size == 0)
            entry = try metadata.entry(at: remote).flatMap { WritebackQueue.isQueued(fsID: $0.fsID) ? nil : $0 } ?? entry
        }
        if entry.isDirectory { throw FileSystemError.isDirectory }
        if entry.size == size { return }
        // A truncate of a closed file: a cached session over the old content, committed now.
        let session = try writers.makeSession(remotePath: remote, mode: size == 0 ? .streaming : .cached(existing: entry))
        uploads.add(session, path: remote)
        defer { uploads.remove(session) }
        do {
            try session.truncate(to: size)
            let committed = try session.finish()
            metadata.didCreate(committed)
            overlay.bind(remote, to: committed, keepMtime: false)
        } catch {
            session.abort()
            throw UploadFailure.wrap(error)
        }
    }

    /// close(2) of one descriptor. Only the process that opened a write handle commits here, and
    /// only when no other write handle on the file is still open: then close returns after the
    /// commit, with its error. A child closing an inherited copy, or a reader, commits nothing.
    public func flush(handle: UInt64, caller: pid_t) throws {
        guard let file = handles.get(handle), file.isWriteHandle, let writer = file.writer else { return }
        guard caller == file.opener else { return }
        file.markOpenerClosed()
        guard handles.isLastOpenWriteHandle(handle, of: writer) else { return }
        try commit(writer, onlyIfWritten: true)
    }

    /// fsync(2): the upload's failure, if it already failed. The commit point stays close().
    public func fsync(handle: UInt64) throws {
        guard let file = handles.get(handle), file.isWriteHandle, let writer = file.writer else { return }
        if writer.isAborted { throw FileSystemError(EIO, "\(writer.remotePath) was unlinked or replaced while open") }
        if let failure = writer.failure { throw UploadFailure(underlying: failure) }
    }

    public func release(handle: UInt64) throws {
        guard let file = handles.remove(handle), file.isWriteHandle, let writer = file.writer else { return }
        // The last write handle: commit what close did not (a file never written, e.g. `touch`, a
        // write after the opener closed, a handle whose opener never closed it), BEFORE the writer
        // leaves the table, so the name never vanishes between. Nobody can receive this error.
        guard handles.releaseWriteHandle(handle, of: writer) else { return }
        var failure: (any Error)?
        do { try commit(writer) } catch {
            failure = error
            logger.error("commit of \(writer.remotePath) at the last release failed, and no process can be told: \(error)")
        }
        if handles.forgetWriterIfUnused(writer) { uploads.remove(writer.session) }
        if let failure { throw failure }
    }

    /// Failures propagate to the FUSE adapter; the engine has logged the reason.
    private func commit(_ writer: PathWriter, onlyIfWritten: Bool = false) throws {
        let mode = writer.session.modeName
        do {
            // Recorded under the writer's commit lock, so a rename sees the commit and its listing together.
            guard let entry = try writer.commit(onlyIfWritten: onlyIfWritten, keepEmptyLocally: { path, error in
                try keepEmptyLocally(path, refused: error)
            }, spool: { session, path, mtime in
                try spoolIfSmall(session, path: path, mtime: mtime)
            }, onCommitted: { entry, uploaded in
                // The overlay first: a getattr between the two must not find the new entry and a
                // pending overlay that does not match it yet.
                overlay.bind(entry.path, to: entry, keepMtime: !uploaded || writer.explicitMtime != nil)
                guard uploaded else { return }
                metadata.didCreate(entry)
                overlay.touchDirectory(RemotePath.split(entry.path).parent)
                lastOpened.withLock { $0[entry.path] = nil }
            }) else { return }
            if WritebackQueue.isQueued(fsID: entry.fsID) {
                logger.info("queued \(entry.path) for upload (\(entry.size) bytes, write-back)")
                return
            }
            let elapsed = ContinuousClock.now - writer.openedAt
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let rate = seconds > 0 ? Double(entry.size) / seconds / 1e6 : 0
            logger.info("committed \(entry.path) (\(entry.size) bytes in \(String(format: "%.2f", seconds)) s, \(String(format: "%.1f", rate)) MB/s, \(mode))")
        } catch {
            throw UploadFailure.wrap(error)
        }
    }

    /// The account refused an empty file: keep it in the overlay instead, so a `touch` is never lost.
    /// What the cloud held at that path is deleted first: the file was truncated, and its old
    /// content must not come back.
    private func keepEmptyLocally(_ path: String, refused error: NetdiskError) throws -> RemoteEntry {
        if let existing = try metadata.entry(at: path), !existing.isDirectory, existing.fsID != OverlayAttributes.localFileID {
            let api = self.api
            try Blocking.await { () async throws(NetdiskError) in try await api.delete(paths: [path]) }
        }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let entry = overlay.keepLocalFile(path, mtime: now)
        if emptyFileNotice.withLock({ seen in defer { seen = true }; return !seen }) {
            logger.warning("\(error): \(path) and every later empty file are kept in the local metadata overlay and shown by this mount only, until they get content")
        } else {
            logger.info("\(path) is empty and kept locally")
        }
        return entry
    }

    /// Aborts every upload still open (the mount is going away): nothing half-written is committed.
    public func shutdown() {
        defer { overlay.close() }
        for writer in handles.allWriters() where writer.abortIfUncommitted() {
            logger.warning("unmounted while \(writer.remotePath) was open for writing: upload aborted")
        }
    }

    /// The mode and owner a new file or directory was made with, when they differ from what is
    /// reported by default (so most files need no overlay entry at all).
    func recordNew(_ remote: String, entry: RemoteEntry?, mode: UInt32, defaultMode: UInt32, owner: (uid: UInt32, gid: UInt32)?) {
        let mode = mode & 0o7777
        let uid = owner.flatMap { $0.uid == defaultOwner.uid ? nil : $0.uid }
        let gid = owner.flatMap { $0.gid == defaultOwner.gid ? nil : $0.gid }
        guard mode != defaultMode || uid != nil || gid != nil else { return }
        overlay.update(remote, entry: entry) { attributes in
            if mode != defaultMode { attributes.mode = mode }
            if let uid { attributes.uid = uid }
            if let gid { attributes.gid = gid }
        }
    }

    func requireWritable() throws {
        if options.readOnly { throw FileSystemError.readOnly }
    }

    func requireDirectory(_ remote: String) throws {
        if remote == paths.root || remote == "/" { return }
        guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
        guard entry.isDirectory else { throw FileSystemError.notDirectory }
    }
}
