import Foundation
import Logging

/// How a part left the pipeline, told to its owner by `release`.
enum PartOutcome: Sendable {
    /// The server holds it under this uploadid.
    case acknowledged
    /// Not acknowledged, and the failure ends only this uploadid (it expired, or its host stopped
    /// answering): the owner may send it again under a fresh one, so it should keep the bytes.
    case retry
    /// Not acknowledged, and nothing will send it again.
    case dropped
}

/// One part handed to the pipeline: its bytes stay valid until `release` runs.
struct PipelineJob: Sendable {
    var partseq: Int
    var bytes: PartBytes
    /// Known from a previous hash pass (cached path); nil means the worker hashes it.
    var knownMD5: String?
    var release: @Sendable (PartOutcome) -> Void
}

/// Uploads parts concurrently with a bounded number in flight, in the order they were submitted.
///
/// Submission (acquiring a section) is strictly ordered and happens on the producer's thread;
/// hashing and uploading run on up to `threads` dedicated worker threads, each started when a part
/// waits and no worker is free (a file of one slice, most of a `tar -x`, starts one, not eight).
/// `release` always runs.
/// The first fatal error cancels everything queued and is what `submit`/`finish` throw.
final class OrderedPipeline: @unchecked Sendable {
    /// `stopped` turns true once the pipeline failed or was cancelled: a part between attempts gives up then.
    typealias Upload = @Sendable (_ partseq: Int, _ bytes: PartBytes, _ md5: PartMD5,
                                  _ stopped: @Sendable () -> Bool) throws(NetdiskError) -> Void

    private let condition = NSCondition()
    /// Taken jobs are set to nil at once: a job holds its part's buffer (through `release`), and a
    /// taken job left in the array kept up to 64 slices alive after their upload (1 GiB at SVIP).
    private var queue: [PipelineJob?] = []
    private var queueHead = 0
    private var active = 0
    private var closed = false
    private var failure: NetdiskError?
    private var md5s: [Int: String] = [:]
    private var liveWorkers = 0
    /// Workers waiting for a part.
    private var idleWorkers = 0
    private let maxWorkers: Int
    private let name: String
    private let upload: Upload
    private let progress: ProgressCounters
    private let onPartDone: (@Sendable (Int, String) -> Void)?
    private let onFailure: (@Sendable (NetdiskError) -> Void)?

    /// `onFailure` runs once, on the thread that saw the first fatal error, without the lock.
    init(threads: Int, name: String, progress: ProgressCounters, upload: @escaping Upload,
         onPartDone: (@Sendable (Int, String) -> Void)? = nil, onFailure: (@Sendable (NetdiskError) -> Void)? = nil) {
        self.upload = upload
        self.progress = progress
        self.onPartDone = onPartDone
        self.onFailure = onFailure
        self.maxWorkers = max(1, threads)
        self.name = name
    }

    /// Called with the lock held, after a part was queued.
    private func startWorkerIfNeeded() {
        // Only the head's taken entries are nil: everything from queueHead on waits.
        guard queue.count - queueHead > idleWorkers, liveWorkers < maxWorkers else { return }
        liveWorkers += 1
        NamedThread.start("\(name)\(liveWorkers - 1)", stackSize: 512 << 10) { [self] in workerLoop() }
    }

    /// Queues a part; throws (after releasing it) if the pipeline already failed.
    func submit(_ job: PipelineJob) throws(NetdiskError) {
        condition.lock()
        if let failure {
            condition.unlock()
            job.release(Self.outcome(after: failure))
            throw failure
        }
        queue.append(job)
        startWorkerIfNeeded()
        condition.signal()
        condition.unlock()
    }

    /// Worker threads started and not yet finished: what the lazy start decided, counted when it
    /// decides, not when the thread is first scheduled.
    var workerCount: Int {
        condition.lock(); defer { condition.unlock() }
        return liveWorkers
    }

    /// The first fatal error so far, if any (lets producers stop early).
    var error: NetdiskError? {
        condition.lock(); defer { condition.unlock() }
        return failure
    }

    /// Waits for every queued part and returns the MD5 of each part by partseq.
    func finish() throws(NetdiskError) -> [Int: String] {
        condition.lock()
        closed = true
        condition.broadcast()
        while liveWorkers > 0 { condition.wait() }
        defer { condition.unlock() }
        if let failure { throw failure }
        return md5s
    }

