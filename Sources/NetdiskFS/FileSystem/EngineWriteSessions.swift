import Foundation
import Logging
import Uploader

/// The engine's `FileWriteSession` as the filesystem's `WriteSession`.
extension FileWriteSession: WriteSession {
    /// From the progress counters, which never wait behind a writer blocked for backpressure.
    public var modeName: String {
        switch progress.mode {
        case .streaming: return "streaming"
        case .cached: return "cached"
        case .rapid: return "rapid"
        case .done: return "done"
        case .failed: return "failed"
        }
    }
    public var bytesUploaded: Int64 { progress.bytesAcknowledged }
}

/// Makes engine sessions under the daemon's one memory budget (`--max-memory`).
///
/// Every session draws its slice buffers from one shared `MemoryBudget`: past it, writers wait for
/// buffers that other files' finished parts give back; they do not fail. Why shared rather than a
/// fixed number of whole-file slots: one thread writing several files in turn (an event-loop
/// downloader) would block forever on a slot that only its own later writes could free, while a
/// shared budget lets each file proceed with a buffer or two. The engine's pools never wait inside
/// the budget while holding a full part, so files cannot starve each other into a deadlock.
public struct EngineWriteSessionFactory: WriteSessionFactory {
    let api: any NetdiskAPI
    let options: EngineOptions
    /// The daemon's memory budget (read-ahead and the write-back uploads draw from it too).
    public let budget: MemoryBudget
    let logger: Logger

    public init(api: any NetdiskAPI, options: EngineOptions, budget: MemoryBudget, logger: Logger) {
        self.api = api
        self.options = options
        self.budget = budget
        self.logger = logger
    }

    public func makeSession(remotePath: String, mode: WriteMode) throws -> any WriteSession {
        let engineMode: FileWriteSession.Mode
        switch mode {
        case .streaming: engineMode = .streaming
        case .cached(let existing): engineMode = .cached(existing: existing)
        }
        return FileWriteSession(api: api, remotePath: remotePath, mode: engineMode, options: options, budget: budget,
                                logger: logger)
    }
}
