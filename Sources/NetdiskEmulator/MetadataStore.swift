import Foundation
import GRDB

/// One file or directory of the emulated account.
struct FileRecord: Sendable {
    var fsID: Int64
    var path: String
    var isDir: Bool
    var size: Int64
    /// Part MD5s in order; the content is the concatenation of these blobs.
    var blocks: [String]
    /// Size of every block but the last.
    var partSize: Int64
    var contentMD5: String?
    var ctime: Int64
    var mtime: Int64
    var localCtime: Int64
    var localMtime: Int64

    var name: String { RemotePath.name(path) }

    /// Baidu's `md5`: the content MD5 for single-part files; for multi-part files something else
    /// (here the MD5 of the block list), as on the real service.
    var serverMD5: String {
        if blocks.count <= 1 { return blocks.first ?? KnownMD5.empty }
        return BlobStore.md5(of: blocks.joined(separator: ","))
    }

    init(row: Row) {
        fsID = row["fs_id"]
        path = row["path"]
        isDir = row["isdir"]
        size = row["size"]
        let blockText: String = row["blocks"]
        blocks = blockText.isEmpty ? [] : blockText.split(separator: ",").map(String.init)
        partSize = row["part_size"]
        contentMD5 = row["content_md5"]
        ctime = row["ctime"]
        mtime = row["mtime"]
        localCtime = row["local_ctime"]
        localMtime = row["local_mtime"]
    }
}

struct UploadRecord: Sendable {
    var uploadID: String
    var path: String
    var size: Int64?
    var blockList: [String]
    var rtype: Int
    var created: Double

    init(row: Row) {
        uploadID = row["uploadid"]
        path = row["path"]
        size = row["size"]
        let text: String = row["block_list"]
        blockList = text.isEmpty ? [] : text.split(separator: ",").map(String.init)
        rtype = row["rtype"]
        created = row["created"]
    }
}

struct PartRecord: Sendable {
    var partseq: Int
    var size: Int64
    var md5: String
    var host: Int
}

enum TokenState: Sendable { case valid, expired, unknown }

/// What a new file row is made of.
struct NewFile: Sendable {
    var path: String
    var isDir: Bool
    var size: Int64 = 0
    var blocks: [String] = []
    var partSize: Int64 = 0
    var contentMD5: String?
    var localCtime: Int64?
    var localMtime: Int64?
}

/// The account's metadata (files tree, open uploads, tokens, dlinks) in SQLite through GRDB.
/// GRDB runs every access on its own serial queues, never on the caller's thread.
final class MetadataStore: Sendable {
    let db: DatabasePool

