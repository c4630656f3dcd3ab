import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Where downloaded chunks go: a file written at offsets, or a stream written in order.
public protocol DownloadSink: Sendable {
    /// True when chunks must arrive in order (stdout); false for a seekable file.
    var isSequential: Bool { get }
    func write(_ bytes: [UInt8], at offset: Int64) throws(NetdiskError)
}

/// A local file written with `pwrite`, created (or truncated) on open.
public final class FileSink: DownloadSink, @unchecked Sendable {
    private let fd: Int32
    private let path: String
    public var isSequential: Bool { false }

    public init(path: String, size: Int64) throws(NetdiskError) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .localIO("open \(path): \(String(cString: strerror(errno)))") }
        self.path = path
        if ftruncate(fd, off_t(size)) != 0 { close(fd); throw .localIO("truncate \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    public func write(_ bytes: [UInt8], at offset: Int64) throws(NetdiskError) {
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(NetdiskError) in try pwriteFully(fd: fd, raw, at: offset, path: path) }
        }
        try result.get()
    }
}

/// A file descriptor written in order (stdout, a pipe).
public final class StreamSink: DownloadSink, @unchecked Sendable {
    private let fd: Int32
    public var isSequential: Bool { true }
    public init(fd: Int32) { self.fd = fd }
    public func write(_ bytes: [UInt8], at offset: Int64) throws(NetdiskError) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .localIO("write: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}

/// Downloads one remote file with ranged requests over several connections, re-fetching the dlink
/// when it expires. Blocking; call from a dedicated thread.
public struct RangedDownload: Sendable {
    public let api: any NetdiskAPI
    public let connections: Int
    public let chunkSize: Int
    public let attempts: Int
    public let logger: Logger

    public init(api: any NetdiskAPI, connections: Int = 4, chunkSize: Int = 4 << 20, attempts: Int = 4, logger: Logger) {
        self.api = api
        self.connections = max(1, connections)
        self.chunkSize = max(1, chunkSize)
        self.attempts = max(1, attempts)
        self.logger = logger
    }

    public func run(_ entry: RemoteEntry, into sink: any DownloadSink, progress: ProgressCounters) throws(NetdiskError) {
        progress.setTotal(entry.size)
        guard entry.size > 0 else { return }
        let chunks = Int((entry.size + Int64(chunkSize) - 1) / Int64(chunkSize))
        let state = DownloadState(chunks: chunks)
        let links = DlinkProvider(api: api, fsID: entry.fsID)
        let workers = min(connections, chunks)
        let group = DispatchGroup()
        for index in 0..<workers {
            group.enter()
            NamedThread.start("nd.get\(index)") { [self] in
                defer { group.leave() }
                while let chunk = state.next() {
                    let offset = Int64(chunk) * Int64(chunkSize)
                    let length = Int(min(Int64(chunkSize), entry.size - offset))
                    do throws(NetdiskError) {
                        let bytes = try fetch(links, offset: offset, length: length, path: entry.path)
                        progress.addSent(Int64(bytes.count))
                        if sink.isSequential { try state.waitTurn(chunk) }
                        try sink.write(bytes, at: offset)
                        progress.addAcknowledged(Int64(bytes.count))
                        if sink.isSequential { state.doneTurn(chunk) }
                    } catch {
                        state.fail(error)
                    }
                }
            }
        }
        group.wait()
        if let error = state.failure { throw error }
    }

    private func fetch(_ links: DlinkProvider, offset: Int64, length: Int, path: String) throws(NetdiskError) -> [UInt8] {
        var lastError = NetdiskError.transport("no attempt made")
        for attempt in 1...attempts {
            if attempt > 1 { sleepSeconds(0.25 * Double(1 << (attempt - 2))) }
            let link = try links.current()
            let api = self.api
            do throws(NetdiskError) {
                let bytes = try awaitBlocking { () async throws(NetdiskError) -> [UInt8] in
                    try await api.download(dlink: link, offset: offset, length: length)
                }
                guard bytes.count == length else {
                    throw .protocolViolation("range \(offset)+\(length) of \(path) returned \(bytes.count) bytes")
                }
                return bytes
            } catch {
                lastError = error
                if error == .dlinkExpired {
                    logger.info("dlink of \(path) expired; fetching a new one")
                    links.invalidate(link)
                    continue
                }
                guard error.isTransient || error == .http(status: 403) else { throw error }
                logger.warning("range \(offset)+\(length) of \(path) failed (attempt \(attempt)/\(attempts)): \(error)")
            }
        }
        throw lastError
    }
}

/// The current dlink of one file, fetched once and again only after it expired.
private final class DlinkProvider: @unchecked Sendable {
    private let lock = NSLock()
    private let api: any NetdiskAPI
    private let fsID: UInt64
    private var link: String?

    init(api: any NetdiskAPI, fsID: UInt64) {
        self.api = api
        self.fsID = fsID
    }

    func current() throws(NetdiskError) -> String {
        lock.lock(); defer { lock.unlock() }
        if let link { return link }
        let api = self.api, fsID = self.fsID
        let links = try awaitBlocking { () async throws(NetdiskError) -> [UInt64: String] in
            try await api.downloadLinks(fsIDs: [fsID])
        }
        guard let fresh = links[fsID] else { throw .notFound(code: -9) }
        link = fresh
        return fresh
    }

    func invalidate(_ expired: String) {
        lock.lock()
        if link == expired { link = nil }
        lock.unlock()
    }
}

/// Hands out chunk numbers in order and, for sequential sinks, lets chunks write in order.
private final class DownloadState: @unchecked Sendable {
    private let condition = NSCondition()
    private let chunks: Int
    private var nextChunk = 0
    private var nextToWrite = 0
    private(set) var failure: NetdiskError?

    init(chunks: Int) { self.chunks = chunks }

    func next() -> Int? {
        condition.lock(); defer { condition.unlock() }
        guard failure == nil, nextChunk < chunks else { return nil }
        nextChunk += 1
        return nextChunk - 1
    }

    func waitTurn(_ chunk: Int) throws(NetdiskError) {
        condition.lock(); defer { condition.unlock() }
        while nextToWrite != chunk {
            if let failure { throw failure }
            condition.wait()
        }
    }

    func doneTurn(_ chunk: Int) {
        condition.lock()
        nextToWrite = chunk + 1
        condition.broadcast()
        condition.unlock()
    }

    func fail(_ error: NetdiskError) {
        condition.lock()
        if failure == nil { failure = error }
        condition.broadcast()
        condition.unlock()
    }
}

/// Looks up a remote path by listing its parent (the API addresses files by fs_id).
public func lookUpRemote(_ path: String, api: any NetdiskAPI) async throws(NetdiskError) -> RemoteEntry {
    let parent = (path as NSString).deletingLastPathComponent
    let name = (path as NSString).lastPathComponent
    var start = 0
    let limit = 1000
    while true {
        let page = try await api.list(directory: parent.isEmpty ? "/" : parent, start: start, limit: limit)
        if let hit = page.first(where: { $0.name == name || $0.path == path }) { return hit }
        if page.count < limit { throw .notFound(code: -9) }
        start += page.count
    }
}
