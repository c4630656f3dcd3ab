import Foundation
import Logging

/// The cached path, and the fallback into it from streaming.
extension FileWriteSession {
    // MARK: - Fallback and the cached path

    /// Moves a streaming session to the cached path. Bytes already sent are committed to a staging
    /// file the cache backfills from; bytes still in memory are written to the cache file.
    func fallBack(_ stream: StreamingState, reason: String) throws(NetdiskError) {
        logger.notice("\(remotePath): switching to the cached path: \(reason)")
        var staging: String?
        var backing: RemoteEntry?
        let sentBytes = stream.frontier
        if stream.pipeline != nil, stream.sentParts > 0 {
            let md5s = try stream.finishPipeline()
            guard let uploadID = stream.opened?.uploadID else { throw .cancelled }
            let blockList = try (0..<stream.sentParts).map { (partseq) throws(NetdiskError) -> String in
                guard let md5 = md5s[partseq] else { throw .protocolViolation("part \(partseq) has no MD5") }
                return md5
            }
            let api = self.api, path = stagingPath
            backing = try awaitBlocking { () async throws(NetdiskError) -> RemoteEntry in
                try await api.create(path: path, size: sentBytes, uploadID: uploadID, blockList: blockList,
                                     localMtime: nil, policy: .overwrite)
            }
            staging = path
        } else {
            stream.pipeline?.cancel(.cancelled)
        }
        do throws(NetdiskError) {
            let cache = try SparseCache(directory: options.cacheDirectory, size: stream.size, backing: backing,
                                        backingLimit: sentBytes, api: api, logger: logger)
            try stream.spill(into: cache)
            stream.releaseAll()
            state = .cached(cache, staging: staging)
            counters.setMode(.cached)
        } catch {
            if let staging { deleteQuietly(staging) }
            throw error
        }
    }

    func cachedCache() throws(NetdiskError) -> SparseCache {
        switch state {
        case .cached(let cache, _): return cache
        case .failed(let error): throw error
        default: throw .cancelled
        }
    }

    func cachedWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(NetdiskError) {
        let cache = try cachedCache()
        do throws(NetdiskError) { try cache.write(bytes, at: offset) } catch { fail(error); throw error }
        counters.addWritten(Int64(bytes.count))
        publish(cache.size)
    }

    func read(cachedInto buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(NetdiskError) -> Int {
        try cachedCache().read(into: buffer, at: offset)
    }

    func truncate(cachedTo size: Int64) throws(NetdiskError) {
        let cache = try cachedCache()
        try cache.truncate(to: size)
        publish(size)
    }

    func fail(_ error: NetdiskError) {
        switch state {
        case .streaming(let stream): stream.cancel(error)
        case .cached(let cache, let staging):
            cache.discard()
            if let staging { deleteQuietly(staging) }
        default: break
        }
        state = .failed(error)
        record(failure: error)
        counters.setMode(.failed)
    }

    func deleteQuietly(_ path: String) {
        let api = self.api
        do throws(NetdiskError) {
            try awaitBlocking { () async throws(NetdiskError) in try await api.delete(paths: [path]) }
        } catch {
            logger.warning("could not delete staging file \(path): \(error)")
        }
    }
}
