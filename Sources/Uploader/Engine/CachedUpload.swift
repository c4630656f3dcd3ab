import Foundation
import Logging

/// The hashes the cached path needs before it can talk to the server.
public struct ContentDigest: Sendable, Equatable {
    public var size: Int64
    public var contentMD5: String
    /// MD5 of the first 256 KiB.
    public var sliceMD5: String
    /// Per-part MD5s in partseq order; `[emptyMD5]` for an empty file.
    public var blockList: [String]
}

/// Uploads a source of known size: hash, rapid upload, precreate with the real block list, upload
/// exactly the parts the server asks for, create. Resumable through ``UploadJournal``.
public struct CachedUpload: Sendable {
    public let api: any NetdiskAPI
    public let options: EngineOptions
    public let budget: MemoryBudget
    public let journal: UploadJournal?
    public let progress: ProgressCounters
    public let logger: Logger

    public init(api: any NetdiskAPI, options: EngineOptions, budget: MemoryBudget, journal: UploadJournal? = nil,
                progress: ProgressCounters, logger: Logger) {
        self.api = api
        self.options = options
        self.budget = budget
        self.journal = journal
        self.progress = progress
        self.logger = logger
    }

    /// Blocking; call from a dedicated thread. `identity` enables resume through the journal.
    public func upload(_ source: any RandomAccessSource, to remotePath: String, identity: SourceIdentity? = nil,
                       localMtime: Int64? = nil) throws(NetdiskError) -> RemoteEntry {
        do throws(NetdiskError) {
            return try uploadOnce(source, to: remotePath, identity: identity, localMtime: localMtime)
        } catch {
            // An empty file refused as a bad parameter: say what it is, so the mount can keep it.
            if source.size == 0, case .badParameter(let code, _) = error { throw .emptyFileRefused(code: code) }
            throw error
        }
    }

