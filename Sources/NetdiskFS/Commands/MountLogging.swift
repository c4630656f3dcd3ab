#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// Log lines to the mount's log file (and to stderr in the foreground), one write(2) per line so
/// lines from many FUSE threads never interleave.
struct MountLogHandler: LogHandler {
    let descriptors: [Int32]
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var time = timeval()
        gettimeofday(&time, nil)
        var seconds = time.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let stamp = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                           parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, Int32(time.tv_usec / 1000))
        let line = "\(stamp) \(event.level) \(label): \(event.message)\n"
        var bytes = Array(line.utf8)
        for fd in descriptors {
            _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }
}

enum MountLogging {
    /// `$XDG_STATE_HOME/netdiskfs/mount<mountpoint>.log`, other characters than letters and digits
    /// as `_`: `mount_root_baidu.log` for `/root/baidu`.
    static func logFile(for mountpoint: String) -> URL {
        let safe = mountpoint.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
        return StateDirectory.url().appendingPathComponent("mount\(safe).log")
    }

    /// Opens the log file for appending (creating the state directory).
    static func openLogFile(for mountpoint: String) throws -> Int32 {
        let url = logFile(for: mountpoint)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let fd = open(url.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: url.path]) }
        return fd
    }
}
