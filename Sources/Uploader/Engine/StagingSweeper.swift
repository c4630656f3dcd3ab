#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// Deletes staging files a killed process left behind.
///
/// A stream is assembled under the staging directory and moved to its target at finish; a process
/// killed between the staging create and the move (or during a fallback) leaves a file there that
/// no one will claim. Cached uploads (and `put`'s resume journal) commit straight to their target,
/// so no journal entry ever owns a staging file: ownership is the process named in the file's name
/// (``StagingOwner``). A file whose owner ran on this machine and is gone is swept at once; a file
/// of another host, or with a name we did not make, only once it is older than `olderThan` seconds.
/// The mount and `put` call this at start-up.
public enum StagingSweeper {
    @discardableResult
    public static func sweep(api: any NetdiskAPI, directory: String, olderThan seconds: Int64 = 86_400,
                             now: Int64 = Int64(Date().timeIntervalSince1970), logger: Logger) async -> Int {
        var stale: [String] = []
        var start = 0
        let here = StagingOwner.current.host
        while true {
            let page: [RemoteEntry]
            do throws(NetdiskError) {
                page = try await api.list(directory: directory, start: start, limit: 1000)
            } catch {
                if case .notFound = error { return 0 }
                logger.warning("could not list staging directory \(directory): \(error)")
                return 0
            }
            for entry in page where !entry.isDirectory {
                if let owner = StagingOwner.parse(entry.name), owner.host == here {
                    if !owner.isAlive { stale.append(entry.path) }
                } else if now - max(entry.serverMtime, entry.localMtime) > seconds {
                    stale.append(entry.path)
                }
            }
            if page.count < 1000 { break }
            start += page.count
        }
        guard !stale.isEmpty else { return 0 }
        do throws(NetdiskError) {
            try await api.delete(paths: stale)
            logger.notice("swept \(stale.count) abandoned staging file(s) in \(directory): \(stale.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))")
            return stale.count
        } catch {
            logger.warning("could not delete abandoned staging files in \(directory): \(error)")
            return 0
        }
    }
}

/// Deletes cache files of sessions that no longer exist (a killed mount or `put`).
///
/// Every live ``SparseCache`` holds an exclusive `flock` on its file for as long as it is open; the
/// kernel drops it when the process dies, however it dies. A file whose lock can be taken has no
/// owner, so deleting it loses nothing: its session's upload never committed.
public enum CacheSweeper {
    @discardableResult
    public static func sweep(cacheDirectory: String, logger: Logger) -> (files: Int, bytes: Int64) {
        let directory = cacheDirectory + "/files"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return (0, 0) }
        var files = 0
        var bytes: Int64 = 0
        for name in names {
            let path = directory + "/" + name
            let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }
            var st = stat()
            if fstat(fd, &st) == 0 { bytes += Int64(st.st_blocks) * 512 }
            if unlink(path) == 0 { files += 1 }
        }
        if files > 0 {
            logger.notice("swept \(files) abandoned cache file(s) (\(bytes / 1024) KiB on disk) in \(directory)")
        }
        return (files, bytes)
    }
}
