#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Who owns a staging file: the machine and the process (pid and start time) that created it.
///
/// Why in the name: the staging directory is shared by every process and host using the account,
/// and Baidu keeps no metadata we could tag. A sweep deletes a file whose owner on this machine is
/// no longer running at once, and leaves another host's files alone until they are a day old.
public struct StagingOwner: Sendable, Equatable {
    public var host: String
    public var pid: Int32
    /// The process's start time in clock ticks after boot (`/proc/PID/stat` field 22): pids are reused.
    public var startTime: UInt64

    public static let current = StagingOwner(host: machineID(), pid: getpid(), startTime: startTime(of: getpid()) ?? 0)

    /// `HOST-PID-START-UUID`.
    public func fileName() -> String {
        "\(host)-\(pid)-\(startTime)-\(UUID().uuidString)"
    }

    public static func parse(_ name: String) -> StagingOwner? {
        let fields = name.split(separator: "-", maxSplits: 3, omittingEmptySubsequences: false)
        guard fields.count == 4, fields[0].count == 16, fields[0].allSatisfy(\.isHexDigit),
              let pid = Int32(fields[1]), let start = UInt64(fields[2]) else { return nil }
        return StagingOwner(host: String(fields[0]), pid: pid, startTime: start)
    }

    /// True while the owning process runs (only meaningful for owners on this machine).
    public var isAlive: Bool {
        guard let start = Self.startTime(of: pid) else { return false }
        return start == startTime
    }

    static func startTime(of pid: Int32) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may contain spaces): state is field 3, starttime 22.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// 16 hex digits naming where pids mean something: 8 of /etc/machine-id (or the host id) and 8
    /// of the pid namespace's inode. Containers often share a machine-id but not their pids, and
    /// must not take each other's live files for abandoned ones.
    static func machineID() -> String {
        var machine = String(format: "%08lx", UInt(bitPattern: gethostid()) & 0xffff_ffff)
        for file in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
            if let text = try? String(contentsOfFile: file, encoding: .utf8) {
                let hex = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if hex.count >= 8, hex.allSatisfy(\.isHexDigit) { machine = String(hex.prefix(8)).lowercased(); break }
            }
        }
        var st = stat()
        let namespace = stat("/proc/self/ns/pid", &st) == 0 ? UInt64(st.st_ino) : 0
        return machine + String(format: "%08llx", namespace & 0xffff_ffff)
    }
}
