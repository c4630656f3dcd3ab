/// The calls of DESIGN.md's protocol table, as the engine and filesystem use them.
///
/// `BaiduClient` is the one implementation that talks HTTP, to Baidu and to the emulator alike.
/// The protocol exists so the engine can be tested against failure-injecting wrappers
/// (as mountpoint-s3 does with its client trait); it is not a second code path to the cloud.
/// Paths are absolute remote paths (`/apps/x/file`). Token refresh, retries with backoff and
/// upload-host pinning happen inside the implementation.
public protocol NetdiskAPI: Sendable {
    func accountInfo() async throws(NetdiskError) -> AccountInfo
    func quota() async throws(NetdiskError) -> Quota
    /// One page of a directory, ordered by name; fewer than `limit` entries means the last page.
    func list(directory: String, start: Int, limit: Int) async throws(NetdiskError) -> [RemoteEntry]
    /// Download links (valid for hours) for files by fs_id.
    func downloadLinks(fsIDs: [UInt64]) async throws(NetdiskError) -> [UInt64: String]
    /// Reads `length` bytes at `offset` through a dlink (following the 302 to the CDN).
    func download(dlink: String, offset: Int64, length: Int) async throws(NetdiskError) -> [UInt8]
    /// The same, written into `sink` (up to its capacity); returns the bytes received (0 past the end).
    func download(dlink: String, offset: Int64, into sink: BufferSink) async throws(NetdiskError) -> Int
    /// One long ranged GET of `length` bytes at `offset` into a sink that paces it (pausing the
    /// transfer when it has no room): the round trip is paid once per stream, not once per window.
    /// No retries (bytes already handed over cannot be taken back); returns when the range ended.
    func stream(dlink: String, offset: Int64, length: Int64, into sink: ResponseSink) async throws(NetdiskError)

    /// xpan precreate with the real size and block list (rapid upload and resume).
    func precreate(path: String, size: Int64, blockList: [String], contentMD5: String?, sliceMD5: String?,
                   localMtime: Int64?, policy: ConflictPolicy) async throws(NetdiskError) -> PrecreateResult
    /// Opens the upload of a stream of unknown size the way `strategy` says; returns the uploadid.
    /// `provisionalSize` is what strategy (a) declares (create later gives the true size).
    func precreateStreaming(path: String, strategy: StreamingStrategy, provisionalSize: Int64,
                            policy: ConflictPolicy) async throws(NetdiskError) -> String
    /// Uploads one part; returns the MD5 the server computed for it. Pins the upload host per uploadid.
    func uploadPart(path: String, uploadID: String, partseq: Int, bytes: PartBytes) async throws(NetdiskError) -> String
    /// Commits an upload: `blockList` is the per-part MD5s in partseq order.
    func create(path: String, size: Int64, uploadID: String, blockList: [String], localMtime: Int64?,
                policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry
    /// Rapid upload (秒传): nil when the server does not hold that content.
    func rapidUpload(path: String, size: Int64, contentMD5: String, sliceMD5: String,
                     policy: ConflictPolicy) async throws(NetdiskError) -> RemoteEntry?
    func makeDirectory(path: String) async throws(NetdiskError) -> RemoteEntry
    func delete(paths: [String]) async throws(NetdiskError)
    /// Moves `from` to the directory `toDirectory` under `newName`.
    func move(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError)
    func copy(from: String, toDirectory: String, newName: String, ondup: DuplicatePolicy) async throws(NetdiskError)
    func rename(path: String, newName: String) async throws(NetdiskError)

    /// The upload host parts of this uploadid go to (locateupload's answer, pinned), for a resume
    /// journal; nil from implementations that do not pin hosts.
    func pinnedUploadHost(path: String, uploadID: String) async throws(NetdiskError) -> String?
    /// Pins an uploadid to the host an earlier run used: every part and the create of one uploadid
    /// must reach the same host, or create fails with errno 10.
    func pinUploadHost(_ host: String, uploadID: String) async
    /// Drops a pinned host (it stopped answering), so the next part asks locateupload again.
    func forgetUploadHost(uploadID: String) async
}

extension NetdiskAPI {
    /// The web-API placeholder precreate, strategy (b).
    public func precreateStreaming(path: String, policy: ConflictPolicy) async throws(NetdiskError) -> String {
        try await precreateStreaming(path: path, strategy: .webPlaceholder, provisionalSize: 0, policy: policy)
    }
    /// Test doubles cannot stream: the reader then reads in windows.
    public func stream(dlink: String, offset: Int64, length: Int64, into sink: ResponseSink) async throws(NetdiskError) {
        throw .protocolViolation("streaming downloads are not supported here")
    }
    /// Test doubles: through the array-returning download.
    public func download(dlink: String, offset: Int64, into sink: BufferSink) async throws(NetdiskError) -> Int {
        let bytes = try await download(dlink: dlink, offset: offset, length: sink.capacity)
        bytes.withUnsafeBytes { sink.base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        sink.count = bytes.count
        return bytes.count
    }
    public func pinnedUploadHost(path: String, uploadID: String) async throws(NetdiskError) -> String? { nil }
    public func pinUploadHost(_ host: String, uploadID: String) async {}
    public func forgetUploadHost(uploadID: String) async {}
}
