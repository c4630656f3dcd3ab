import Foundation
import Logging

/// One file being written (through the mount, or `put -`): streams while writes come in order,
/// falls back to a local sparse cache when they do not, and commits at ``finish()``.
///
/// Methods are called from foreign threads (FUSE, a stdin reader), never from the Swift pool:
/// they may block, for backpressure (every buffer in flight) or for the commit. Calls on one
/// session are serialized; ``size`` and ``progress`` never wait for a blocked writer.
///
/// Streaming keeps at most `threads + 1` slice buffers. The stream is precreated
/// at a hidden staging path (a server binds an uploadid to its path, errno 10 otherwise) and moved
/// onto the target at finish, so the old file stays visible until the new one is complete.
/// A write behind bytes already handed to the uploader (or a read of them) switches to the cached
/// path: what was sent is committed at the staging path, the cache backfills from it on demand, the
/// final file is uploaded from the cache at finish and the staging file deleted. Nothing ever
/// appears at the target path before ``finish()`` succeeds.
public final class FileWriteSession: @unchecked Sendable {
    public enum Mode: Sendable {
        /// A new file, or O_TRUNC: upload while writing.
        case streaming
        /// Modify an existing file (nil: new file) through a local cache backfilled from it on demand.
        case cached(existing: RemoteEntry?)
    }

    public let remotePath: String
    /// Where the stream is assembled before it is moved to `remotePath`.
    private let stagingPath: String
    private let api: any NetdiskAPI
    private let options: EngineOptions
    private let budget: MemoryBudget
    private let logger: Logger
    private let counters: ProgressCounters
    private let lock = NSLock()
    private let sizeLock = NSLock()
    private var publishedSize: Int64 = 0
    private var state: State
    /// The streaming buffer pool, reachable without the session lock so abort can wake a blocked writer.
    private let streamPool: BufferPool?

    private enum State {
        case streaming(StreamingState)
        case cached(SparseCache, staging: String?)
        case finished(RemoteEntry)
        case failed(NetdiskError)
        case aborted
    }

    public init(api: any NetdiskAPI, remotePath: String, mode: Mode, options: EngineOptions, budget: MemoryBudget,
                logger: Logger, progressObserver: (@Sendable (UploadProgress) -> Void)? = nil) {
        self.api = api
        self.remotePath = remotePath
        stagingPath = options.stagingDirectory(for: remotePath) + "/" + UUID().uuidString
        self.options = options
        self.budget = budget
        self.logger = logger
        switch mode {
        case .streaming:
            counters = ProgressCounters(mode: .streaming, observer: progressObserver)
            // threads in flight + the one filling; writes ahead in the window wait for a buffer to free.
            let pool = BufferPool(bufferSize: options.sliceSize, limit: max(options.threads + 1, options.reorderWindowSlices),
                                  budget: budget)
            state = .streaming(StreamingState(slice: options.sliceSize, pool: pool))
            streamPool = pool
        case .cached(let existing):
            counters = ProgressCounters(mode: .cached, observer: progressObserver)
            streamPool = nil
            // Creating the cache file can fail; that failure is reported by the first call.
            do throws(NetdiskError) {
                let cache = try SparseCache(directory: options.cacheDirectory, size: existing?.size ?? 0, backing: existing,
                                            backingLimit: existing?.size ?? 0, api: api, logger: logger)
                state = .cached(cache, staging: nil)
                publishedSize = existing?.size ?? 0
            } catch {
                state = .failed(error)
            }
        }
    }

    /// Current logical size: a growing file shows in listings.
    public var size: Int64 {
        sizeLock.lock(); defer { sizeLock.unlock() }
        return publishedSize
    }

    public var progress: UploadProgress { counters.current }

    /// True once the session left the streaming path (fallback, refusal, or opened cached).
    public var isCached: Bool {
        lock.lock(); defer { lock.unlock() }
        if case .cached = state { return true }
        return false
    }

    private func publish(_ size: Int64) {
        sizeLock.lock(); publishedSize = size; sizeLock.unlock()
    }

    // MARK: - Calls from the producer

