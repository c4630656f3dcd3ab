import Foundation
import Synchronization
import Uploader

/// One open(2) of a file: either a reader of a committed remote file or a share of a `PathWriter`.
final class OpenFile: Sendable {
    let remotePath: String
    let reader: RemoteFileReader?
    let writer: PathWriter?

    init(remotePath: String, reader: RemoteFileReader? = nil, writer: PathWriter? = nil) {
        self.remotePath = remotePath
        self.reader = reader
        self.writer = writer
    }
}

/// The one upload of a path, shared by every descriptor open for writing on it.
///
/// A write after a commit (a dup'd descriptor closed first) starts a new cached session over the
/// committed file, so no write is ever lost. An unlinked writer swallows later writes and never commits.
/// Two locks: `operationLock` serializes data calls (which may block for backpressure or a commit),
/// `stateLock` guards the fields, so `size` (getattr, readdir) never waits behind a blocked writer.
final class PathWriter: @unchecked Sendable {
    let remotePath: String
    private let operationLock = NSLock()
    private let stateLock = NSLock()
    private var current: any WriteSession
    /// True while the session holds changes the cloud does not have.
    private var pending: Bool
    /// True once data calls changed the file (not just opened it).
    private var written = false
    private var aborted = false
    private var committedEntry: RemoteEntry?
    private let reopen: @Sendable (RemoteEntry) throws -> any WriteSession
    private var modified = Int64(Date().timeIntervalSince1970)

    init(remotePath: String, session: any WriteSession, pendingAtStart: Bool,
         reopen: @escaping @Sendable (RemoteEntry) throws -> any WriteSession) {
        self.remotePath = remotePath
        self.current = session
        self.pending = pendingAtStart
        self.reopen = reopen
    }

    var session: any WriteSession { stateLock.withLock { current } }
    var mtime: Int64 { stateLock.withLock { modified } }

    var size: Int64 {
        stateLock.withLock { aborted ? 0 : (committedEntry?.size ?? current.size) }
    }

    /// The session to use now, reopening over the committed file if needed; nil once aborted.
    private func liveSession() throws -> (any WriteSession)? {
        let (committed, session, isAborted) = stateLock.withLock { (committedEntry, current, aborted) }
        if isAborted { return nil }
        guard let committed else { return session }
        let reopened = try reopen(committed)
        stateLock.withLock {
            current = reopened
            committedEntry = nil
        }
        return reopened
    }

    private func touched() {
        let now = Int64(Date().timeIntervalSince1970)
        stateLock.withLock {
            pending = true
            written = true
            modified = now
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        try operationLock.withLock {
            guard let session = try liveSession() else { return }
            try session.write(bytes, at: offset)
            touched()
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try operationLock.withLock {
            guard let session = try liveSession() else { return 0 }
            return try session.read(into: buffer, at: offset)
        }
    }

    func truncate(to size: Int64) throws {
        try operationLock.withLock {
            guard let session = try liveSession() else { return }
            try session.truncate(to: size)
            touched()
        }
    }

    /// Commits pending changes; returns the new entry, or nil when there was nothing to commit.
    ///
    /// `onlyIfWritten` (flush): a file opened but not yet written is left for the last release, so
    /// `echo x > f` (whose shell closes a dup of the descriptor before writing) uploads once, not twice.
    func commit(onlyIfWritten: Bool = false) throws -> RemoteEntry? {
        try operationLock.withLock {
            let (session, isPending, done, hasWrites) = stateLock.withLock { (current, pending, aborted || committedEntry != nil, written) }
            if done { return nil }
            if onlyIfWritten && !hasWrites { return nil }
            guard isPending else {
                // Opened for writing over an existing file and never changed: nothing to upload.
                session.abort()
                stateLock.withLock { aborted = true }
                return nil
            }
            let entry = try session.finish()
            stateLock.withLock {
                committedEntry = entry
                pending = false
            }
            return entry
        }
    }

    /// Aborts the upload (unlink of a file being written): nothing is committed.
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

/// Open handles by number (`fuse_file_info.fh`) and the writer of each path being written.
final class HandleTable: Sendable {
    private struct State {
        var nextHandle: UInt64 = 1
        var files: [UInt64: OpenFile] = [:]
        var writers: [String: PathWriter] = [:]
        var openCounts: [ObjectIdentifier: Int] = [:]
    }

    private let state = Mutex(State())

    func add(_ file: OpenFile) -> UInt64 {
        state.withLock { state in
            let handle = state.nextHandle
            state.nextHandle += 1
            state.files[handle] = file
            return handle
        }
    }

    func get(_ handle: UInt64) -> OpenFile? {
        state.withLock { $0.files[handle] }
    }

    func remove(_ handle: UInt64) -> OpenFile? {
        state.withLock { $0.files.removeValue(forKey: handle) }
    }

    func writer(for remotePath: String) -> PathWriter? {
        state.withLock { $0.writers[remotePath] }
    }

    func writers(in directory: String) -> [PathWriter] {
        state.withLock { state in
            state.writers.values.filter { RemotePath.split($0.remotePath).parent == directory }
        }
    }

    func allWriters() -> [PathWriter] {
        state.withLock { Array($0.writers.values) }
    }

    /// The path's writer (made by `make` if none), with one more open handle counted on it.
    func attachWriter(remotePath: String, make: () throws -> PathWriter) throws -> PathWriter {
        if let writer = state.withLock({ state -> PathWriter? in
            guard let writer = state.writers[remotePath] else { return nil }
            state.openCounts[ObjectIdentifier(writer), default: 0] += 1
            return writer
        }) {
            return writer
        }
        // Made outside the lock: the engine's precreate may take a network round trip.
        let made = try make()
        return state.withLock { state in
            if let raced = state.writers[remotePath] {
                made.abort()
                state.openCounts[ObjectIdentifier(raced), default: 0] += 1
                return raced
            }
            state.writers[remotePath] = made
            state.openCounts[ObjectIdentifier(made)] = 1
            return made
        }
    }

    func openCount(of writer: PathWriter) -> Int {
        state.withLock { $0.openCounts[ObjectIdentifier(writer)] ?? 0 }
    }

    /// One handle on the writer closed; true when it was the last one.
    func detachWriter(_ writer: PathWriter) -> Bool {
        state.withLock { state in
            let key = ObjectIdentifier(writer)
            let remaining = (state.openCounts[key] ?? 1) - 1
            if remaining > 0 {
                state.openCounts[key] = remaining
                return false
            }
            state.openCounts[key] = nil
            if state.writers[writer.remotePath] === writer { state.writers[writer.remotePath] = nil }
            return true
        }
    }

    /// Aborts and forgets the writer of a path (unlink while writing); true if there was one.
    func abortWriter(for remotePath: String) -> Bool {
        guard let writer = state.withLock({ $0.writers.removeValue(forKey: remotePath) }) else { return false }
        writer.abort()
        return true
    }
}
