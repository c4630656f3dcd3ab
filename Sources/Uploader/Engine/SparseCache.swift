import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The cached path's local file: sparse, seekable, backfilled on demand from a remote file.
///
/// Bytes below `backingLimit` that were never written locally still live in the cloud (the file
/// being modified, or the staging file a fallen-back stream was committed to); they are
/// downloaded only when read, and all at once before the commit. Everything else reads from the
/// local file, whose holes are zeros. Not thread-safe: its ``FileWriteSession`` serializes calls.
final class SparseCache: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private(set) var size: Int64
    private var present = ByteRanges()
    private let api: any NetdiskAPI
    private let backing: RemoteEntry?
    private var backingLimit: Int64
    private var dlink: String?
    private let logger: Logger

    init(directory: String, size: Int64, backing: RemoteEntry?, backingLimit: Int64, api: any NetdiskAPI,
         logger: Logger) throws(NetdiskError) {
        let dir = directory + "/files"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw .localIO("cannot create cache directory \(dir): \(error)")
        }
        path = dir + "/" + UUID().uuidString
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .localIO("create \(path): \(String(cString: strerror(errno)))") }
        // Held while the file is open: a sweep (CacheSweeper) leaves locked files alone.
        _ = flock(fd, LOCK_EX | LOCK_NB)
        self.size = 0
        self.api = api
        self.backing = backing
        self.backingLimit = backing == nil ? 0 : min(backingLimit, backing!.size)
        self.logger = logger
        try truncate(to: size)
        self.backingLimit = backing == nil ? 0 : min(backingLimit, backing!.size, size)
    }

    deinit { close(fd) }

    /// Deletes the local file (after commit or abort).
    func discard() { unlink(path) }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(NetdiskError) {
        try pwriteFully(fd: fd, bytes, at: offset, path: path)
        present.insert(offset..<offset + Int64(bytes.count))
        size = max(size, offset + Int64(bytes.count))
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        guard offset < size else { return 0 }
        let count = Int(min(Int64(buffer.count), size - offset))
        try ensureLocal(offset..<offset + Int64(count))
        return try preadFully(fd: fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset, path: path)
    }

    func truncate(to newSize: Int64) throws(NetdiskError) {
        guard ftruncate(fd, off_t(newSize)) == 0 else {
            throw .localIO("truncate \(path): \(String(cString: strerror(errno)))")
        }
        present.clip(to: newSize)
        backingLimit = min(backingLimit, newSize)
        size = newSize
    }

    /// Downloads every byte still only in the cloud, so the file can be hashed and uploaded.
    func backfillAll() throws(NetdiskError) { try ensureLocal(0..<size) }

    /// A read-only view for ``CachedUpload`` once everything is local.
    func source() -> any RandomAccessSource { CacheFileSource(fd: fd, size: size, path: path) }

    private func ensureLocal(_ range: Range<Int64>) throws(NetdiskError) {
        let remote = range.clamped(to: 0..<backingLimit)
        guard !remote.isEmpty, let backing else { return }
        for gap in present.gaps(in: remote) {
            var offset = gap.lowerBound
            while offset < gap.upperBound {
                let length = Int(min(Int64(8 << 20), gap.upperBound - offset))
                let bytes = try download(backing, offset: offset, length: length)
                guard bytes.count == length else {
                    throw .protocolViolation("download of \(backing.path) returned \(bytes.count) bytes, expected \(length)")
                }
                let written = bytes.withUnsafeBytes { raw in
                    Result { () throws(NetdiskError) in try pwriteFully(fd: fd, raw, at: offset, path: path) }
                }
                try written.get()
                present.insert(offset..<offset + Int64(length))
                offset += Int64(length)
            }
        }
    }

    private func download(_ entry: RemoteEntry, offset: Int64, length: Int) throws(NetdiskError) -> [UInt8] {
        let api = self.api
        for attempt in 0..<2 {
            let link: String
            if let dlink { link = dlink } else {
                let fsID = entry.fsID
                let links = try awaitBlocking { () async throws(NetdiskError) -> [UInt64: String] in
                    try await api.downloadLinks(fsIDs: [fsID])
                }
                guard let fetched = links[fsID] else { throw .notFound(code: -9) }
                dlink = fetched
                link = fetched
            }
            do throws(NetdiskError) {
                return try awaitBlocking { () async throws(NetdiskError) -> [UInt8] in
                    try await api.download(dlink: link, offset: offset, length: length)
                }
            } catch {
                guard error == .dlinkExpired, attempt == 0 else { throw error }
                logger.info("dlink of \(entry.path) expired; fetching a new one")
                dlink = nil
            }
        }
        throw .dlinkExpired
    }
}

private final class CacheFileSource: RandomAccessSource, @unchecked Sendable {
    let fd: Int32
    let size: Int64
    let path: String
    init(fd: Int32, size: Int64, path: String) {
        self.fd = fd
        self.size = size
        self.path = path
    }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        try preadFully(fd: fd, into: buffer, at: offset, path: path)
    }
}
