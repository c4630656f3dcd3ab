import Foundation
import Logging

/// A stream whose uploadid cannot go on (it expired, or its upload host stopped answering) goes
/// on under a fresh one, when every part it sent is still in memory.
///
/// Why: Baidu ties an uploadid's parts to one host and drops them when the uploadid expires, so
/// such a failure loses the parts on the server, not the file. A stream keeps its head and tail for
/// readers and its parts in flight until they are answered, so a file of a few slices, or one whose
/// parts were all still on the wire when the host went away, has every byte at hand. A part that
/// was acknowledged and let go is gone (no spool, by design): then the file fails as before.
extension FileWriteSession {
    /// Fresh uploadids one stream may take.
    static let maxUploadRestarts = 2

    /// Called with the session lock held, wherever the pipeline's failure surfaced. True when the
    /// upload now goes on under a fresh uploadid with every sent part queued again.
    func restartUpload(_ stream: StreamingState, after error: NetdiskError) throws(NetdiskError) -> Bool {
        guard let old = stream.pipeline, let failure = old.error, failure.endsOnlyTheUploadID,
              let oldID = stream.opened?.uploadID, stream.restarts < Self.maxUploadRestarts else { return false }
        // Each part's fate must be known first: the failed pipeline's workers end (within their timeouts).
        _ = try? old.finish()
        // Unlinked or aborted meanwhile: nothing is to go on.
        if stream.pool.isCancelled { return false }
        guard stream.sent.canResubmit(count: stream.sentParts) else {
            logger.warning("\(remotePath): uploadid \(oldID) cannot go on (\(failure)), and parts it sent are no longer in memory")
            return false
        }
        stream.restarts += 1
        let api = self.api
        if failure.isHostFailure {
            // The next locateupload is asked afresh, not answered with the host that went away.
            try? awaitBlocking { () async throws(NetdiskError) in await api.forgetUploadHost(uploadID: oldID) }
        }
        logger.warning("\(remotePath): uploadid \(oldID) cannot go on (\(failure)); sending its \(stream.sentParts) parts again under a fresh one")
        let outcome: StreamOpening.Outcome
        do throws(NetdiskError) {
            outcome = try Self.precreate(api: api, path: stagingPath, provisionalSize: Int64(stream.slice),
                                         streaming: options.streaming, logger: logger)
        } catch {
            logger.warning("\(remotePath): the fresh precreate failed too: \(error)")
            return false
        }
        guard case .opened(let uploadID, _) = outcome, !stream.pool.isCancelled else { return false }
        let opening = StreamOpening(answered: outcome)
        stream.opening = opening
        record(opening: opening)
        let pipeline = makePipeline(stream, uploadID: uploadID)
        stream.pool.resume()
        guard let parts = stream.sent.resubmit(count: stream.sentParts) else { return false }
        for part in parts {
            do throws(NetdiskError) {
                try pipeline.submit(PipelineJob(partseq: part.partseq, bytes: part.bytes, knownMD5: nil, release: part.release))
            } catch {
                // Failed already: the submit released the part with its outcome (so every part is
                // released once), and the failure surfaces at the next step.
                continue
            }
        }
        return true
    }
}