    /// Copies `bytes` and returns; blocks only for backpressure.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(NetdiskError) {
        lock.lock(); defer { lock.unlock() }
        let end = offset + Int64(bytes.count)
        guard offset >= 0 else { throw .badParameter(code: 0, message: "negative offset") }
        if end > options.effectiveMaxFileSize {
            logger.error("write to \(remotePath) at \(offset)+\(bytes.count) crosses the maximum file size \(options.effectiveMaxFileSize)")
            throw .fileTooLarge(limit: options.effectiveMaxFileSize)
        }
        switch state {
        case .streaming(let stream):
            if let error = stream.pipeline?.error { fail(error); throw error }
            if stream.accepts(offset: offset, end: end, window: options.reorderWindowSlices) {
                do throws(NetdiskError) {
                    // A full head part is submitted before the next part's buffer is acquired, so a
                    // file never waits for memory while holding a part it could already send.
                    var refused = false
                    try stream.copy(bytes, at: offset) { () throws(NetdiskError) in
                        if !refused, try advance(stream) == .refused { refused = true }
                    }
                    counters.addWritten(Int64(bytes.count))
                    publish(stream.size)
                    if !refused, try advance(stream) == .refused { refused = true }
                    if refused {
                        try fallBack(stream, reason: "the server refused the streaming precreate")
                    }
                } catch {
                    fail(error); throw error
                }
                return
            }
            let reason = offset < stream.frontier
                ? "write at \(offset) lands behind \(stream.frontier) bytes already sent"
                : "write at \(offset) is too far ahead of the write head"
            do throws(NetdiskError) { try fallBack(stream, reason: reason) } catch { fail(error); throw error }
            try cachedWrite(bytes, at: offset)
        case .cached:
            try cachedWrite(bytes, at: offset)
        case .finished, .aborted:
            throw .cancelled
        case .failed(let error):
            throw error
        }
    }

    /// Appends at the end of the file by letting `fill` write straight into the head section buffer
    /// (at most `limit` bytes; it returns how many it wrote, 0 for end of input). Saves the copy of
    /// ``write(_:at:)`` for sequential producers such as `put -`.
    public func append(limit: Int, _ fill: (UnsafeMutableRawBufferPointer) throws(NetdiskError) -> Int) throws(NetdiskError) -> Int {
        lock.lock()
        if case .streaming(let stream) = state, stream.pipeline?.error == nil {
            let offset = stream.size
            let room = Int(min(Int64(limit), options.effectiveMaxFileSize + 1 - offset))
            if room > 0, stream.accepts(offset: offset, end: offset + 1, window: options.reorderWindowSlices) {
                defer { lock.unlock() }
                do throws(NetdiskError) {
                    let target = try stream.headSpace(at: offset, limit: room)
                    let n = try fill(target)
                    guard n > 0 else { return 0 }
                    if offset + Int64(n) > options.effectiveMaxFileSize {
                        logger.error("write to \(remotePath) at \(offset)+\(n) crosses the maximum file size \(options.effectiveMaxFileSize)")
                        throw .fileTooLarge(limit: options.effectiveMaxFileSize)
                    }
                    stream.commitHead(at: offset, count: n)
                    counters.addWritten(Int64(n))
                    publish(stream.size)
                    if try advance(stream) == .refused { try fallBack(stream, reason: "the server refused the streaming precreate") }
                    return n
                } catch {
                    fail(error); throw error
                }
            }
        }
        lock.unlock()
        // Not streaming (or an edge): fill a temporary buffer and write it like any other producer.
        let temporary = UnsafeMutableRawBufferPointer.allocate(byteCount: limit, alignment: 16)
        defer { temporary.deallocate() }
        let n = try fill(temporary)
        if n > 0 { try write(UnsafeRawBufferPointer(rebasing: temporary[0..<n]), at: size) }
        return n
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        lock.lock(); defer { lock.unlock() }
        switch state {
        case .streaming(let stream):
            guard offset < stream.size else { return 0 }
            if offset >= stream.frontier { return stream.read(into: buffer, at: offset) }
            do throws(NetdiskError) {
                try fallBack(stream, reason: "read at \(offset) of bytes already sent")
            } catch { fail(error); throw error }
            return try read(cachedInto: buffer, at: offset)
        case .cached:
            return try read(cachedInto: buffer, at: offset)
        case .finished, .aborted:
            throw .cancelled
        case .failed(let error):
            throw error
        }
    }

    public func truncate(to newSize: Int64) throws(NetdiskError) {
        lock.lock(); defer { lock.unlock() }
        guard newSize >= 0 else { throw .badParameter(code: 0, message: "negative size") }
        if newSize > options.effectiveMaxFileSize { throw .fileTooLarge(limit: options.effectiveMaxFileSize) }
        switch state {
        case .streaming(let stream):
            if newSize >= stream.frontier {
                stream.truncate(to: newSize)
                publish(newSize)
                return
            }
            do throws(NetdiskError) {
                try fallBack(stream, reason: "truncate to \(newSize) cuts into bytes already sent")
            } catch { fail(error); throw error }
            try truncate(cachedTo: newSize)
        case .cached:
            try truncate(cachedTo: newSize)
        case .finished, .aborted:
            throw .cancelled
        case .failed(let error):
            throw error
        }
    }

    /// Blocking: returns after the file is committed in the cloud.
    public func finish() throws(NetdiskError) -> RemoteEntry {
        lock.lock(); defer { lock.unlock() }
        switch state {
        case .streaming(let stream):
            do throws(NetdiskError) {
                let entry = try finishStreaming(stream)
                state = .finished(entry)
                counters.setMode(.done)
                return entry
            } catch {
                stream.cancel(error)
                fail(error)
                logger.error("upload of \(remotePath) failed, nothing was committed: \(error)")
                throw error
            }
        case .cached(let cache, let staging):
            do throws(NetdiskError) {
                try cache.backfillAll()
                let upload = CachedUpload(api: api, options: options, budget: budget, progress: counters, logger: logger)
                let entry = try upload.upload(cache.source(), to: remotePath)
                cache.discard()
                if let staging { deleteQuietly(staging) }
                state = .finished(entry)
                counters.setMode(.done)
                return entry
            } catch {
                cache.discard()
                if let staging { deleteQuietly(staging) }
                fail(error)
                logger.error("upload of \(remotePath) failed, nothing was committed: \(error)")
                throw error
            }
        case .finished(let entry):
            return entry
        case .aborted:
            throw .cancelled
        case .failed(let error):
            throw error
        }
    }

    /// Unlink or shutdown: stops everything; nothing is committed at the target path.
    /// A writer blocked for backpressure is woken (its write fails with `.cancelled`) first.
    public func abort() {
        streamPool?.cancel()
        lock.lock(); defer { lock.unlock() }
        switch state {
        case .streaming(let stream):
            stream.cancel(.cancelled)
        case .cached(let cache, let staging):
            cache.discard()
            if let staging { deleteQuietly(staging) }
        case .finished, .failed, .aborted:
            break
        }
        if case .finished = state { return }
        state = .aborted
        counters.setMode(.failed)
    }

    // MARK: - Streaming

    private enum AdvanceResult { case ok, refused }

    /// Hands every complete part at the head to the pipeline, starting the upload on the first one.
    private func advance(_ stream: StreamingState) throws(NetdiskError) -> AdvanceResult {
        while let slot = stream.slots[stream.sentParts], slot.isFull(stream.slice) {
            if stream.pipeline == nil {
                if try !start(stream) { return .refused }
            }
            try stream.submitHead(length: stream.slice)
        }
        return .ok
    }

    /// The placeholder precreate; false when the server refuses streaming for this file.
    private func start(_ stream: StreamingState) throws(NetdiskError) -> Bool {
        let api = self.api, path = stagingPath
        let uploadID: String
        do throws(NetdiskError) {
            uploadID = try awaitBlocking { () async throws(NetdiskError) -> String in
                try await api.precreateStreaming(path: path, policy: .overwrite)
            }
        } catch {
            switch error {
            case .tokenInvalid, .notLoggedIn, .quotaExceeded, .invalidName, .alreadyExists, .transport, .cancelled,
                 .rateLimited:
                throw error
            default:
                logger.warning("streaming precreate for \(path) refused (\(error)); this file takes the cached path")
                return false
            }
        }
        let uploader = PartUploader(api: api, path: path, uploadID: uploadID, attempts: options.partAttempts,
                                    baseDelay: options.retryBaseDelay, progress: counters, logger: logger)
        stream.uploadID = uploadID
        stream.pipeline = OrderedPipeline(threads: options.threads, name: "netdiskfs.stream", progress: counters,
                                          upload: { partseq, bytes, md5 throws(NetdiskError) in
                                              try uploader.upload(partseq: partseq, bytes: bytes, md5: md5) })
        return true
    }

    private func finishStreaming(_ stream: StreamingState) throws(NetdiskError) -> RemoteEntry {
        if stream.pipeline == nil {
            // Nothing sent yet (small file, or empty): a known-content upload, rapid first.
            let source = stream.memorySource()
            // Its own small budget: the window already holds this file's share of the global one.
            let upload = CachedUpload(api: api, options: options, budget: MemoryBudget(bytes: Int.max / 2),
                                      progress: counters, logger: logger)
            let entry = try upload.upload(source, to: remotePath)
            stream.cancel(.cancelled)
            return entry
        }
        let slice = Int64(stream.slice)
        let partCount = Int((stream.size + slice - 1) / slice)
        while stream.sentParts < partCount {
            let length = Int(min(slice, stream.size - Int64(stream.sentParts) * slice))
            try stream.fillHead(length: length)
            try stream.submitHead(length: length)
        }
        guard let pipeline = stream.pipeline, let uploadID = stream.uploadID else { throw .cancelled }
        let md5s = try pipeline.finish()
        let blockList = try (0..<partCount).map { (partseq) throws(NetdiskError) -> String in
            guard let md5 = md5s[partseq] else { throw .protocolViolation("part \(partseq) has no MD5") }
            return md5
        }
        let api = self.api, staging = stagingPath, size = stream.size
        let staged = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in
            try await api.create(path: staging, size: size, uploadID: uploadID, blockList: blockList, localMtime: nil,
                                 policy: .overwrite)
        }
        stream.pool.close()
        do throws(NetdiskError) {
            return try moveIntoPlace(staged)
        } catch {
            deleteQuietly(staging)
            throw error
        }
    }

    /// The commit proper: moves the complete staging file onto the target path.
    private func moveIntoPlace(_ staged: RemoteEntry) throws(NetdiskError) -> RemoteEntry {
        let api = self.api, staging = stagingPath, target = remotePath
        let directory = (target as NSString).deletingLastPathComponent
        let name = (target as NSString).lastPathComponent
        let ondup: DuplicatePolicy = options.conflictPolicy == .fail ? .fail : .overwrite
        for attempt in 0..<2 {
            do throws(NetdiskError) {
                try awaitBlocking { () async throws(NetdiskError) in
                    try await api.move(from: staging, toDirectory: directory, newName: name, ondup: ondup)
                }
                break
            } catch {
                guard case .notFound = error, attempt == 0 else { throw error }
                _ = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in try await api.makeDirectory(path: directory) }
            }
        }
        var entry = staged
        entry.path = target
        entry.name = name
        return entry
    }

    // MARK: - Fallback and the cached path

    /// Moves a streaming session to the cached path. Bytes already sent are committed to a staging
    /// file the cache backfills from; bytes still in memory are written to the cache file.
    private func fallBack(_ stream: StreamingState, reason: String) throws(NetdiskError) {
        logger.notice("\(remotePath): switching to the cached path: \(reason)")
        var staging: String?
        var backing: RemoteEntry?
        let sentBytes = stream.frontier
        if let pipeline = stream.pipeline, let uploadID = stream.uploadID, stream.sentParts > 0 {
            let md5s = try pipeline.finish()
            let blockList = try (0..<stream.sentParts).map { (partseq) throws(NetdiskError) -> String in
                guard let md5 = md5s[partseq] else { throw .protocolViolation("part \(partseq) has no MD5") }
                return md5
            }
            let api = self.api, path = stagingPath
            backing = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in
                try await api.create(path: path, size: sentBytes, uploadID: uploadID, blockList: blockList,
                                     localMtime: nil, policy: .overwrite)
            }
            staging = path
        } else {
            stream.pipeline?.cancel(.cancelled)
        }
        do throws(NetdiskError) {
            let cache = try SparseCache(directory: options.cacheDirectory, size: stream.size, backing: backing,
                                        backingLimit: sentBytes, api: api, logger: logger)
            try stream.spill(into: cache)
            stream.releaseAll()
            state = .cached(cache, staging: staging)
            counters.setMode(.cached)
        } catch {
            if let staging { deleteQuietly(staging) }
            throw error
        }
    }

    private func cachedCache() throws(NetdiskError) -> SparseCache {
        switch state {
        case .cached(let cache, _): return cache
        case .failed(let error): throw error
        default: throw .cancelled
        }
    }

    private func cachedWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(NetdiskError) {
        let cache = try cachedCache()
        do throws(NetdiskError) { try cache.write(bytes, at: offset) } catch { fail(error); throw error }
        counters.addWritten(Int64(bytes.count))
        publish(cache.size)
    }

    private func read(cachedInto buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        try cachedCache().read(into: buffer, at: offset)
    }

    private func truncate(cachedTo size: Int64) throws(NetdiskError) {
        let cache = try cachedCache()
        try cache.truncate(to: size)
        publish(size)
    }

    private func fail(_ error: NetdiskError) {
        switch state {
        case .streaming(let stream): stream.cancel(error)
        case .cached(let cache, let staging):
            cache.discard()
            if let staging { deleteQuietly(staging) }
        default: break
        }
        state = .failed(error)
        counters.setMode(.failed)
    }

    private func deleteQuietly(_ path: String) {
        let api = self.api
        do throws(NetdiskError) {
            try awaitBlocking { () async throws(NetdiskError) in try await api.delete(paths: [path]) }
        } catch {
            logger.warning("could not delete staging file \(path): \(error)")
        }
    }
}

