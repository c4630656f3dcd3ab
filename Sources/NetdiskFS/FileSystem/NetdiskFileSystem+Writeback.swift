#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Uploader

/// `--writeback`: small files queued at close() and uploaded in the background (``WritebackQueue``).
///
/// What the mount shows meanwhile: the queued file at its path (over an older cloud version), read
/// from its spool file. Renames of a queued file are local; a change that keeps its content
/// (append, O_RDWR, truncate to a size) first waits for its upload; a change that replaces it
/// (O_TRUNC, unlink) drops it from the queue.
extension NetdiskFileSystem {
    static func queuedEntry(_ queued: WritebackQueue.Entry) -> RemoteEntry {
        RemoteEntry(fsID: queued.localFSID, path: queued.remotePath, name: RemotePath.split(queued.remotePath).name,
                    size: queued.size, isDirectory: false, serverMtime: Int64(queued.enqueuedAt), localMtime: queued.mtime)
    }

    static func queuedID(_ fsID: UInt64) -> Int64 { Int64(fsID & 0x0000_FFFF_FFFF_FFFF) }

    /// How long a change to a queued file waits for its upload before it answers EIO.
    static let queuedUploadWait: Double = 60

    /// Before `remote` is written or truncated: a queued version is dropped when the new content
    /// replaces it, else committed first (the change builds on it).
    func settleQueued(_ remote: String, replacing: Bool) throws {
        guard let writeback, writeback.entry(at: remote) != nil else { return }
        if replacing {
            writeback.cancel(path: remote)
            return
        }
        if let why = writeback.waitCommitted(path: remote, timeout: Self.queuedUploadWait) {
            throw FileSystemError(EIO, "\(remote) is queued for upload and the upload keeps failing: \(why)")
        }
    }

    /// The commit of a small file under `--writeback`: spooled, fsynced, journaled, queued. nil when
    /// the file is not one the queue takes (too large, empty, already failed).
    func spoolIfSmall(_ session: any WriteSession, path: String, mtime: Int64) throws -> RemoteEntry? {
        guard let writeback else { return nil }
        let size = session.size
        guard session.failure == nil, size > 0, size <= writeback.options.threshold else {
            // This commit uploads itself: an older queued version must not land after it.
            writeback.cancel(path: path)
            return nil
        }
        let queued: WritebackQueue.Entry?
        do {
            queued = try writeback.enqueue(path: path, size: size, mtime: mtime) { fd throws(NetdiskError) in
            let chunk = 1 << 20
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
            defer { buffer.deallocate() }
            var offset: Int64 = 0
            while offset < size {
                let want = Int(min(Int64(chunk), size - offset))
                let got: Int
                do { got = try session.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<want]), at: offset) }
                catch let error as NetdiskError { throw error }
                catch { throw .localIO("reading \(path) to spool it: \(error)") }
                guard got > 0 else { throw .localIO("\(path) ended at \(offset) of \(size) bytes while it was spooled") }
                var written = 0
                while written < got {
                    let n = Glibc.pwrite(fd, buffer.baseAddress! + written, got - written, off_t(offset) + off_t(written))
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw .localIO("spooling \(path): \(String(cString: strerror(errno)))")
                    }
                    written += n
                }
                offset += Int64(got)
            }
            }
        } catch NetdiskError.localIO(let why) {
            // The local disk failed us (full?): upload it now instead, as without --writeback.
            logger.warning("write-back: cannot spool \(path) (\(why)); uploading it before close() returns")
            writeback.cancel(path: path)
            return nil
        }
        guard let queued else {
            logger.warning("write-back queue full for 60 s (uploads failing?); \(path) uploads before close() returns")
            writeback.cancel(path: path)
            return nil
        }
        session.abort()
        return Self.queuedEntry(queued)
    }

    /// Deletes `remote` in the cloud; nothing there is fine.
    func deleteInCloudIfThere(_ remote: String) throws {
        let api = self.api
        do throws(NetdiskError) {
            try Blocking.await { () async throws(NetdiskError) in try await api.delete(paths: [remote]) }
        } catch {
            guard case .notFound = error else { throw error }
        }
    }

    /// A queued file was committed in the cloud: show the real entry from now on.
    func queuedFileCommitted(_ queued: WritebackQueue.Entry, as committed: RemoteEntry) {
        overlay.rebind(queued.remotePath, from: queued.localFSID, to: committed)
        metadata.didCreate(committed)
    }

    /// A reader of a queued file reads its spool file; nil when it was committed meanwhile.
    func queuedReader(_ entry: RemoteEntry) -> RemoteFileReader? {
        guard let writeback, let spool = writeback.openSpool(id: Self.queuedID(entry.fsID)) else { return nil }
        return RemoteFileReader(entry: entry, links: SpoolRangeSource(spool: spool), budget: memory, tuning: readAheadTuning)
    }

    /// unlink(2) of a queued file: it is dropped (after its upload, if one runs), and an older
    /// version in the cloud is deleted too. False when `remote` is not queued.
    func unlinkQueued(_ remote: String) throws -> Bool {
        guard let writeback, writeback.entry(at: remote) != nil else { return false }
        let uploadedMeanwhile = writeback.waitIfUploading(path: remote)
        writeback.cancel(path: remote)
        if uploadedMeanwhile { return false }
        // An older version in the cloud goes too; there may be none.
        try deleteInCloudIfThere(remote)
        metadata.didRemove(remote)
        overlay.remove(remote)
        overlay.touchDirectory(RemotePath.split(remote).parent)
        logger.info("delete \(remote) (queued for upload: dropped)")
        return true
    }
}

/// Reads a queued file's bytes from its spool file, through the same reader as remote files.
struct SpoolRangeSource: RangeSource {
    let spool: LocalFileSource

    func download(fsID: UInt64, offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(NetdiskError) -> Int {
        try spool.read(into: buffer, at: offset)
    }
}
