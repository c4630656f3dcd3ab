import Foundation
@testable import Uploader

/// An in-memory NetdiskAPI with fault injection, for unit tests of the engine's pieces before (and
/// besides) the real emulator: it checks part MD5s, block lists and sizes the way the emulator does.
final class FakeNetdisk: NetdiskAPI, @unchecked Sendable {
    struct Faults {
        /// Probability that a part upload fails with HTTP 500 (after the client's retries, as it were).
        var partFailureRate = 0.0
        /// The next N part uploads answer a wrong MD5 (the part is stored anyway).
        var badMD5Count = 0
        /// After this many parts received, every open uploadid expires once (31363, then 31355).
        var expireAfterParts: Int?
        var refuseStreamingPrecreate = false
        /// Seconds each streaming precreate takes (a long round trip).
        var streamingPrecreateDelay = 0.0
        /// The streaming precreate fails with this (after its delay).
        var streamingPrecreateError: NetdiskError?
        /// Fail the part upload fatally (404-like) after this many parts: simulates a crash for resume tests.
        var crashAfterParts: Int?
        /// Answers of the next list calls, in order: each waits for its gate (if any), then answers
        /// exactly these entries (a slow or lagging cloud). Empty: the files as they are.
        var listScript: [(gate: Gate?, entries: [RemoteEntry])] = []
    }

    private let lock = NSLock()
    var faults = Faults()
    private var files: [String: [UInt8]] = [:]
    private var entries: [String: RemoteEntry] = [:]
    private var uploads: [String: (path: String, parts: [Int: [UInt8]])] = [:]
    private var nextID: UInt64 = 1
    private var rng = SplitMix(seed: 42)
    private(set) var partsReceived = 0
    private(set) var partBytesReceived = 0
    private(set) var streamingPrecreates = 0
    private(set) var knownContentPrecreates = 0
    /// When the last streaming precreate answered (refused or not).
    private(set) var streamingPrecreateAnswered: Date?
    private(set) var rapidHits = 0
    private(set) var deletes: [String] = []

    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T { lock.lock(); defer { lock.unlock() }; return try body() }

    func content(_ path: String) -> [UInt8]? { withLock { files[path] } }
    var paths: [String] { withLock { Array(files.keys).sorted() } }
    func setFaults(_ change: (inout Faults) -> Void) { withLock { change(&faults) } }

    private func entry(_ path: String, size: Int64) -> RemoteEntry {
        nextID += 1
        return RemoteEntry(fsID: nextID, path: path, name: (path as NSString).lastPathComponent, size: size,
                           isDirectory: false, md5: nil)
    }

