import Foundation
import Logging

/// Deletes staging files a crashed process left behind.
///
/// A stream is assembled under the staging directory and moved to its target at finish; a process
/// killed between the staging create and the move (or during a fallback) leaves a file there that
/// no one will claim. The mount calls this at start-up; anything older than `olderThan` seconds
/// cannot belong to a live session (sessions of the same process are younger).
public enum StagingSweeper {
    @discardableResult
    public static func sweep(api: any NetdiskAPI, directory: String, olderThan seconds: Int64 = 86_400,
                             now: Int64 = Int64(Date().timeIntervalSince1970), logger: Logger) async -> Int {
        var stale: [String] = []
        var start = 0
        while true {
            let page: [RemoteEntry]
            do throws(NetdiskError) {
                page = try await api.list(directory: directory, start: start, limit: 1000)
            } catch {
                if case .notFound = error { return 0 }
                logger.warning("could not list staging directory \(directory): \(error)")
                return 0
            }
            stale += page.filter { !$0.isDirectory && now - max($0.serverMtime, $0.localMtime) > seconds }.map(\.path)
            if page.count < 1000 { break }
            start += page.count
        }
        guard !stale.isEmpty else { return 0 }
        do throws(NetdiskError) {
            try await api.delete(paths: stale)
            logger.notice("deleted \(stale.count) abandoned staging file(s) in \(directory)")
            return stale.count
        } catch {
            logger.warning("could not delete abandoned staging files in \(directory): \(error)")
            return 0
        }
    }
}
