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

    /// Hands every complete part at the head to the pipeline, starting the upload on the first one.
    func advance(_ stream: StreamingState) throws(NetdiskError) -> AdvanceResult {
        while let slot = stream.slots[stream.sentParts], slot.isFull(stream.slice) {
            if stream.pipeline == nil {
                if try !start(stream) { return .refused }
            }
            try stream.submitHead(length: stream.slice)
        }
        return .ok
    }

    /// Opens the streaming upload the account's strategy says; false when this file must take the
    /// cached path (the account streams no way, or keeps refusing). A refused strategy is learned
    /// again before this file goes on, and nothing of the file is lost: its first part is still here.
    func start(_ stream: StreamingState) throws(NetdiskError) -> Bool {
        let api = self.api, path = stagingPath, provisional = Int64(stream.slice)
        var uploadID: String?
        var refusals = 0
        while uploadID == nil {
            let strategy = options.streaming?.current() ?? .webPlaceholder
            if strategy == .none { return false }
            do throws(NetdiskError) {
                uploadID = try awaitBlocking { () async throws(NetdiskError) -> String in
                    try await api.precreateStreaming(path: path, strategy: strategy, provisionalSize: provisional,
                                                     policy: .overwrite)
                }
                stream.strategy = strategy
            } catch {
                switch error {
                case .notLoggedIn, .quotaExceeded, .invalidName, .alreadyExists, .transport, .cancelled, .rateLimited:
                    throw error
                case _ where !error.refuses(strategy):
                    // A 5xx or the like says nothing about the strategy: the file fails as any would.
                    throw error
                default:
                    refusals += 1
                    guard let streaming = options.streaming, refusals < 3 else {
                        logger.warning("streaming precreate for \(path) refused (\(error)); this file takes the cached path")
                        return false
                    }
                    streaming.refused(strategy, because: error)
                }
            }
        }
        guard let uploadID else { return false }
        let uploader = PartUploader(api: api, path: path, uploadID: uploadID, attempts: options.partAttempts,
                                    baseDelay: options.retryBaseDelay, progress: counters, logger: logger)
        stream.uploadID = uploadID
        stream.pipeline = OrderedPipeline(threads: options.threads, name: "nd.stream", progress: counters,
                                          upload: { partseq, bytes, md5 throws(NetdiskError) in
                                              try uploader.upload(partseq: partseq, bytes: bytes, md5: md5) })
        record(failure: nil, pipeline: stream.pipeline)
        return true
    }

    func finishStreaming(_ stream: StreamingState) throws(NetdiskError) -> RemoteEntry {
        if stream.pipeline == nil {
            // Nothing sent yet (small file, or empty): a known-content upload, rapid first.
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
        guard let pipeline = stream.pipeline, let uploadID = stream.uploadID else { throw .cancelled }
        let md5s = try pipeline.finish()
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
            if case .createFailed = error, let strategy = stream.strategy { options.streaming?.refused(strategy, because: error) }
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