    private func uploadOnce(_ source: any RandomAccessSource, to remotePath: String, identity: SourceIdentity?,
                            localMtime: Int64?) throws(NetdiskError) -> RemoteEntry {
        progress.setTotal(source.size)
        progress.setMode(.cached)
        guard source.size <= options.effectiveMaxFileSize else { throw .fileTooLarge(limit: options.effectiveMaxFileSize) }
        let slice = options.sliceSize
        var resumed: UploadJournal.Record?
        if let journal, let identity {
            resumed = journal.find(remotePath: remotePath, source: identity, sliceSize: slice)
        }
        let digest: ContentDigest
        if let resumed {
            digest = ContentDigest(size: source.size, contentMD5: resumed.contentMD5, sliceMD5: resumed.sliceMD5,
                                   blockList: resumed.blockList)
            logger.info("resuming upload of \(remotePath): \(resumed.doneParts.count)/\(resumed.blockList.count) parts already acknowledged")
            progress.addHashed(source.size)
            progress.addAcknowledged(min(source.size, Int64(resumed.doneParts.count) * Int64(slice)))
        } else {
            // Rapid upload is asked in the precreate below (content-md5 and slice-md5: return_type 2),
            // the form that works on xpan; a rapid create costs a call and answers 31500 there.
            digest = try hash(source)
        }

        var freshAttemptsLeft = 2
        var emptyNeedsPart = false
        /// After a create refused for mixed hosts (errno 10), the server may hand back the same
        /// uploadid and call every part present: then every part is sent again to one host.
        var resendEverything = false
        while true {
            let api = self.api, policy = options.conflictPolicy
            // Precreate even when resuming: a server that resumes the same uploadid says exactly which
            // parts it lacks (including ones in flight when the last run died).
            let result = try awaitBlocking { () async throws(NetdiskError) -> PrecreateResult in
                try await api.precreate(path: remotePath, size: digest.size, blockList: digest.blockList,
                                        contentMD5: digest.contentMD5, sliceMD5: digest.sliceMD5,
                                        localMtime: localMtime, policy: policy)
            }
            if let hit = result.rapidHit {
                if let id = resumed?.id { journal?.remove(record: id) }
                logger.info("rapid upload hit for \(remotePath): no parts sent")
                progress.setMode(.rapid)
                progress.addAcknowledged(digest.size)
                return hit
            }
            guard let freshID = result.uploadID else { throw .protocolViolation("precreate returned no uploadid") }
            var record: UploadJournal.Record?
            let uploadID: String
            var needed: [Int]
            if let previous = resumed, previous.uploadID != freshID {
                // The server opened a new upload; continue the journaled one with the parts it lacks.
                record = previous
                uploadID = previous.uploadID
                needed = (0..<digest.blockList.count).filter { !previous.doneParts.contains($0) }
            } else {
                uploadID = freshID
                needed = result.missingParts.filter { $0 >= 0 && $0 < digest.blockList.count }.sorted()
                if resendEverything { needed = Array(0..<digest.blockList.count) }
                record = resumed
                if record == nil, let journal, let identity {
                    record = try journal.begin(remotePath: remotePath, source: identity, sliceSize: slice, uploadID: freshID,
                                               host: nil, blockList: digest.blockList, contentMD5: digest.contentMD5,
                                               sliceMD5: digest.sliceMD5)
                }
            }
            if let current = record, let journal {
                // Parts of one uploadid must all reach one host: reuse the journaled one, or journal it now.
                if let host = current.host, (try? URLPolicy.check(host)) != nil {
                    try awaitBlocking { () async throws(NetdiskError) in await api.pinUploadHost(host, uploadID: uploadID) }
                } else if let host = try awaitBlocking({ () async throws(NetdiskError) -> String? in
                    try await api.pinnedUploadHost(path: remotePath, uploadID: uploadID)
                }) {
                    journal.setHost(record: current.id, host: host)
                }
            }
            logger.info("upload of \(remotePath): uploadid \(uploadID), sending \(needed.count) of \(digest.blockList.count) parts")
            resumed = nil
            // An empty file is committed without parts; a server that wants one gets an empty part.
            if digest.size == 0 && !emptyNeedsPart { needed = [] }
            var partsSent = false
            do throws(NetdiskError) {
                try uploadParts(needed, of: source, digest: digest, to: remotePath, uploadID: uploadID, record: record?.id)
                partsSent = true
                let entry = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in
                    try await api.create(path: remotePath, size: digest.size, uploadID: uploadID,
                                         blockList: digest.blockList, localMtime: localMtime, policy: policy)
                }
                if let id = record?.id { journal?.remove(record: id) }
                progress.setMode(.done)
                return entry
            } catch {
                if digest.size == 0 && !emptyNeedsPart, case .createFailed = error {
                    emptyNeedsPart = true
                    continue
                }
                let expired = error == .uploadExpired || error == .unknownUploadID
                // A resumed upload journaled before its host was (or whose host is gone) can fail
                // create with errno 10: start it afresh.
                var resumedElsewhere = false
                if case .createFailed = error, record?.doneParts.isEmpty == false { resumedElsewhere = true }
                // The upload's host no longer answers (parts gave up on transport errors or 5xx):
                // journaled, or handed out by a locateupload whose servers have since gone (an
                // upload host restarted). Every byte is still in the source, so a fresh uploadid on a
                // freshly located host is only slower; the old uploadid's parts are never created.
                // Not after create: a create whose answer was lost may have committed the file.
                let hostGone = error.isHostFailure && !partsSent
                guard expired || resumedElsewhere || hostGone, freshAttemptsLeft > 0 else { throw error }
                freshAttemptsLeft -= 1
                resendEverything = resumedElsewhere || hostGone
                if hostGone {
                    try awaitBlocking { () async throws(NetdiskError) in await api.forgetUploadHost(uploadID: uploadID) }
                }
                if let id = record?.id { journal?.remove(record: id) }
                logger.warning("upload of \(remotePath): uploadid \(uploadID) cannot go on (\(error)); starting a fresh upload")
            }
        }
    }

    /// Content MD5, slice-md5 and block list in one sequential pass.
    public func hash(_ source: any RandomAccessSource) throws(NetdiskError) -> ContentDigest {
        let slice = options.sliceSize
        if source.size == 0 {
            return ContentDigest(size: 0, contentMD5: BaiduProtocol.emptyMD5, sliceMD5: BaiduProtocol.emptyMD5,
                                 blockList: [BaiduProtocol.emptyMD5])
        }
        // Allocated only for bytes not already in memory (a small file's window hashes in place).
        var buffer: UnsafeMutableRawBufferPointer?
        defer { buffer?.deallocate() }
        var content = MD5Hasher()
        var blocks: [String] = []
        var sliceMD5 = ""
        var offset: Int64 = 0
        while offset < source.size {
            let want = Int(min(Int64(slice), source.size - offset))
            let bytes: UnsafeRawBufferPointer
            if let held = source.inMemory(at: offset, count: want), let base = held.bytes.base {
                bytes = UnsafeRawBufferPointer(start: base, count: want)
            } else {
                let storage = buffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: min(slice, Int(source.size)), alignment: 64)
                buffer = storage
                let chunk = UnsafeMutableRawBufferPointer(rebasing: storage[0..<want])
                let got = try source.read(into: chunk, at: offset)
                guard got == want else { throw .localIO("source shrank while hashing (wanted \(want) bytes at \(offset), got \(got))") }
                bytes = UnsafeRawBufferPointer(chunk)
            }
            content.update(bytes)
            blocks.append(MD5Hasher.hex(of: bytes))
            if offset == 0 {
                sliceMD5 = MD5Hasher.hex(of: UnsafeRawBufferPointer(rebasing: bytes[0..<min(want, BaiduProtocol.sliceMD5Length)]))
            }
            offset += Int64(want)
            progress.addHashed(Int64(want))
        }
        return ContentDigest(size: source.size, contentMD5: content.finalizeHex(), sliceMD5: sliceMD5, blockList: blocks)
    }

    private func uploadParts(_ parts: [Int], of source: any RandomAccessSource, digest: ContentDigest, to remotePath: String,
                             uploadID: String, record: Int64?) throws(NetdiskError) {
        guard !parts.isEmpty else { return }
        let slice = options.sliceSize
        let pool = BufferPool(bufferSize: min(slice, max(1, Int(digest.size))), limit: options.threads + 1, budget: budget)
        defer { pool.close() }
        let uploader = PartUploader(api: api, path: remotePath, uploadID: uploadID, attempts: options.partAttempts,
                                    baseDelay: options.retryBaseDelay, progress: progress, logger: logger)
        let journal = self.journal
        let pipeline = OrderedPipeline(threads: min(options.threads, parts.count), name: "nd.cached",
                                       progress: progress,
                                       upload: { partseq, bytes, md5, stopped throws(NetdiskError) in
                                           try uploader.upload(partseq: partseq, bytes: bytes, md5: md5, stopped: stopped) },
                                       onPartDone: { partseq, md5 in
                                           if let record { journal?.markDone(record: record, partseq: partseq, md5: md5) } })
        do throws(NetdiskError) {
            for partseq in parts {
                if let error = pipeline.error { throw error }
                let offset = Int64(partseq) * Int64(slice)
                let want = Int(min(Int64(slice), digest.size - offset))
                if let held = source.inMemory(at: offset, count: want) {
                    // Already in memory: no copy; the job keeps the holder's buffer mapped until it ends.
                    let owner = held.owner
                    try pipeline.submit(PipelineJob(partseq: partseq, bytes: held.bytes, knownMD5: digest.blockList[partseq],
                                                    release: { _ in withExtendedLifetime(owner) {} }))
                    continue
                }
                let buffer = try pool.acquire()
                let got: Int
                do throws(NetdiskError) {
                    got = try source.read(into: UnsafeMutableRawBufferPointer(start: buffer.base, count: want), at: offset)
                } catch {
                    pool.release(buffer)
                    throw error
                }
                guard got == want else {
                    pool.release(buffer)
                    throw .localIO("source changed during upload (part \(partseq) short: \(got) of \(want) bytes)")
                }
                buffer.count = want
                try pipeline.submit(PipelineJob(partseq: partseq, bytes: buffer.bytes, knownMD5: digest.blockList[partseq],
                                                release: { _ in pool.release(buffer) }))
            }
        } catch {
            pipeline.cancel(error)
            throw error
        }
        _ = try pipeline.finish()
    }
}