    func accountInfo() async throws(NetdiskError) -> AccountInfo { AccountInfo(name: "fake", uk: 1, tier: .normal) }
    func quota() async throws(NetdiskError) -> Quota { Quota(total: 1 << 40, used: 0) }
    func list(directory: String, start: Int, limit: Int) async throws(NetdiskError) -> [RemoteEntry] {
        if let scripted = withLock({ faults.listScript.isEmpty ? nil : faults.listScript.removeFirst() }) {
            while scripted.gate?.isOpen == false { try? await Task.sleep(for: .milliseconds(10)) }
            return scripted.entries
        }
        return withLock { entries.values.filter { ($0.path as NSString).deletingLastPathComponent == directory } }
    }
    func downloadLinks(fsIDs: [UInt64]) async throws(NetdiskError) -> [UInt64: String] {
        withLock {
            var out: [UInt64: String] = [:]
            for e in entries.values where fsIDs.contains(e.fsID) { out[e.fsID] = "fake://" + e.path }
            return out
        }
    }
    func download(dlink: String, offset: Int64, length: Int) async throws(NetdiskError) -> [UInt8] {
        let path = String(dlink.dropFirst("fake://".count))
        return try withLock { () throws(NetdiskError) -> [UInt8] in
            guard let data = files[path] else { throw .notFound(code: -9) }
            let lo = Int(offset), hi = min(data.count, lo + length)
            return lo < hi ? Array(data[lo..<hi]) : []
        }
    }
    func precreate(path: String, size: Int64, blockList: [String], contentMD5: String?, sliceMD5: String?,
                   localMtime: Int64?, policy: ConflictPolicy) async throws(NetdiskError) -> PrecreateResult {
        withLock {
            knownContentPrecreates += 1
            // Rapid upload as xpan does it: precreate with content-md5 of content already held (return_type 2).
            if let contentMD5, size > 0,
               let match = files.values.first(where: { $0.count == size && $0.withUnsafeBytes { MD5Hasher.hex(of: $0) } == contentMD5 }) {
                rapidHits += 1
                files[path] = match
                let e = entry(path, size: size)
                entries[path] = e
                return PrecreateResult(uploadID: nil, missingParts: [], rapidHit: e)
            }
            let id = "up-\(UUID().uuidString)"
            uploads[id] = (path, [:])
            return PrecreateResult(uploadID: id, missingParts: Array(0..<blockList.count), rapidHit: nil)
        }
    }
    func precreateStreaming(path: String, strategy: StreamingStrategy, provisionalSize: Int64,
                            policy: ConflictPolicy) async throws(NetdiskError) -> String {
        let delay = withLock { faults.streamingPrecreateDelay }
        if delay > 0 { try? await Task.sleep(for: .milliseconds(Int(delay * 1000))) }
        return try withLock { () throws(NetdiskError) -> String in
            streamingPrecreates += 1
            streamingPrecreateAnswered = Date()
            if faults.refuseStreamingPrecreate { throw .badParameter(code: 2, message: "size required") }
            if let error = faults.streamingPrecreateError { throw error }
            let id = "st-\(UUID().uuidString)"
            uploads[id] = (path, [:])
            return id
        }
    }
    func uploadPart(path: String, uploadID: String, partseq: Int, bytes: PartBytes) async throws(NetdiskError) -> String {
        let data = Array(bytes.buffer)
        return try withLock { () throws(NetdiskError) -> String in
            if let crash = faults.crashAfterParts, partsReceived >= crash { throw .http(status: 404) }
            if let expire = faults.expireAfterParts, partsReceived >= expire {
                faults.expireAfterParts = nil
                uploads.removeAll()
                throw .uploadExpired
            }
            guard uploads[uploadID] != nil else { throw .unknownUploadID }
            if faults.partFailureRate > 0, rng.nextDouble() < faults.partFailureRate { throw .http(status: 500) }
            partsReceived += 1
            partBytesReceived += data.count
            uploads[uploadID]!.parts[partseq] = data
            let md5 = data.withUnsafeBytes { MD5Hasher.hex(of: $0) }
            if faults.badMD5Count > 0 {
                faults.badMD5Count -= 1
                return "00000000000000000000000000000000"
            }
            return md5
        }
    }
    func create(path: String, size: Int64, uploadID: String, blockList: [String], localMtime: Int64?,
                policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry {
        try withLock { () throws(NetdiskError) -> RemoteEntry in
            guard let upload = uploads[uploadID] else { throw .unknownUploadID }
            guard upload.path == path else { throw .createFailed(code: 10) }
            var data: [UInt8] = []
            for (seq, md5) in blockList.enumerated() {
                guard let part = upload.parts[seq], part.withUnsafeBytes({ MD5Hasher.hex(of: $0) }) == md5
                else { throw .createFailed(code: 10) }
                data += part
            }
            guard data.count == size else { throw .createFailed(code: 31190) }
            uploads[uploadID] = nil
            files[path] = data
            let e = entry(path, size: size)
            entries[path] = e
            return e
        }
    }
    func rapidUpload(path: String, size: Int64, contentMD5: String, sliceMD5: String,
                     policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry? {
        withLock {
            guard let match = files.values.first(where: { $0.count == size && $0.withUnsafeBytes { MD5Hasher.hex(of: $0) } == contentMD5 })
            else { return nil }
            rapidHits += 1
            files[path] = match
            let e = entry(path, size: size)
            entries[path] = e
            return e
        }
    }
    func makeDirectory(path: String) async throws(NetdiskError) -> RemoteEntry {
        RemoteEntry(fsID: 0, path: path, name: path, size: 0, isDirectory: true)
    }
    func delete(paths: [String]) async throws(NetdiskError) {
        withLock {
            for p in paths { files[p] = nil; entries[p] = nil; deletes.append(p) }
        }
    }
    func move(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError) {
        try withLock { () throws(NetdiskError) in
            guard let data = files[from], var e = entries[from] else { throw .notFound(code: -9) }
            let target = (toDirectory == "/" ? "" : toDirectory) + "/" + newName
            if files[target] != nil && ondup == .fail { throw .alreadyExists(code: -8) }
            files[from] = nil
            entries[from] = nil
            files[target] = data
            e.path = target
            e.name = newName
            entries[target] = e
        }
    }
    func copy(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError) {}
    func rename(path: String, newName: String) async throws(NetdiskError) {}
}

/// Deterministic pseudo-random bytes for test content.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
    mutating func nextDouble() -> Double { Double(next() >> 11) / Double(1 << 53) }
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var g = SplitMix(seed: seed)
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= count { raw.storeBytes(of: g.next(), toByteOffset: i, as: UInt64.self); i += 8 }
            while i < count { raw[i] = UInt8(truncatingIfNeeded: g.next()); i += 1 }
        }
        return out
    }
}
