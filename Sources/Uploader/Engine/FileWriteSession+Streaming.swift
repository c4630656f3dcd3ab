import Foundation
import Logging

/// The streaming path: parts go to the ordered pipeline as they fill, and the commit moves the
/// staging file onto the target.
extension FileWriteSession {
    // MARK: - Streaming

    enum AdvanceResult { case ok, refused }

    /// Sent parts whose upload has not ended (nil when not streaming); tests wait on it.
    var sentPartsUploading: Int? {
        lock.lock(); defer { lock.unlock() }
        if case .streaming(let stream) = state { return stream.sent.uploading }
        return nil
    }

    /// Hands every complete part at the head to the pipeline. The first full part starts the
    /// precreate in the background; until it answers, parts stay in the window and this returns
    /// `.ok` at once, unless `waitForOpening`. Parts from `below` on stay: a write is about to change them.
    func advance(_ stream: StreamingState, waitForOpening: Bool = false, below: Int = .max) throws(NetdiskError) -> AdvanceResult {
        while stream.sentParts < below, let slot = stream.slots[stream.sentParts], slot.isFull(stream.slice) {
            if stream.pipeline == nil {
                switch try opened(stream, waiting: waitForOpening) {
                case .pending: return .ok
                case .refused: return .refused
                case .open: break
                }
            }
            try stream.submitHead(length: stream.slice)
        }
        return .ok
    }

    enum OpeningState { case pending, refused, open }

    /// The precreate answered: the full parts that waited for it go now, not at the next write or
    /// the close. Why: a writer that paused, or wrote everything and has yet to close, left them in
    /// memory (a burst of 56 MiB waited 60 s for its close under load), and fsync could not report
    /// an upload that never started. Runs on the precreate's thread; it waits for the session lock
    /// like any write, and a writer holding it sends them itself at its next step.
    func sendPartsWaitingOnTheOpening() {
        lock.lock(); defer { lock.unlock() }
        guard case .streaming(let stream) = state, stream.pipeline == nil, stream.opening != nil else { return }
        // A refusal, or a failure to submit, surfaces at the next write or the close, which take
        // the cached path or restart the upload: nothing is lost by leaving it to them.
        _ = try? advance(stream)
    }

    /// Where this stream's upload stands: its precreate is started on first asking, and once it
    /// answers, the pipeline is built. `.refused`: this file must take another path (the account
    /// streams no way, or keeps refusing); nothing of it is lost, since nothing was sent.
    func opened(_ stream: StreamingState, waiting: Bool) throws(NetdiskError) -> OpeningState {
        if stream.pipeline != nil { return .open }
        let opening: StreamOpening
        if let started = stream.opening {
            opening = started
        } else {
            let api = self.api, path = stagingPath, provisional = Int64(stream.slice)
            let streaming = options.streaming, logger = self.logger
            opening = StreamOpening({ () throws(NetdiskError) -> StreamOpening.Outcome in
                try Self.precreate(api: api, path: path, provisionalSize: provisional, streaming: streaming, logger: logger)
            }, onAnswer: { [weak self] in self?.sendPartsWaitingOnTheOpening() })
            stream.opening = opening
            record(opening: opening)
        }
        guard let outcome = opening.outcome(waiting: waiting) else { return .pending }
        switch try outcome.get() {
        case .refused:
            return .refused
        case .opened(let uploadID, _):
            makePipeline(stream, uploadID: uploadID)
            return .open
        }
    }

    /// The stream's pipeline for `uploadID`. Its failure interrupts a writer waiting for memory
    /// (``BufferPool/interrupt(with:)``): the parts it kept for a restart do not come back.
    @discardableResult
    func makePipeline(_ stream: StreamingState, uploadID: String) -> OrderedPipeline {
        let uploader = PartUploader(api: api, path: stagingPath, uploadID: uploadID, attempts: options.partAttempts,
                                    baseDelay: options.retryBaseDelay, progress: counters, logger: logger)
        let pool = stream.pool
        let pipeline = OrderedPipeline(threads: options.threads, name: "nd.stream", progress: counters,
                                       upload: { partseq, bytes, md5, stopped throws(NetdiskError) in
                                           try uploader.upload(partseq: partseq, bytes: bytes, md5: md5, stopped: stopped) },
                                       onFailure: { error in
                                           // Other failures drop their parts, whose buffers come back.
                                           if error.endsOnlyTheUploadID { pool.interrupt(with: error) }
                                       })
        stream.pipeline = pipeline
        record(failure: nil, pipeline: pipeline, sent: stream.sent, restarts: stream.restarts)
        return pipeline
    }

