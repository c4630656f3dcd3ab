import Logging
import Uploader

/// The engine's `FileWriteSession` as the filesystem's `WriteSession`.
extension FileWriteSession: WriteSession {
    public var modeName: String { isCached ? "cached" : "streaming" }
    public var bytesUploaded: Int64 { progress.bytesAcknowledged }
}

/// Makes engine sessions that share one global memory budget (`--max-memory`).
public struct EngineWriteSessionFactory: WriteSessionFactory {
    let api: any NetdiskAPI
    let options: EngineOptions
    let budget: MemoryBudget
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
        return FileWriteSession(api: api, remotePath: remotePath, mode: engineMode, options: options,
                                budget: budget, logger: logger)
    }
}
