import Uploader

/// How a file being written reaches the cloud (DESIGN.md, "Write semantics").
public enum WriteMode: Sendable, Equatable {
    /// New file or O_WRONLY|O_TRUNC: chunks upload while the file is written, no local spool.
    case streaming
    /// O_RDWR, no O_TRUNC, O_APPEND or truncate: a sparse local cache backfilled from `existing`.
    case cached(existing: RemoteEntry?)
}

/// The engine's per-file upload, as the filesystem drives it.
///
/// `write` copies the bytes and may block for backpressure (the global memory budget); it is
/// called on FUSE threads. `finish` returns after the commit.
public protocol WriteSession: AnyObject, Sendable {
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int
    func truncate(to size: Int64) throws
    var size: Int64 { get }
    /// "streaming" or "cached" right now (a streaming session can fall back to cached).
    var modeName: String { get }
    /// Bytes the cloud has acknowledged so far.
    var bytesUploaded: Int64 { get }
    func finish() throws -> RemoteEntry
    func abort()
    /// The mtime (seconds) to give Baidu at the commit as `local_mtime`.
    func setLocalMtime(_ seconds: Int64?)
    /// Commit at this path instead (the open file, or a directory above it, was renamed).
    func retarget(to path: String)
    /// Why the session failed, once it has; fsync returns it before close does.
    var failure: NetdiskError? { get }
}

/// Makes write sessions; the engine provides the real one.
public protocol WriteSessionFactory: Sendable {
    func makeSession(remotePath: String, mode: WriteMode) throws -> any WriteSession
}