/// The streaming state of a ``FileWriteSession``: the in-memory window of parts not yet sent.
final class StreamingState: @unchecked Sendable {
    final class Slot {
        let buffer: SectionBuffer
        var written = ByteRanges()
        init(buffer: SectionBuffer) { self.buffer = buffer }
        func isFull(_ slice: Int) -> Bool { written.contains(0..<Int64(slice)) }
    }

    let slice: Int
    let pool: BufferPool
    /// Parts handed to the pipeline; everything below `frontier` is immutable.
    var sentParts = 0
    var slots: [Int: Slot] = [:]
    var size: Int64 = 0
    var pipeline: OrderedPipeline?
    var uploadID: String?

    init(slice: Int, pool: BufferPool) {
        self.slice = slice
        self.pool = pool
    }

    var frontier: Int64 { Int64(sentParts) * Int64(slice) }

    func accepts(offset: Int64, end: Int64, window: Int) -> Bool {
        offset >= frontier && end <= Int64(sentParts + window) * Int64(slice)
    }

    /// Copies into the window; `afterPart` runs after each part touched (to submit a part it filled).
    func copy(_ bytes: UnsafeRawBufferPointer, at offset: Int64,
              afterPart: () throws(NetdiskError) -> Void = {}) throws(NetdiskError) {
        guard !bytes.isEmpty else {
            size = max(size, offset)
            return
        }
        var cursor = offset
        var source = 0
        let end = offset + Int64(bytes.count)
        while cursor < end {
            let part = Int(cursor / Int64(slice))
            let local = Int(cursor - Int64(part) * Int64(slice))
            let n = min(slice - local, Int(end - cursor))
            let slot = try slotFor(part)
            (slot.buffer.base + local).copyMemory(from: bytes.baseAddress! + source, byteCount: n)
            slot.written.insert(Int64(local)..<Int64(local + n))
            cursor += Int64(n)
            source += n
            size = max(size, cursor)
            if cursor < end { try afterPart() }
        }
    }