    init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        // WAL + NORMAL survives a crash of the emulator (not of the machine) and spares an fsync per part.
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        db = try DatabasePool(path: path, configuration: config)
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE files(
                    fs_id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, parent TEXT NOT NULL,
                    name TEXT NOT NULL, isdir INTEGER NOT NULL, size INTEGER NOT NULL, blocks TEXT NOT NULL,
                    part_size INTEGER NOT NULL, content_md5 TEXT, ctime INTEGER NOT NULL, mtime INTEGER NOT NULL,
                    local_ctime INTEGER NOT NULL, local_mtime INTEGER NOT NULL);
                CREATE INDEX files_parent ON files(parent, name);
                CREATE INDEX files_size ON files(size);
                CREATE TABLE contents(content_md5 TEXT NOT NULL, size INTEGER NOT NULL, blocks TEXT NOT NULL,
                    part_size INTEGER NOT NULL, PRIMARY KEY(content_md5, size));
                CREATE TABLE uploads(uploadid TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER,
                    block_list TEXT NOT NULL, rtype INTEGER NOT NULL, created REAL NOT NULL);
                CREATE TABLE parts(uploadid TEXT NOT NULL, partseq INTEGER NOT NULL, size INTEGER NOT NULL,
                    md5 TEXT NOT NULL, host INTEGER NOT NULL, PRIMARY KEY(uploadid, partseq));
                CREATE TABLE access_tokens(token TEXT PRIMARY KEY, expires REAL NOT NULL);
                CREATE TABLE refresh_tokens(token TEXT PRIMARY KEY, used INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE device_codes(code TEXT PRIMARY KEY, polls INTEGER NOT NULL DEFAULT 0,
                    expires REAL NOT NULL, redeemed INTEGER NOT NULL DEFAULT 0);
                CREATE TABLE dlinks(id TEXT PRIMARY KEY, fs_id INTEGER NOT NULL, expires REAL NOT NULL);
                """)
        }
        try migrator.migrate(db)
    }

    // MARK: tokens

    func issueTokens(lifetime: Double) async throws -> (access: String, refresh: String) {
        let access = "121." + Random.hex(24)
        let refresh = "122." + Random.hex(24)
        let expires = now() + lifetime
        try await db.write { db in
            try db.execute(sql: "INSERT INTO access_tokens(token, expires) VALUES (?, ?)", arguments: [access, expires])
            try db.execute(sql: "INSERT INTO refresh_tokens(token) VALUES (?)", arguments: [refresh])
        }
        return (access, refresh)
    }

    func tokenState(_ token: String) async throws -> TokenState {
        let expires = try await db.read { db in
            try Double.fetchOne(db, sql: "SELECT expires FROM access_tokens WHERE token = ?", arguments: [token])
        }
        guard let expires else { return .unknown }
        return expires > now() ? .valid : .expired
    }

    /// Marks a refresh token used; false when it is unknown or was used before (refresh tokens work once).
    func redeemRefreshToken(_ token: String) async throws -> Bool {
        try await db.write { db in
            try db.execute(sql: "UPDATE refresh_tokens SET used = 1 WHERE token = ? AND used = 0", arguments: [token])
            return db.changesCount == 1
        }
    }

    func expireAllTokens() async throws {
        let t = now() - 1
        try await db.write { db in try db.execute(sql: "UPDATE access_tokens SET expires = ?", arguments: [t]) }
    }

    func createDeviceCode(lifetime: Double) async throws -> String {
        let code = Random.hex(16)
        let expires = now() + lifetime
        try await db.write { db in
            try db.execute(sql: "INSERT INTO device_codes(code, expires) VALUES (?, ?)", arguments: [code, expires])
        }
        return code
    }

    enum DevicePoll: Sendable { case unknown, expired, redeemed, polled(Int) }

    /// Counts one poll of a device code; `redeem` marks it used (its tokens were issued).
    func pollDeviceCode(_ code: String) async throws -> DevicePoll {
        try await db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT polls, expires, redeemed FROM device_codes WHERE code = ?",
                                             arguments: [code]) else { return .unknown }
            if (row["redeemed"] as Int) != 0 { return .redeemed }
            if (row["expires"] as Double) < now() { return .expired }
            try db.execute(sql: "UPDATE device_codes SET polls = polls + 1 WHERE code = ?", arguments: [code])
            return .polled((row["polls"] as Int) + 1)
        }
    }

    func redeemDeviceCode(_ code: String) async throws {
        try await db.write { db in
            try db.execute(sql: "UPDATE device_codes SET redeemed = 1 WHERE code = ?", arguments: [code])
        }
    }

    // MARK: files

    func file(at path: String) async throws -> FileRecord? {
        try await db.read { db in try Self.file(db, path) }
    }

    static func file(_ db: Database, _ path: String) throws -> FileRecord? {
        if path == "/" { return nil }
        return try Row.fetchOne(db, sql: "SELECT * FROM files WHERE path = ?", arguments: [path]).map(FileRecord.init)
    }

    func files(fsIDs: [Int64]) async throws -> [FileRecord] {
        try await db.read { db in
            try fsIDs.compactMap { id in
                try Row.fetchOne(db, sql: "SELECT * FROM files WHERE fs_id = ?", arguments: [id]).map(FileRecord.init)
            }
        }
    }

    func allFiles() async throws -> [FileRecord] {
        try await db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM files ORDER BY path").map(FileRecord.init) }
    }

    /// One page of a directory. nil when the directory does not exist.
    func list(directory: String, start: Int, limit: Int, order: String, descending: Bool, foldersOnly: Bool) async throws -> [FileRecord]? {
        let column: String
        switch order {
        case "time": column = "mtime"
        case "size": column = "size"
        default: column = "name"
        }
        let direction = descending ? "DESC" : "ASC"
        return try await db.read { db in
            if directory != "/" {
                guard let dir = try Self.file(db, directory), dir.isDir else { return nil }
            }
            let filter = foldersOnly ? "AND isdir = 1" : ""
            return try Row.fetchAll(db, sql: """
                SELECT * FROM files WHERE parent = ? \(filter) ORDER BY \(column) \(direction), name ASC LIMIT ? OFFSET ?
                """, arguments: [directory, limit, start]).map(FileRecord.init)
        }
    }

    func isDirectoryEmpty(_ path: String) async throws -> Bool {
        try await db.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM files WHERE parent = ?", arguments: [path]) == 0
        }
    }

    func usedBytes() async throws -> Int64 {
        try await db.read { db in try Self.usedBytes(db) }
    }

    static func usedBytes(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(size), 0) FROM files WHERE isdir = 0") ?? 0
    }

    /// Creates the missing directories of `directory` (like `mkdir -p`); a file in the way is -8.
    static func ensureDirectory(_ db: Database, _ directory: String) throws {
        if directory == "/" { return }
        if let existing = try file(db, directory) {
            if existing.isDir { return }
            throw BaiduFailure.exists(directory)
        }
        try ensureDirectory(db, RemotePath.parent(directory))
        try insert(db, NewFile(path: directory, isDir: true))
    }

    @discardableResult
    static func insert(_ db: Database, _ file: NewFile) throws -> FileRecord {
        let t = Int64(now())
        try db.execute(sql: """
            INSERT INTO files(path, parent, name, isdir, size, blocks, part_size, content_md5, ctime, mtime, local_ctime, local_mtime)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [file.path, RemotePath.parent(file.path), RemotePath.name(file.path), file.isDir, file.size,
                             file.blocks.joined(separator: ","), file.partSize, file.contentMD5, t, t,
                             file.localCtime ?? t, file.localMtime ?? t])
        if let md5 = file.contentMD5, !file.isDir {
            try registerContent(db, md5: md5, size: file.size, blocks: file.blocks, partSize: file.partSize)
        }
        return try Self.file(db, file.path)!
    }

    static func registerContent(_ db: Database, md5: String, size: Int64, blocks: [String], partSize: Int64) throws {
        try db.execute(sql: "INSERT OR IGNORE INTO contents(content_md5, size, blocks, part_size) VALUES (?, ?, ?, ?)",
                       arguments: [md5, size, blocks.joined(separator: ","), partSize])
    }

    /// Places a new file or directory at `file.path` honouring `rtype` (0 fail, 1/2 rename, 3 overwrite),
    /// creating parent directories, within the quota. Returns the record as stored.
    func place(_ file: NewFile, rtype: Int, quota: Int64) async throws -> FileRecord {
        try await db.write { db in try Self.place(db, file, rtype: rtype, quota: quota) }
    }

    static func place(_ db: Database, _ file: NewFile, rtype: Int, quota: Int64) throws -> FileRecord {
        var file = file
        try ensureDirectory(db, RemotePath.parent(file.path))
        var replacedSize: Int64 = 0
        if let existing = try Self.file(db, file.path) {
            switch rtype {
            case 3:
                if existing.isDir || file.isDir { throw BaiduFailure.exists(file.path) }
                replacedSize = existing.size
                try db.execute(sql: "DELETE FROM files WHERE fs_id = ?", arguments: [existing.fsID])
            case 1, 2:
                var attempt = 1
                var candidate = RemotePath.renamed(file.path, attempt: attempt)
                while try Self.file(db, candidate) != nil {
                    attempt += 1
                    candidate = RemotePath.renamed(file.path, attempt: attempt)
                }
                file.path = candidate
            default:
                throw BaiduFailure.exists(file.path)
            }
        }
        if !file.isDir, try usedBytes(db) - replacedSize + file.size > quota {
            throw BaiduFailure(-10, "quota exceeded")
        }
        return try insert(db, file)
    }

    /// Deletes files and directory trees. Missing paths are -9.
    func delete(_ paths: [String]) async throws -> [(String, Int)] {
        try await db.write { db in
            try paths.map { path in
                guard try Self.file(db, path) != nil else { return (path, -9) }
                try db.execute(sql: "DELETE FROM files WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                               arguments: [path, Self.likePrefix(path)])
                return (path, 0)
            }
        }
    }

    static func likePrefix(_ path: String) -> String {
        path.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "/%"
    }

    /// Moves or copies one file or tree to `dest`. ondup: "fail" → -8 on conflict, "overwrite" replaces,
    /// "newcopy" renames, "skip" leaves both as they are.
    func transfer(from: String, to dest: String, copy: Bool, ondup: String, quota: Int64) async throws {
        try await db.write { db in
            guard let source = try Self.file(db, from) else { throw BaiduFailure.notFound(from) }
            if dest == from { if copy { throw BaiduFailure.exists(dest) } else { return } }
            if dest.hasPrefix(from + "/") { throw BaiduFailure(2, "cannot move a directory into itself") }
            try Self.ensureDirectory(db, RemotePath.parent(dest))
            var target = dest
            if let existing = try Self.file(db, dest) {
                switch ondup {
                case "overwrite":
                    try db.execute(sql: "DELETE FROM files WHERE path = ? OR path LIKE ? ESCAPE '\\'",
                                   arguments: [existing.path, Self.likePrefix(existing.path)])
                case "skip":
                    return
                case "newcopy":
                    var attempt = 1
                    repeat {
                        target = RemotePath.renamed(dest, attempt: attempt)
                        attempt += 1
                    } while try Self.file(db, target) != nil
                default:
                    throw BaiduFailure.exists(dest)
                }
            }
            let tree = try Row.fetchAll(db, sql: "SELECT * FROM files WHERE path = ? OR path LIKE ? ESCAPE '\\' ORDER BY path",
                                        arguments: [source.path, Self.likePrefix(source.path)]).map(FileRecord.init)
            if copy {
                let added = tree.filter { !$0.isDir }.reduce(Int64(0)) { $0 + $1.size }
                if try Self.usedBytes(db) + added > quota { throw BaiduFailure(-10, "quota exceeded") }
            }
            for record in tree {
                let newPath = target + record.path.dropFirst(source.path.count)
                if copy {
                    try Self.insert(db, NewFile(path: newPath, isDir: record.isDir, size: record.size, blocks: record.blocks,
                                                partSize: record.partSize, contentMD5: record.contentMD5,
                                                localCtime: record.localCtime, localMtime: record.localMtime))
                } else {
                    try db.execute(sql: "UPDATE files SET path = ?, parent = ?, name = ?, mtime = ? WHERE fs_id = ?",
                                   arguments: [newPath, RemotePath.parent(newPath), RemotePath.name(newPath),
                                               Int64(now()), record.fsID])
                }
            }
        }
    }

    // MARK: content index (rapid upload)

    /// Stored content with this MD5 and size, if any file ever held it.
    func content(md5: String, size: Int64) async throws -> (blocks: [String], partSize: Int64)? {
        try await db.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT blocks, part_size FROM contents WHERE content_md5 = ? AND size = ?",
                                             arguments: [md5, size]) else { return nil }
            let text: String = row["blocks"]
            return (text.isEmpty ? [] : text.split(separator: ",").map(String.init), row["part_size"])
        }
    }

    func filesWithoutContentMD5(size: Int64?) async throws -> [FileRecord] {
        try await db.read { db in
            if let size {
                return try Row.fetchAll(db, sql: "SELECT * FROM files WHERE isdir = 0 AND content_md5 IS NULL AND size = ?",
                                        arguments: [size]).map(FileRecord.init)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM files WHERE isdir = 0 AND content_md5 IS NULL").map(FileRecord.init)
        }
    }

    func setContentMD5(_ md5: String, for record: FileRecord) async throws {
        try await db.write { db in
            try db.execute(sql: "UPDATE files SET content_md5 = ? WHERE blocks = ? AND size = ?",
                           arguments: [md5, record.blocks.joined(separator: ","), record.size])
            try Self.registerContent(db, md5: md5, size: record.size, blocks: record.blocks, partSize: record.partSize)
        }
    }

    // MARK: uploads

    func createUpload(path: String, size: Int64?, blockList: [String], rtype: Int) async throws -> String {
        let id = "N1-" + Random.hex(16)
        let t = now()
        try await db.write { db in
            try db.execute(sql: "INSERT INTO uploads(uploadid, path, size, block_list, rtype, created) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [id, path, size, blockList.joined(separator: ","), rtype, t])
        }
        return id
    }

    func upload(_ id: String) async throws -> UploadRecord? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM uploads WHERE uploadid = ?", arguments: [id]).map(UploadRecord.init)
        }
    }

    /// An open upload of the same path, size and block list: precreate resumes it.
    func resumableUpload(path: String, size: Int64, blockList: [String], notBefore: Double) async throws -> UploadRecord? {
        try await db.read { db in
            try Row.fetchOne(db, sql: """
                SELECT * FROM uploads WHERE path = ? AND size = ? AND block_list = ? AND created >= ? ORDER BY created DESC LIMIT 1
                """, arguments: [path, size, blockList.joined(separator: ","), notBefore]).map(UploadRecord.init)
        }
    }

    func expireUploads(_ id: String?) async throws {
        try await db.write { db in
            if let id {
                try db.execute(sql: "UPDATE uploads SET created = 0 WHERE uploadid = ?", arguments: [id])
            } else {
                try db.execute(sql: "UPDATE uploads SET created = 0")
            }
        }
    }

    func recordPart(uploadID: String, partseq: Int, size: Int64, md5: String, host: Int) async throws {
        try await db.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO parts(uploadid, partseq, size, md5, host) VALUES (?, ?, ?, ?, ?)",
                           arguments: [uploadID, partseq, size, md5, host])
        }
    }

    func parts(of uploadID: String) async throws -> [PartRecord] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT partseq, size, md5, host FROM parts WHERE uploadid = ? ORDER BY partseq",
                             arguments: [uploadID]).map {
                PartRecord(partseq: $0["partseq"], size: $0["size"], md5: $0["md5"], host: $0["host"])
            }
        }
    }

    /// Commits an upload: places the file and forgets the upload, in one transaction.
    func commitUpload(_ uploadID: String, file: NewFile, rtype: Int, quota: Int64) async throws -> FileRecord {
        try await db.write { db in
            guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM uploads WHERE uploadid = ?", arguments: [uploadID]) == 1 else {
                throw BaiduFailure(31355, "uploadid not found")
            }
            let record = try Self.place(db, file, rtype: rtype, quota: quota)
            try db.execute(sql: "DELETE FROM parts WHERE uploadid = ?", arguments: [uploadID])
            try db.execute(sql: "DELETE FROM uploads WHERE uploadid = ?", arguments: [uploadID])
            return record
        }
    }

    func uploadIDs() async throws -> Set<String> {
        Set(try await db.read { db in try String.fetchAll(db, sql: "SELECT uploadid FROM uploads") })
    }

    func openUploadCount() async throws -> Int {
        try await db.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM uploads") ?? 0 }
    }

    // MARK: dlinks

    func createDlink(fsID: Int64, lifetime: Double) async throws -> String {
        let id = Random.hex(20)
        let expires = now() + lifetime
        try await db.write { db in
            try db.execute(sql: "INSERT INTO dlinks(id, fs_id, expires) VALUES (?, ?, ?)", arguments: [id, fsID, expires])
        }
        return id
    }

    func dlink(_ id: String) async throws -> (fsID: Int64, expires: Double)? {
        try await db.read { db in
            try Row.fetchOne(db, sql: "SELECT fs_id, expires FROM dlinks WHERE id = ?", arguments: [id]).map {
                ($0["fs_id"], $0["expires"])
            }
        }
    }

    func expireDlinks() async throws {
        try await db.write { db in try db.execute(sql: "UPDATE dlinks SET expires = 0") }
    }
}
