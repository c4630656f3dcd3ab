import Foundation
import Synchronization
import Uploader

/// The one upload of a path, shared by every descriptor open for writing on it.
///
/// A write after a commit (a child still writing after the opener closed) starts a new cached
/// session over the committed file, so no write is ever lost. An aborted writer (unlinked, or
/// replaced by a rename onto its name) never commits, and its handles answer EIO from then on:
/// the bytes they wrote are gone, and nothing else may be returned in their place.
///
/// Three locks, each for one reason:
/// - `operationLock` serializes data calls (which may block for backpressure or a commit);
/// - `commitLock` is held only while committing, so a rename waits for an in-flight commit to land
///   (then moves it) but never behind a writer blocked for memory;
/// - `stateLock` guards the fields, so `size` (getattr, readdir) never waits for either.
final class PathWriter: @unchecked Sendable {
    private let operationLock = NSLock()
    let commitLock = NSLock()
    private let stateLock = NSLock()
    private var path: String
    private var current: any WriteSession
    /// True while the session holds changes the cloud does not have.
    private var pending: Bool
    /// True once data calls changed the file (not just opened it).
    private var written = false
    private var aborted = false
    private var committedEntry: RemoteEntry?
    /// The cloud version the current session started from (cached mode over an existing file):
    /// a close with no change leaves that version committed as it is.
    private var base: RemoteEntry?
    private let reopen: @Sendable (String, RemoteEntry) throws -> any WriteSession
    private var modified = Int64(Date().timeIntervalSince1970)
    /// When the file was opened for writing, for the commit's log line (time and rate).
    let openedAt = ContinuousClock.now
    /// An mtime set while writing (`cp -p`'s futimens before close); a later write clears it.
    private var explicit: timespec?

    init(remotePath: String, session: any WriteSession, pendingAtStart: Bool, base: RemoteEntry? = nil,
         reopen: @escaping @Sendable (String, RemoteEntry) throws -> any WriteSession) {
        self.path = remotePath
        self.current = session
        self.pending = pendingAtStart
        self.base = base
        self.reopen = reopen
    }

    /// Where the file will be committed; changes when the file or a directory above it is renamed.
    var remotePath: String { stateLock.withLock { path } }
    var session: any WriteSession { stateLock.withLock { current } }
    var mtime: Int64 { stateLock.withLock { modified } }
    var explicitMtime: timespec? { stateLock.withLock { explicit } }

    /// utimens on the file being written: reported now, and given to Baidu at the commit.
    func setMtime(_ time: timespec) { stateLock.withLock { explicit = time } }
    var isAborted: Bool { stateLock.withLock { aborted } }

    var size: Int64 {
        stateLock.withLock { aborted ? 0 : (committedEntry?.size ?? current.size) }
    }

    /// The committed version while no later write has reopened the file; nil otherwise.
    var committed: RemoteEntry? { stateLock.withLock { committedEntry } }

    /// True when the cloud holds nothing of this writer's yet (no commit, or a later write pending).
    var hasUncommittedChanges: Bool { stateLock.withLock { !aborted && (committedEntry == nil) && pending } }

    /// Points the writer (and its session) at a new path. Call with `commitLock` held.
    func retarget(to newPath: String) {
        let session = stateLock.withLock { () -> any WriteSession in
            path = newPath
            if var entry = committedEntry {
                entry.path = newPath
                entry.name = RemotePath.split(newPath).name
                committedEntry = entry
            }
            return current
        }
        session.retarget(to: newPath)
    }

    /// The session to use now, reopening over the committed file if needed. The reopen happens under
    /// the commit lock, so a rename or unlink in between cannot leave it aimed at the old name.
    private func liveSession() throws -> any WriteSession {
        let (committed, session, isAborted, target) = stateLock.withLock { (committedEntry, current, aborted, path) }
        if isAborted { throw FileSystemError(EIO, "\(target) was unlinked or replaced while open; its bytes are gone") }
        guard committed != nil else { return session }
        return try commitLock.withLock {
            let (committed, session, isAborted, target) = stateLock.withLock { (committedEntry, current, aborted, path) }
            if isAborted { throw FileSystemError(EIO, "\(target) was unlinked or replaced while open; its bytes are gone") }
            guard let committed else { return session }
            let reopened = try reopen(target, committed)
            stateLock.withLock {
                current = reopened
                committedEntry = nil
                base = committed
            }
            return reopened
        }
    }