    /// Free space of the head slot at `offset` (the end of the file), for a producer to fill in place.
    func headSpace(at offset: Int64, limit: Int) throws(NetdiskError) -> UnsafeMutableRawBufferPointer {
        let part = Int(offset / Int64(slice))
        let local = Int(offset - Int64(part) * Int64(slice))
        let slot = try slotFor(part)
        return UnsafeMutableRawBufferPointer(start: slot.buffer.base + local, count: min(slice - local, limit))
    }

    /// Records `count` bytes a producer wrote in place at `offset` (see ``headSpace(at:limit:)``).
    func commitHead(at offset: Int64, count: Int) {
        let part = Int(offset / Int64(slice))
        let local = Int64(offset - Int64(part) * Int64(slice))
        slots[part]?.written.insert(local..<local + Int64(count))
        size = max(size, offset + Int64(count))
    }

    private func slotFor(_ part: Int) throws(NetdiskError) -> Slot {
        if let slot = slots[part] { return slot }
        let slot = Slot(buffer: try pool.acquire())
        slots[part] = slot
        return slot
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        let count = Int(min(Int64(buffer.count), size - offset))
        var done = 0
        while done < count {
            let position = offset + Int64(done)
            let part = Int(position / Int64(slice))
            let local = Int(position - Int64(part) * Int64(slice))
            let n = min(slice - local, count - done)
            let target = buffer.baseAddress! + done
            target.initializeMemory(as: UInt8.self, repeating: 0, count: n)
            if let slot = slots[part] {
                for range in slot.written.ranges {
                    let lo = max(Int(range.lowerBound), local), hi = min(Int(range.upperBound), local + n)
                    if lo < hi { (target + (lo - local)).copyMemory(from: slot.buffer.base + lo, byteCount: hi - lo) }
                }
            }
            done += n
        }
        return count
    }

