#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Synchronization
import Uploader

/// What getattr and readdir report for one name.
public struct FileAttributes: Sendable, Equatable {
    public var isDirectory: Bool
    public var size: Int64
    /// Seconds since the epoch.
    public var mtime: Int64
}

/// The filesystem's logic, with no FUSE types: the FUSE adapter calls these with mount-relative
/// paths, and maps what they throw (`NetdiskError`, `FileSystemError`) to errno.
public final class NetdiskFileSystem: Sendable {
    public struct Options: Sendable {
        public var root: String = "/"
        public var readOnly = false
        public var dirCacheTTL: Duration = .seconds(30)
        public var readAheadLimit = 64 << 20
        public init() {}
    }

    let api: any NetdiskAPI
    let options: Options
    let paths: RemotePath
    let metadata: MetadataCache
    let links: DownloadLinkCache
    let readBudget: ReadAheadBudget
    let writers: any WriteSessionFactory
    let uploads = UploadRegistry()
    let logger: Logger
    private let handles = HandleTable()
    private let quotaCache = Mutex<(Quota, ContinuousClock.Instant)?>(nil)
    /// The (fs_id, size, mtime) each path had when last opened: same again → keep the page cache.
    private let lastOpened = Mutex([String: RemoteEntry]())

    public init(api: any NetdiskAPI, writers: any WriteSessionFactory, options: Options, logger: Logger) {
        self.api = api
        self.writers = writers
        self.options = options
        self.paths = RemotePath(root: options.root)
        self.metadata = MetadataCache(api: api, ttl: options.dirCacheTTL)
        self.links = DownloadLinkCache(api: api)
        self.readBudget = ReadAheadBudget(limit: options.readAheadLimit)
        self.logger = logger
    }

    // MARK: metadata

    /// The engine assembles streams and fallbacks here before moving them into place; not user data.
    static let stagingDirectoryName = ".netdiskfs-staging"

    public func attributes(of path: String) throws -> FileAttributes {
        let remote = paths.remote(path)
        if let writer = handles.writer(for: remote) {
            return FileAttributes(isDirectory: false, size: writer.size, mtime: writer.mtime)
        }
        guard let entry = try metadata.entry(at: remote), entry.name != Self.stagingDirectoryName else {
            throw FileSystemError.notFound
        }
        return Self.attributes(of: entry)
    }

    static func attributes(of entry: RemoteEntry) -> FileAttributes {
        let mtime = entry.localMtime > 0 ? entry.localMtime : entry.serverMtime
        return FileAttributes(isDirectory: entry.isDirectory, size: entry.size, mtime: mtime)
    }