    /// The streaming precreate the account's strategy says. A refused strategy is learned again
    /// (at most twice) before this file goes on.
    static func precreate(api: any NetdiskAPI, path: String, provisionalSize: Int64, streaming: StreamingStrategies?,
                          logger: Logger) throws(NetdiskError) -> StreamOpening.Outcome {
        var refusals = 0
        while true {
            let strategy = streaming?.current() ?? .webPlaceholder
            if strategy == .none { return .refused }
            do throws(NetdiskError) {
                let uploadID = try awaitBlocking { () async throws(NetdiskError) -> String in
                    try await api.precreateStreaming(path: path, strategy: strategy, provisionalSize: provisionalSize,
                                                     policy: .overwrite)
                }
                return .opened(uploadID: uploadID, strategy: strategy)
            } catch {
                switch error {
                case .notLoggedIn, .quotaExceeded, .invalidName, .alreadyExists, .transport, .cancelled, .rateLimited:
                    throw error
                case _ where !error.refuses(strategy):
                    // A 5xx or the like says nothing about the strategy: the file fails as any would.
                    throw error
                default:
                    refusals += 1
                    guard let streaming, refusals < 3 else {
                        logger.warning("streaming precreate for \(path) refused (\(error)); this file takes the cached path")
                        return .refused
                    }
                    streaming.refused(strategy, because: error)
                }
            }
        }
    }

    func finishStreaming(_ stream: StreamingState) throws(NetdiskError) -> RemoteEntry {
        if stream.sentParts == 0, stream.opening != nil, stream.size >= Int64(stream.slice) {
            // The first part filled and its precreate may still be running: the stream goes on as
            // it would have. Refused, the file is still all in the window (below).
            _ = try opened(stream, waiting: true)
        }
        if stream.sentParts == 0, stream.pipeline == nil || stream.size < Int64(stream.slice) {
            // Nothing sent yet (small file, empty, a stream the server refused, or a file truncated
            // under its first part): every byte is in the window. A known-content upload, rapid first.
            let source = stream.memorySource()
            // Its own small budget: the window already holds this file's share of the global one.
            let upload = CachedUpload(api: api, options: options, budget: MemoryBudget(bytes: Int.max / 2),
                                      progress: counters, logger: logger)
            let entry = try upload.upload(source, to: remotePath, localMtime: localMtime)
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
        let md5s = try stream.finishPipeline()
        // Read after the finish: a restart on the way there changed it.
        guard let uploadID = stream.opened?.uploadID else { throw .cancelled }
        let blockList = try (0..<partCount).map { (partseq) throws(NetdiskError) -> String in
            guard let md5 = md5s[partseq] else { throw .protocolViolation("part \(partseq) has no MD5") }
            return md5
        }
        let api = self.api, staging = stagingPath, size = stream.size, mtime = localMtime
        let staged: RemoteEntry
        do throws(NetdiskError) {
            staged = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in
                try await api.create(path: staging, size: size, uploadID: uploadID, blockList: blockList, localMtime: mtime,
                                     policy: .overwrite)
            }
        } catch {
            // A create that refuses the true size comes after the bytes are gone: this file fails, but
            // the next one learns again instead of repeating it.
            if case .createFailed = error, let strategy = stream.opened?.strategy { options.streaming?.refused(strategy, because: error) }
            throw error
        }
        stream.releaseAll()
        do throws(NetdiskError) {
            return try moveIntoPlace(staged)
        } catch {
            deleteQuietly(staging)
            throw error
        }
    }

    /// The commit proper: moves the complete staging file onto the target path.
    ///
    /// The target is read at each attempt: a rename of the open file (or of a directory above it)
    /// between attempts moves the commit along instead of re-creating the old directory. Only a
    /// target that did not move and whose directory is gone gets that directory made again.
    func moveIntoPlace(_ staged: RemoteEntry) throws(NetdiskError) -> RemoteEntry {
        let api = self.api, staging = stagingPath
        let ondup: DuplicatePolicy = options.conflictPolicy == .fail ? .fail : .overwrite
        var madeDirectory = false
        var attempts = 0
        while true {
            attempts += 1
            let target = remotePath
            let (directory, name) = (target as NSString).deletingLastPathComponent.isEmpty
                ? ("/", (target as NSString).lastPathComponent)
                : ((target as NSString).deletingLastPathComponent, (target as NSString).lastPathComponent)
            do throws(NetdiskError) {
                try awaitBlocking { () async throws(NetdiskError) in
                    try await api.move(from: staging, toDirectory: directory, newName: name, ondup: ondup)
                }
                var entry = staged
                entry.path = target
                entry.name = name
                return entry
            } catch {
                guard case .notFound = error, attempts < 4 else { throw error }
                if remotePath != target { continue }
                guard !madeDirectory else { throw error }
                madeDirectory = true
                do throws(NetdiskError) {
                    _ = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in try await api.makeDirectory(path: directory) }
                } catch {
                    if case .alreadyExists = error { continue }
                    throw error
                }
            }
        }
    }

}
