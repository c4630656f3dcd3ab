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

    /// Where the file will be committed. A rename of the open file (or of a directory above it)
    /// moves it with ``retarget(to:)``; the commit reads it at the moment it moves the file into place.
    public var remotePath: String {
        targetLock.lock(); defer { targetLock.unlock() }
        return target
    }
    private var target: String
    private let targetLock = NSLock()
    /// Where the stream is assembled before it is moved to `remotePath`. The name carries the
    /// owning process (``StagingOwner``), so a sweep can tell an abandoned file from a live one.
    let stagingPath: String
    let api: any NetdiskAPI
    let options: EngineOptions
    let budget: MemoryBudget
    let logger: Logger
    let counters: ProgressCounters
    let lock = NSLock()
    let sizeLock = NSLock()
    var publishedSize: Int64 = 0
    var state: State
    /// The streaming buffer pool, reachable without the session lock so abort can wake a blocked writer.
    let streamPool: BufferPool?

    enum State {
        case streaming(StreamingState)
        case cached(SparseCache, staging: String?)
        case finished(RemoteEntry)
        case failed(NetdiskError)
        case aborted
    }

    public init(api: any NetdiskAPI, remotePath: String, mode: Mode, options: EngineOptions, budget: MemoryBudget,
                logger: Logger, progressObserver: (@Sendable (UploadProgress) -> Void)? = nil) {
        self.api = api
        self.target = remotePath
        stagingPath = options.stagingDirectory(for: remotePath) + "/" + StagingOwner.current.fileName()
        self.options = options
        self.budget = budget
        self.logger = logger
        switch mode {
        case .streaming:
            counters = ProgressCounters(mode: .streaming, observer: progressObserver)
            // threads in flight + the one filling (+ the first and latest parts, kept for readers
            // that sniff a file's ends); writes ahead in the window wait for a buffer to free.
            let pool = BufferPool(bufferSize: options.sliceSize,
                                  limit: max(options.threads + 1, options.reorderWindowSlices) + SentParts.extraBuffers(slice: options.sliceSize),
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
        if case .streaming(let stream) = state {
            stream.sendWhatCanGo = { [weak self, weak stream] (below: Int) throws(NetdiskError) in
                guard let self, let stream else { return }
                _ = try self.advance(stream, waitForOpening: true, below: below)
            }
            stream.restartUpload = { [weak self, weak stream] (error: NetdiskError) throws(NetdiskError) -> Bool in
                guard let self, let stream else { return false }
                return try self.restartUpload(stream, after: error)
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

    /// Why the session failed, once it has (fsync reports it before close does). Never waits for
    /// the session lock, which a writer blocked for memory may hold.
    public var failure: NetdiskError? {
        failureLock.lock(); defer { failureLock.unlock() }
        // A part that failed for good fails the file, even before the next write notices. A failure
        // that ends only the uploadid is final too unless the stream can still restart under a
        // fresh one: every part it sent still in memory, and a restart left. (fsync before close
        // once said nothing of a stream whose acknowledged parts were already let go.)
        let pipelineError = streamingPipeline?.error.flatMap { error in
            error.endsOnlyTheUploadID && streamingParts?.holdsEverySentPart == true
                && restartsTaken < Self.maxUploadRestarts ? nil : error
        }
        return recordedFailure ?? pipelineError ?? streamingOpening?.error
    }

    private let failureLock = NSLock()
    private var recordedFailure: NetdiskError?
    private var streamingPipeline: OrderedPipeline?
    private var streamingParts: SentParts?
    private var restartsTaken = 0
    private var streamingOpening: StreamOpening?

    /// Records what ``failure`` reports; called with the session lock held.
    func record(failure error: NetdiskError?, pipeline: OrderedPipeline? = nil, sent: SentParts? = nil, restarts: Int? = nil) {
        failureLock.lock(); defer { failureLock.unlock() }
        if let error { recordedFailure = error }
        if let pipeline { streamingPipeline = pipeline }
        if let sent { streamingParts = sent }
        if let restarts { restartsTaken = restarts }
    }

    /// Records the precreate running for this stream, whose error ``failure`` reports too.
    func record(opening: StreamOpening) {
        failureLock.lock(); defer { failureLock.unlock() }
        streamingOpening = opening
    }

    /// The mtime (seconds) the commit gives Baidu as `local_mtime`, so other hosts see it too.
    /// Set it before ``finish()``; nil lets the server use the time of the commit.
    public func setLocalMtime(_ seconds: Int64?) {
        lock.lock(); localMtimeValue = seconds; lock.unlock()
    }

    /// Read under the session lock (``finish()`` holds it).
    var localMtime: Int64? { localMtimeValue }
    private var localMtimeValue: Int64?

    /// Commits at `path` instead: the open file was renamed. Staging stays where it is (the same app folder).
    public func retarget(to path: String) {
        targetLock.lock(); target = path; targetLock.unlock()
    }

    func publish(_ size: Int64) {
        sizeLock.lock(); publishedSize = size; sizeLock.unlock()
    }

    // MARK: - Calls from the producer

    /// Slices a write may land ahead of the first unsent part. While the precreate runs, parts that
    /// would have gone wait in the window, so it is wider by the parts that would be in flight (the
    /// pool, not the window, bounds the memory).
    func window(of stream: StreamingState) -> Int {
        options.reorderWindowSlices + (stream.isOpening ? options.threads : 0)
    }

    /// A write past even the widened window waits for the precreate and sends what it can, instead
    /// of taking the cached path only because the precreate is slow. `.refused`: the precreate said
    /// this file takes the cached path.
    func settleOpeningIfBeyondWindow(_ stream: StreamingState, offset: Int64, end: Int64) throws(NetdiskError) -> AdvanceResult {
        guard stream.isOpening, offset >= stream.frontier,
              !stream.accepts(offset: offset, end: end, window: window(of: stream)) else { return .ok }
        // The parts this write touches stay: sent, the write would land behind them.
        return try advance(stream, waitForOpening: true, below: Int(offset / Int64(stream.slice)))
    }

    static let refusedReason = "the server refused the streaming precreate"

    /// Copies `bytes` and returns; blocks only for backpressure.
    /// How long a streaming write waits on a full shared budget before this file spills to the
    /// cached path (see ``StreamingState/prepareSlots(from:to:budgetWait:)``).
    static let budgetWait: Double = 2

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
            if let error = stream.pipeline?.error {
                do throws(NetdiskError) {
                    guard try restartUpload(stream, after: error) else { throw error }
                } catch { fail(error); throw error }
            }
            do throws(NetdiskError) {
                if try settleOpeningIfBeyondWindow(stream, offset: offset, end: end) == .refused {
                    try fallBack(stream, reason: Self.refusedReason)
                    try cachedWrite(bytes, at: offset)
                    return
                }
            } catch { fail(error); throw error }
            if stream.accepts(offset: offset, end: end, window: window(of: stream)) {
                do throws(NetdiskError) {
                    if try !stream.prepareSlots(from: offset, to: end, budgetWait: Self.budgetWait) {
                        try fallBack(stream, reason: stream.openingRefused ? Self.refusedReason
                            : "the memory budget stayed full for \(Int(Self.budgetWait)) s while this write waited")
                        try cachedWrite(bytes, at: offset)
                        return
                    }
                    // Every slot is in hand, so nothing is sent while the bytes are copied: a part
                    // sent mid-copy (it was full already, and this write overwrites it too) lost the
                    // rest of the write to a fresh buffer that was never sent. Full parts go after.
                    try stream.copy(bytes, at: offset)
                    counters.addWritten(Int64(bytes.count))
                    publish(stream.size)
                    if try advance(stream) == .refused {
                        try fallBack(stream, reason: Self.refusedReason)
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
            var refused = false
            if room > 0 {
                do throws(NetdiskError) {
                    refused = try settleOpeningIfBeyondWindow(stream, offset: offset, end: offset + 1) == .refused
                    if !refused, stream.accepts(offset: offset, end: offset + 1, window: window(of: stream)) {
                        refused = try !stream.prepareHead(at: offset)
                    }
                    // Refused: the rest goes the cached way, through the temporary buffer below.
                    if refused { try fallBack(stream, reason: Self.refusedReason) }
                } catch {
                    fail(error); lock.unlock(); throw error
                }
            }
            if room > 0, !refused, stream.accepts(offset: offset, end: offset + 1, window: window(of: stream)) {
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
                    if try advance(stream) == .refused { try fallBack(stream, reason: Self.refusedReason) }
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
            if let count = stream.read(into: buffer, at: offset) { return count }
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
    /// Logged once here; an empty file the account refuses is the mount's to keep, not a failure.
    private func logFailure(_ error: NetdiskError) {
        if case .emptyFileRefused = error { return }
        logger.error("upload of \(remotePath) failed, nothing was committed: \(error)")
    }

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
                logFailure(error)
                throw error
            }
        case .cached(let cache, let staging):
            do throws(NetdiskError) {
                try cache.backfillAll()
                let upload = CachedUpload(api: api, options: options, budget: budget, progress: counters, logger: logger)
                let entry = try upload.upload(cache.source(), to: remotePath, localMtime: localMtime)
                cache.discard()
                if let staging { deleteQuietly(staging) }
                state = .finished(entry)
                counters.setMode(.done)
                return entry
            } catch {
                cache.discard()
                if let staging { deleteQuietly(staging) }
                fail(error)
                logFailure(error)
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

}
