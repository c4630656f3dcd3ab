import Foundation
import GRDB

/// The resume journal of cached uploads, in SQLite (GRDB).
///
/// A `put` killed with -9 leaves its uploadid, block list and the parts the server acknowledged
/// here; the next `put` of the same source (same path, size and mtime) to the same target uploads
/// only the parts not recorded. Each acknowledged part is one small transaction, so a kill loses at
/// most the parts that were in flight.
public final class UploadJournal: @unchecked Sendable {
    /// One unfinished upload.
    public struct Record: Sendable, Equatable {
        public var id: Int64
        public var remotePath: String
        public var source: SourceIdentity
        public var sliceSize: Int
        public var uploadID: String
        /// The upload host the client pinned for this uploadid, when it exposes one.
        public var host: String?
        public var blockList: [String]
        public var contentMD5: String
        public var sliceMD5: String
        public var doneParts: Set<Int>
    }

    private let queue: DatabaseQueue

    public init(path: String) throws(NetdiskError) {
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            queue = try DatabaseQueue(path: path)
            try queue.write { db in
                try db.execute(sql: """
                    CREATE TABLE IF NOT EXISTS upload (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        remotePath TEXT NOT NULL, sourcePath TEXT NOT NULL,
                        sourceSize INTEGER NOT NULL, sourceMtime INTEGER NOT NULL,
                        sliceSize INTEGER NOT NULL, uploadID TEXT NOT NULL, host TEXT,
                        blockList TEXT NOT NULL, contentMD5 TEXT NOT NULL, sliceMD5 TEXT NOT NULL,
                        createdAt DOUBLE NOT NULL);
                    CREATE TABLE IF NOT EXISTS part (
                        uploadRow INTEGER NOT NULL REFERENCES upload(id) ON DELETE CASCADE,
                        partseq INTEGER NOT NULL, md5 TEXT NOT NULL,
                        PRIMARY KEY (uploadRow, partseq));
                    """)
            }
        } catch {
            throw .localIO("journal \(path): \(error)")
        }
    }

    /// The unfinished upload of exactly this source to this path with this slice size, if any.
    public func find(remotePath: String, source: SourceIdentity, sliceSize: Int) -> Record? {
        try? queue.read { db -> Record? in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT * FROM upload WHERE remotePath = ? AND sourcePath = ? AND sourceSize = ?
                AND sourceMtime = ? AND sliceSize = ? ORDER BY id DESC LIMIT 1
                """, arguments: [remotePath, source.path, source.size, source.mtime, sliceSize]) else { return nil }
            let id: Int64 = row["id"]
            let parts = try Int.fetchAll(db, sql: "SELECT partseq FROM part WHERE uploadRow = ?", arguments: [id])
            let blockJSON: String = row["blockList"]
            let blocks = (try? JSONDecoder().decode([String].self, from: Data(blockJSON.utf8))) ?? []
            return Record(id: id, remotePath: row["remotePath"], source: source, sliceSize: row["sliceSize"],
                          uploadID: row["uploadID"], host: row["host"], blockList: blocks,
                          contentMD5: row["contentMD5"], sliceMD5: row["sliceMD5"], doneParts: Set(parts))
        } ?? nil
    }

    /// Records a fresh uploadid (replacing older records for the same target and source).
    public func begin(remotePath: String, source: SourceIdentity, sliceSize: Int, uploadID: String, host: String?,
                      blockList: [String], contentMD5: String, sliceMD5: String) throws(NetdiskError) -> Record {
        let blocks = String(decoding: (try? JSONEncoder().encode(blockList)) ?? Data("[]".utf8), as: UTF8.self)
        do {
            let id = try queue.write { db -> Int64 in
                try db.execute(sql: "DELETE FROM part WHERE uploadRow IN (SELECT id FROM upload WHERE remotePath = ? AND sourcePath = ?)",
                               arguments: [remotePath, source.path])
                try db.execute(sql: "DELETE FROM upload WHERE remotePath = ? AND sourcePath = ?",
                               arguments: [remotePath, source.path])
                try db.execute(sql: """
                    INSERT INTO upload (remotePath, sourcePath, sourceSize, sourceMtime, sliceSize, uploadID, host,
                                        blockList, contentMD5, sliceMD5, createdAt)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [remotePath, source.path, source.size, source.mtime, sliceSize, uploadID, host,
                                     blocks, contentMD5, sliceMD5, Date().timeIntervalSince1970])
                return db.lastInsertedRowID
            }
            return Record(id: id, remotePath: remotePath, source: source, sliceSize: sliceSize, uploadID: uploadID,
                          host: host, blockList: blockList, contentMD5: contentMD5, sliceMD5: sliceMD5, doneParts: [])
        } catch {
            throw .localIO("journal: \(error)")
        }
    }

    /// Records the upload host the parts go to, so a resumed run sends the rest to the same one.
    public func setHost(record: Int64, host: String) {
        _ = try? queue.write { db in
            try db.execute(sql: "UPDATE upload SET host = ? WHERE id = ?", arguments: [host, record])
        }
    }

    public func markDone(record: Int64, partseq: Int, md5: String) {
        _ = try? queue.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO part (uploadRow, partseq, md5) VALUES (?, ?, ?)",
                           arguments: [record, partseq, md5])
        }
    }

    public func remove(record: Int64) {
        _ = try? queue.write { db in
            try db.execute(sql: "DELETE FROM part WHERE uploadRow = ?", arguments: [record])
            try db.execute(sql: "DELETE FROM upload WHERE id = ?", arguments: [record])
        }
    }
}