    /// Names and attributes of a directory, with files being written shown at their current size.
    public func list(_ path: String) throws -> [(name: String, attributes: FileAttributes)] {
        let remote = paths.remote(path)
        if remote != "/" {
            guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
            guard entry.isDirectory else { throw FileSystemError.notDirectory }
        }
        var entries = try metadata.listing(of: remote).entries.mapValues(Self.attributes(of:))
        entries[Self.stagingDirectoryName] = nil
        for writer in handles.writers(in: remote) {
            entries[RemotePath.split(writer.remotePath).name] = FileAttributes(isDirectory: false, size: writer.size, mtime: writer.mtime)
        }
        return entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
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

    public func makeDirectory(_ path: String) throws {
        try requireWritable()
        let remote = paths.remote(path)
        if try metadata.entry(at: remote) != nil || handles.writer(for: remote) != nil { throw FileSystemError(EEXIST) }
        try requireDirectory(RemotePath.split(remote).parent)
        let api = self.api
        let entry = try Blocking.await { () async throws(NetdiskError) in try await api.makeDirectory(path: remote) }
        metadata.didCreate(entry)
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
        try delete(remote)
    }

    public func unlink(_ path: String) throws {
        try requireWritable()
        let remote = paths.remote(path)
        let abortedWriter = handles.abortWriter(for: remote)
        if abortedWriter { logger.info("unlink \(remote): upload in progress aborted, nothing committed") }
        guard let entry = try metadata.entry(at: remote) else {
            if abortedWriter { return }
            throw FileSystemError.notFound
        }
        if entry.isDirectory { throw FileSystemError.isDirectory }
        try delete(remote)
    }

    private func delete(_ remote: String) throws {
        let api = self.api
        try Blocking.await { () async throws(NetdiskError) in try await api.delete(paths: [remote]) }
        metadata.didRemove(remote)
        logger.info("delete \(remote)")
    }

    /// rename(2): replaces a file, or an empty directory with a directory.
    public func rename(_ from: String, to: String, noReplace: Bool) throws {
        try requireWritable()
        let source = paths.remote(from), target = paths.remote(to)
        if source == target { return }
        if handles.writer(for: source) != nil { throw FileSystemError(EBUSY, "\(source) is being written") }
        guard let entry = try metadata.entry(at: source) else { throw FileSystemError.notFound }
        if entry.isDirectory && MetadataCache.isSelfOrDescendant(target, of: source) { throw FileSystemError(EINVAL) }
        try requireDirectory(RemotePath.split(target).parent)
        if let existing = try metadata.entry(at: target) {
            if noReplace { throw FileSystemError(EEXIST) }
            if entry.isDirectory && !existing.isDirectory { throw FileSystemError.notDirectory }
            if !entry.isDirectory && existing.isDirectory { throw FileSystemError.isDirectory }
            if existing.isDirectory {
                metadata.invalidate(target)
                guard try metadata.listing(of: target).entries.isEmpty else { throw FileSystemError.notEmpty }
                try delete(target)
            }
        }
        let (directory, name) = RemotePath.split(target)
        let api = self.api
        try Blocking.await { () async throws(NetdiskError) in
            try await api.move(from: source, toDirectory: directory, newName: name, ondup: .overwrite)
        }
        metadata.didRename(from: source, to: target, entry: entry)
        logger.info("rename \(source) -> \(target)")
    }

    /// chmod, chown and utimens are accepted for any existing name (Baidu keeps no such metadata).
    public func acceptMetadataChange(_ path: String) throws {
        _ = try attributes(of: path)
    }

    // MARK: files

    public struct Opened: Sendable {
        public var handle: UInt64
        public var keepCache: Bool
    }

    public func open(_ path: String, flags: Int32) throws -> Opened {
        let remote = paths.remote(path)
        let access = flags & O_ACCMODE
        if access == O_RDONLY && flags & O_TRUNC == 0 {
            if let writer = handles.writer(for: remote) {
                return Opened(handle: handles.add(OpenFile(remotePath: remote, writer: writer)), keepCache: false)
            }
            guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
            if entry.isDirectory { throw FileSystemError.isDirectory }
            let previous = lastOpened.withLock { last -> RemoteEntry? in
                defer { last[remote] = entry }
                return last[remote]
            }
            let keep = previous.map { $0.fsID == entry.fsID && $0.size == entry.size && $0.serverMtime == entry.serverMtime } ?? false
            let reader = RemoteFileReader(entry: entry, links: links, budget: readBudget)
            return Opened(handle: handles.add(OpenFile(remotePath: remote, reader: reader)), keepCache: keep)
        }
        try requireWritable()
        let existing = try metadata.entry(at: remote)
        if existing?.isDirectory == true { throw FileSystemError.isDirectory }
        if existing == nil && handles.writer(for: remote) == nil { throw FileSystemError.notFound }
        let mode: WriteMode = (access == O_WRONLY && flags & O_TRUNC != 0) ? .streaming : .cached(existing: existing)
        let writer = try handles.attachWriter(remotePath: remote) { () throws -> PathWriter in
            try makeWriter(remote, mode: mode, existingSize: existing?.size ?? 0)
        }
        if flags & O_TRUNC != 0 && writer.size > 0 { try writer.truncate(to: 0) }
        lastOpened.withLock { $0[remote] = nil }
        return Opened(handle: handles.add(OpenFile(remotePath: remote, writer: writer)), keepCache: false)
    }

    public func create(_ path: String, flags: Int32) throws -> UInt64 {
        try requireWritable()
        let remote = paths.remote(path)
        try requireDirectory(RemotePath.split(remote).parent)
        if let existing = try metadata.entry(at: remote), existing.isDirectory { throw FileSystemError.isDirectory }
        let writer = try handles.attachWriter(remotePath: remote) { () throws -> PathWriter in
            try makeWriter(remote, mode: .streaming, existingSize: 0)
        }
        lastOpened.withLock { $0[remote] = nil }
        return handles.add(OpenFile(remotePath: remote, writer: writer))
    }

    private func makeWriter(_ remote: String, mode: WriteMode, existingSize: Int64) throws -> PathWriter {
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
        _ = existingSize
        return PathWriter(remotePath: remote, session: session, pendingAtStart: pendingAtStart) { committed in
            let again = try writers.makeSession(remotePath: remote, mode: .cached(existing: committed))
            uploads.add(again, path: remote)
            return again
        }
    }

    public func read(handle: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        guard let file = handles.get(handle) else { throw FileSystemError.badHandle }
        if let writer = file.writer { return try writer.read(into: buffer, at: offset) }
        guard let reader = file.reader else { throw FileSystemError.badHandle }
        return try reader.read(into: buffer, at: offset)
    }

    public func write(handle: UInt64, bytes: UnsafeRawBufferPointer, at offset: Int64) throws -> Int {
        guard let file = handles.get(handle), let writer = file.writer else { throw FileSystemError.badHandle }
        try writer.write(bytes, at: offset)
        return bytes.count
    }

    public func truncate(_ path: String, size: Int64, handle: UInt64?) throws {
        try requireWritable()
        let remote = paths.remote(path)
        if let handle, let writer = handles.get(handle)?.writer {
            try writer.truncate(to: size)
            return
        }
        if let writer = handles.writer(for: remote) {
            try writer.truncate(to: size)
            return
        }
        guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
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
        } catch {
            session.abort()
            throw error
        }
    }