    /// Fails the pipeline with `reason` (default `.cancelled`) and drops queued parts. Returns at once:
    /// parts already on the wire finish (or time out) in the background and release their buffers then,
    /// so an unlink never waits for the network.
    func cancel(_ reason: NetdiskError = .cancelled) {
        condition.lock()
        if failure == nil { failure = reason }
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    private func nextJob() -> PipelineJob? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if queueHead < queue.count, let job = queue[queueHead] {
                queue[queueHead] = nil
                queueHead += 1
                if queueHead > 64 && queueHead * 2 > queue.count {
                    queue.removeFirst(queueHead)
                    queueHead = 0
                }
                if let failure {
                    job.release(Self.outcome(after: failure))
                    continue
                }
                active += 1
                return job
            }
            if closed || failure != nil {
                liveWorkers -= 1
                condition.broadcast()
                return nil
            }
            idleWorkers += 1
            condition.wait()
            idleWorkers -= 1
        }
    }

    /// What a part that did not go owes its owner, once the pipeline failed with `failure`.
    private static func outcome(after failure: NetdiskError) -> PartOutcome {
        failure.endsOnlyTheUploadID ? .retry : .dropped
    }

    private func workerLoop() {
        while let job = nextJob() {
            let md5 = PartMD5(known: job.knownMD5, bytes: job.bytes, progress: progress)
            do throws(NetdiskError) {
                try upload(job.partseq, job.bytes, md5, { [self] in error != nil })
                onPartDone?(job.partseq, md5.value)
                condition.lock()
                md5s[job.partseq] = md5.value
                active -= 1
                condition.unlock()
                job.release(.acknowledged)
            } catch {
                condition.lock()
                let first = failure == nil
                if first { failure = error }
                // The pipeline's failure decides, not this part's: after a cancel, or a failure that
                // ends the file (a full quota), nothing will send the part again.
                let outcome = Self.outcome(after: failure ?? error)
                active -= 1
                condition.broadcast()
                condition.unlock()
                job.release(outcome)
                if first { onFailure?(error) }
            }
        }
    }
}

/// A part's MD5, computed at most once, on the worker, when first asked for.
///
/// Why lazily: ``PartUploader`` asks for it while the part is on the wire, so hashing (22 ms for
/// a 16 MiB slice) overlaps the round trip instead of adding to the time each part holds its
/// buffer, and at 100 ms per call that time is what bounds a stream's throughput. Not shared
/// between threads: only the worker that owns the part uses it.
final class PartMD5 {
    private let bytes: PartBytes
    private let progress: ProgressCounters
    private var computed: String?

    init(known: String?, bytes: PartBytes, progress: ProgressCounters) {
        self.computed = known
        self.bytes = bytes
        self.progress = progress
    }

    var value: String {
        if let computed { return computed }
        let md5 = MD5Hasher.hex(of: bytes.buffer)
        progress.addHashed(Int64(bytes.count))
        computed = md5
        return md5
    }
}

/// Uploads one part with engine-level retries on top of the client's own.
///
/// The client already retries 5xx, resets and rate limits with backoff; the engine retries what the
/// client gave up on a few more times, and resends a part whose server MD5 differs from the local one.
struct PartUploader: Sendable {
    let api: any NetdiskAPI
    let path: String
    let uploadID: String
    let attempts: Int
    let baseDelay: Double
    let progress: ProgressCounters
    let logger: Logger

    /// The part's MD5 is computed (if not known) while its first attempt is on the wire: the
    /// server's answer is compared with it only once the answer is in.
    ///
    /// Between attempts it asks `stopped`: once its pipeline failed or was cancelled (an unlink, or
    /// another part that ended the uploadid), nobody will commit what a further attempt sends.
    func upload(partseq: Int, bytes: PartBytes, md5: PartMD5,
                stopped: @Sendable () -> Bool) throws(NetdiskError) {
        var lastError = NetdiskError.transport("no attempt made")
        for attempt in 1...attempts {
            if attempt > 1 {
                if stopped() { break }
                sleepSeconds(baseDelay * Double(1 << min(attempt - 2, 6)))
                if stopped() { break }
            }
            progress.addSent(Int64(bytes.count))
            let api = self.api, path = self.path, uploadID = self.uploadID
            do throws(NetdiskError) {
                let serverMD5 = try awaitBlocking({ () async throws(NetdiskError) -> String in
                    try await api.uploadPart(path: path, uploadID: uploadID, partseq: partseq, bytes: bytes)
                }, meanwhile: { _ = md5.value })
                if serverMD5.lowercased() == md5.value {
                    progress.addAcknowledged(Int64(bytes.count))
                    return
                }
                lastError = .partChecksumMismatch(partseq: partseq, expected: md5.value, received: serverMD5)
                logger.warning("part \(partseq) of \(path): server MD5 \(serverMD5) differs from local \(md5.value); resending")
            } catch {
                guard error.isTransient || error == .http(status: 408) else { throw error }
                lastError = error
                logger.warning("part \(partseq) of \(path) failed (attempt \(attempt)/\(attempts)): \(error)")
            }
        }
        throw lastError
    }
}