    func truncate(to newSize: Int64) {
        for (part, slot) in slots where Int64(part) * Int64(slice) >= newSize {
            pool.release(slot.buffer)
            slots[part] = nil
        }
        let lastPart = Int(newSize / Int64(slice))
        if let slot = slots[lastPart] {
            slot.written.clip(to: newSize - Int64(lastPart) * Int64(slice))
        }
        size = newSize
    }

    /// Zero-fills the holes of the head part (a sparse stretch, or a truncate that extended the file).
    func fillHead(length: Int) throws(NetdiskError) {
        let slot = try slotFor(sentParts)
        for gap in slot.written.gaps(in: 0..<Int64(length)) {
            (slot.buffer.base + Int(gap.lowerBound)).initializeMemory(as: UInt8.self, repeating: 0,
                                                                      count: Int(gap.upperBound - gap.lowerBound))
        }
        slot.written.insert(0..<Int64(length))
    }

    func submitHead(length: Int) throws(NetdiskError) {
        guard let pipeline, let slot = slots.removeValue(forKey: sentParts) else { return }
        slot.buffer.count = length
        let pool = self.pool, buffer = slot.buffer
        let partseq = sentParts
        sentParts += 1
        try pipeline.submit(PipelineJob(partseq: partseq, bytes: buffer.bytes, knownMD5: nil,
                                        release: { pool.release(buffer) }))
    }

    /// Writes the in-memory window to the cache file (fallback).
    func spill(into cache: SparseCache) throws(NetdiskError) {
        for (part, slot) in slots {
            let base = Int64(part) * Int64(slice)
            for range in slot.written.ranges {
                let hi = min(range.upperBound, size - base)
                guard hi > range.lowerBound else { continue }
                try cache.write(UnsafeRawBufferPointer(start: slot.buffer.base + Int(range.lowerBound),
                                                       count: Int(hi - range.lowerBound)), at: base + range.lowerBound)
            }
        }
    }

    func releaseAll() {
        for slot in slots.values { pool.release(slot.buffer) }
        slots.removeAll()
        pool.close()
    }

    func cancel(_ reason: NetdiskError) {
        pipeline?.cancel(reason)
        releaseAll()
    }

    /// A read-only view of the window, for committing a file that never needed a second part.
    func memorySource() -> any RandomAccessSource { WindowSource(state: self) }

    private final class WindowSource: RandomAccessSource, @unchecked Sendable {
        let state: StreamingState
        init(state: StreamingState) { self.state = state }
        var size: Int64 { state.size }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
            guard offset < state.size else { return 0 }
            return state.read(into: buffer, at: offset)
        }
    }
}