    /// close(2) of one descriptor: the file is committed here, so `cp` sees a failed upload as EIO.
    public func flush(handle: UInt64) throws {
        guard let file = handles.get(handle), let writer = file.writer else { return }
        if handles.openCount(of: writer) > 1 { return }
        try commit(writer, onlyIfWritten: true)
    }

    public func release(handle: UInt64) throws {
        guard let file = handles.remove(handle), let writer = file.writer else { return }
        // The last handle: commit what flush did not (a file never written, e.g. `touch`, or a write
        // after the last flush) BEFORE the writer leaves the table, so the name never vanishes between.
        var failure: (any Error)?
        if handles.openCount(of: writer) <= 1 {
            do { try commit(writer) } catch { failure = error }
        }
        if handles.detachWriter(writer) { uploads.remove(writer.session) }
        if let failure { throw failure }
    }

    /// Failures propagate to the FUSE adapter, which logs the reason once with the operation.
    private func commit(_ writer: PathWriter, onlyIfWritten: Bool = false) throws {
        let mode = writer.session.modeName
        guard let entry = try writer.commit(onlyIfWritten: onlyIfWritten) else { return }
        metadata.didCreate(entry)
        lastOpened.withLock { $0[writer.remotePath] = nil }
        logger.info("committed \(writer.remotePath) (\(entry.size) bytes, \(mode))")
    }

    /// Aborts every upload still open (the mount is going away): nothing half-written is committed.
    public func shutdown() {
        for writer in handles.allWriters() where writer.abortIfUncommitted() {
            logger.warning("unmounted while \(writer.remotePath) was open for writing: upload aborted")
        }
    }

    private func requireWritable() throws {
        if options.readOnly { throw FileSystemError.readOnly }
    }

    private func requireDirectory(_ remote: String) throws {
        if remote == paths.root || remote == "/" { return }
        guard let entry = try metadata.entry(at: remote) else { throw FileSystemError.notFound }
        guard entry.isDirectory else { throw FileSystemError.notDirectory }
    }
}