    private func touched() {
        let now = Int64(Date().timeIntervalSince1970)
        stateLock.withLock {
            pending = true
            written = true
            modified = now
            explicit = nil
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        try operationLock.withLock {
            try liveSession().write(bytes, at: offset)
            touched()
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try operationLock.withLock {
            try liveSession().read(into: buffer, at: offset)
        }
    }

    /// A read for a handle that must not change the writer: nil when the committed file should be read instead.
    func readWithoutReopening(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int? {
        try operationLock.withLock {
            let (committed, session, isAborted) = stateLock.withLock { (committedEntry, current, aborted) }
            if isAborted { throw FileSystemError(EIO, "the file was unlinked or replaced while being written") }
            if committed != nil { return nil }
            return try session.read(into: buffer, at: offset)
        }
    }

    func truncate(to size: Int64) throws {
        try operationLock.withLock {
            try liveSession().truncate(to: size)
            touched()
        }
    }

    /// The session's failure, if it already failed (fsync reports it).
    var failure: NetdiskError? {
        let session = stateLock.withLock { aborted ? nil : current }
        return session?.failure
    }

    /// Commits pending changes; returns the new entry, or nil when nothing was uploaded.
    ///
    /// `onlyIfWritten` (flush): a file opened but not yet written is left for the last release, so
    /// `echo x > f` (whose shell closes a dup of the descriptor before writing) uploads once, not twice.
    /// `onCommitted(entry, uploaded)` runs under the commit lock before the commit is published to
    /// getattr, so whoever waits on the lock, or looks, sees it recorded. A writer closed without a
    /// change (`touch` of an existing file) keeps the version it started from: `uploaded` is false.
    func commit(onlyIfWritten: Bool = false,
                keepEmptyLocally: (String, NetdiskError) throws -> RemoteEntry = { _, error in throw error },
                spool: (any WriteSession, String, Int64) throws -> RemoteEntry? = { _, _, _ in nil },
                onCommitted: (RemoteEntry, Bool) -> Void = { _, _ in }) throws -> RemoteEntry? {
        try operationLock.withLock {
            try commitLock.withLock {
                let (session, isPending, done, hasWrites, unchanged) = stateLock.withLock {
                    (current, pending, aborted || committedEntry != nil, written, base.map { entry -> RemoteEntry in
                        var entry = entry
                        entry.path = path
                        entry.name = RemotePath.split(path).name
                        return entry
                    })
                }
                if done { return nil }
                if onlyIfWritten && !hasWrites { return nil }
                guard isPending else {
                    // Opened for writing over an existing file and never changed: nothing to upload.
                    session.abort()
                    if let unchanged { onCommitted(unchanged, false) }
                    stateLock.withLock {
                        if let unchanged { committedEntry = unchanged } else { aborted = true }
                    }
                    return nil
                }
                // Renames retarget under the commit lock, so the path cannot move during finish.
                let mtime = stateLock.withLock { explicit.map { Int64($0.tv_sec) } ?? modified }
                session.setLocalMtime(mtime)
                let entry: RemoteEntry
                do {
                    // --writeback: a small file is spooled and queued, and close() returns now.
                    if let queued = try spool(session, path, mtime) {
                        entry = queued
                    } else {
                        entry = try session.finish()
                    }
                } catch let error as NetdiskError {
                    guard case .emptyFileRefused = error else { throw error }
                    entry = try keepEmptyLocally(path, error)
                }
                onCommitted(entry, true)
                stateLock.withLock {
                    committedEntry = entry
                    pending = false
                }
                return entry
            }
        }
    }

    /// Aborts the upload (unlink, or a rename onto this name): nothing is committed.
    /// Does not wait for a blocked write: the engine's abort wakes it.
    func abort() {
        let session = stateLock.withLock { () -> (any WriteSession)? in
            guard !aborted else { return nil }
            aborted = true
            return committedEntry == nil ? current : nil
        }
        session?.abort()
    }

    /// Aborts if changes are pending; true when something was thrown away.
    func abortIfUncommitted() -> Bool {
        let (session, wasPending) = stateLock.withLock { () -> ((any WriteSession)?, Bool) in
            guard !aborted, committedEntry == nil else { return (nil, false) }
            aborted = true
            return (current, pending)
        }
        session?.abort()
        return wasPending
    }
}
