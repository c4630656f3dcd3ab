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

/// Makes engine sessions under one global write-buffer budget (`--max-memory`).
///
/// The budget is enforced as streaming *slots*: each streaming file gets a private budget of its
/// full per-file cap (slice × (threads + reorder window)), and at most `maxMemory / cap` files
/// stream at once; the next file's first write waits for a slot. Why not hand every session the
/// shared `MemoryBudget`: the engine's buffer pool keeps buffers it has reserved until the file
/// ends, so N files each holding one buffer and each waiting on the shared budget for a second
/// deadlock (8 concurrent `cp` did). Whole-file slots cannot deadlock that way; writers wait, never fail.
public struct EngineWriteSessionFactory: WriteSessionFactory {
    let api: any NetdiskAPI
    let options: EngineOptions
    let slots: StreamingSlots
    let perFileCap: Int
    let logger: Logger

    public init(api: any NetdiskAPI, options: EngineOptions, maxMemory: Int, logger: Logger) {
        self.api = api
        self.options = options
        // The engine's pool holds at most max(threads + 1, reorder window) slices per file.
        self.perFileCap = options.sliceSize * max(options.threads + 1, options.reorderWindowSlices)
        self.slots = StreamingSlots(count: max(1, maxMemory / perFileCap))
        self.logger = logger
    }

    public func makeSession(remotePath: String, mode: WriteMode) throws -> any WriteSession {
        switch mode {
        case .streaming:
            let session = FileWriteSession(api: api, remotePath: remotePath, mode: .streaming, options: options,
                                           budget: MemoryBudget(bytes: perFileCap), logger: logger)
            return AdmittedSession(session, slots: slots, admitAtFirstWrite: true)
        case .cached(let existing):
            // The cached path needs upload buffers only while committing: it takes a slot in finish.
            let session = FileWriteSession(api: api, remotePath: remotePath, mode: .cached(existing: existing),
                                           options: options, budget: MemoryBudget(bytes: perFileCap), logger: logger)
            return AdmittedSession(session, slots: slots, admitAtFirstWrite: false)
        }
    }
}

/// A counting semaphore for streaming files (waits on FUSE threads only).
final class StreamingSlots: @unchecked Sendable {
    private let condition = NSCondition()
    private var free: Int

    init(count: Int) { free = count }

    func acquire() {
        condition.lock()
        while free == 0 { condition.wait() }
        free -= 1
        condition.unlock()
    }

    func release() {
        condition.lock()
        free += 1
        condition.signal()
        condition.unlock()
    }
}

/// A session that holds a slot while it has upload buffers (streaming: from its first write;
/// cached: while committing) and gives it back when it ends.
final class AdmittedSession: WriteSession, @unchecked Sendable {
    private let session: FileWriteSession
    private let slots: StreamingSlots
    private let lock = NSLock()
    private let admitAtFirstWrite: Bool
    private var holding = false

    init(_ session: FileWriteSession, slots: StreamingSlots, admitAtFirstWrite: Bool) {
        self.session = session
        self.slots = slots
        self.admitAtFirstWrite = admitAtFirstWrite
    }

    deinit { releaseSlot() }

    private func admit() {
        let needed = lock.withLock { !holding }
        guard needed else { return }
        slots.acquire()
        lock.withLock { holding = true }
    }

    private func releaseSlot() {
        let held = lock.withLock { () -> Bool in
            defer { holding = false }
            return holding
        }
        if held { slots.release() }
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws {
        if admitAtFirstWrite { admit() }
        try session.write(bytes, at: offset)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        try session.read(into: buffer, at: offset)
    }

    func truncate(to size: Int64) throws {
        if admitAtFirstWrite { admit() }
        try session.truncate(to: size)
    }

    var size: Int64 { session.size }
    var modeName: String { session.modeName }
    var bytesUploaded: Int64 { session.bytesUploaded }

    func finish() throws -> RemoteEntry {
        admit()
        defer { releaseSlot() }
        return try session.finish()
    }

    func abort() {
        session.abort()
        releaseSlot()
    }
}
