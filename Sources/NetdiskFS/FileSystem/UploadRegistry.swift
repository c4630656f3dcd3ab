import Foundation
import Uploader
import Synchronization

/// The files uploading right now, for `netdiskfs status`.
///
/// The daemon rewrites a small JSON file every second (atomically, by rename); `status` reads it.
/// A file is simpler than a socket and survives a hung daemon: a stale `updated` time shows it.
final class UploadRegistry: Sendable {
    struct Upload: Codable, Sendable {
        var path: String
        var mode: String
        var bytesWritten: Int64
        var bytesUploaded: Int64
        var startedAt: Double
        var rateBytesPerSecond: Double
    }

    struct Snapshot: Codable, Sendable {
        var pid: Int32
        var mountpoint: String
        /// Set in `--emulator` mode: where the embedded emulator listens (its admin API is there).
        var emulatorURL: String?
        var updated: Double
        var uploads: [Upload]
        /// `--writeback`: files closed and waiting for their upload (nil without write-back).
        var queued: [Queued]? = nil
        /// The memory budget's use (nil from a daemon older than the shared budget).
        var memory: MemoryBudget.Usage? = nil
    }

    /// A file in the write-back queue.
    struct Queued: Codable, Sendable {
        var path: String
        var size: Int64
        var queuedAt: Double
        var attempts: Int
        /// Why the last attempt failed; nil while none has.
        var lastError: String?
        var uploading: Bool
    }

    private struct Tracked {
        weak var session: (any WriteSession)?
        var path: String
        var startedAt: Double
        var lastUploaded: Int64 = 0
        var lastSample: Double
        var rate: Double = 0
    }

    private let tracked = Mutex([ObjectIdentifier: Tracked]())

    func add(_ session: any WriteSession, path: String) {
        let now = Date().timeIntervalSince1970
        tracked.withLock { $0[ObjectIdentifier(session)] = Tracked(session: session, path: path, startedAt: now, lastSample: now) }
    }

    func remove(_ session: any WriteSession) {
        _ = tracked.withLock { $0.removeValue(forKey: ObjectIdentifier(session)) }
    }

    /// The write-back queue, shown in the snapshot.
    let queue = Mutex<WritebackQueue?>(nil)
    /// The daemon's memory budget, shown in the snapshot.
    let memory = Mutex<MemoryBudget?>(nil)

    func snapshot(mountpoint: String, emulatorURL: String? = nil) -> Snapshot {
        let now = Date().timeIntervalSince1970
        let uploads = tracked.withLock { tracked -> [Upload] in
            var uploads: [Upload] = []
            for (key, var item) in tracked {
                guard let session = item.session else { tracked[key] = nil; continue }
                let uploaded = session.bytesUploaded
                let elapsed = now - item.lastSample
                if elapsed >= 0.5 {
                    let instant = Double(uploaded - item.lastUploaded) / elapsed
                    item.rate = item.rate == 0 ? instant : 0.5 * item.rate + 0.5 * instant
                    item.lastUploaded = uploaded
                    item.lastSample = now
                    tracked[key] = item
                }
                uploads.append(Upload(path: item.path, mode: session.modeName, bytesWritten: session.size,
                                      bytesUploaded: uploaded, startedAt: item.startedAt, rateBytesPerSecond: item.rate))
            }
            return uploads.sorted { $0.path < $1.path }
        }
        let queued = queue.withLock { $0 }?.snapshot.map {
            Queued(path: $0.remotePath, size: $0.size, queuedAt: $0.enqueuedAt, attempts: $0.attempts, lastError: $0.lastError,
                   uploading: $0.uploading)
        }
        return Snapshot(pid: getpid(), mountpoint: mountpoint, emulatorURL: emulatorURL, updated: now, uploads: uploads,
                        queued: queued, memory: memory.withLock { $0 }?.usage)
    }
}

/// Where a running mount publishes its status; one file per mountpoint.
public enum StatusFiles {
    public static func directory() -> URL {
        StateDirectory.url().appendingPathComponent("status", isDirectory: true)
    }

    public static func file(for mountpoint: String) -> URL {
        let safe = mountpoint.map { $0.isLetter || $0.isNumber ? String($0) : "_" }.joined()
        return directory().appendingPathComponent("\(safe).json")
    }
}

/// `$XDG_STATE_HOME/netdiskfs` (default ~/.local/state/netdiskfs): logs, status, pid files.
public enum StateDirectory {
    public static func url() -> URL {
        URL(fileURLWithPath: XDGDirectories.netdiskfs(.state), isDirectory: true)
    }
}

/// Rewrites the status file every second until stopped.
final class StatusPublisher: @unchecked Sendable {
    private let registry: UploadRegistry
    private let mountpoint: String
    private let emulatorURL: String?
    private let file: URL
    private let stopped = Mutex(false)
    private let finished = Gate()

    init(registry: UploadRegistry, mountpoint: String, emulatorURL: String?) {
        self.registry = registry
        self.mountpoint = mountpoint
        self.emulatorURL = emulatorURL
        self.file = StatusFiles.file(for: mountpoint)
    }

    /// Writes the first status file before it returns, then one a second on a thread of its own:
    /// the mount reports itself ready after this, and `netdiskfs sync` or `status` run right then
    /// (a remount after kill -9) found only the dead daemon's file and said "not a running mount".
    func start() {
        try? FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let first = publish(encoder: encoder, lastStatus: "")
        NamedThread.start("nd.status") { [self] in
            var lastStatus = first
            while !stopped.withLock({ $0 }) {
                Thread.sleep(forTimeInterval: 1)
                guard !stopped.withLock({ $0 }) else { break }
                lastStatus = publish(encoder: encoder, lastStatus: lastStatus)
            }
            try? FileManager.default.removeItem(at: file)
            finished.open()
        }
    }

    /// Writes one snapshot; returns its systemd status line.
    private func publish(encoder: JSONEncoder, lastStatus: String) -> String {
        let snapshot = registry.snapshot(mountpoint: mountpoint, emulatorURL: emulatorURL)
        if let data = try? encoder.encode(snapshot) {
            try? data.write(to: file, options: .atomic)
        }
        // systemd's STATUS= line (`systemctl status`), when it changes.
        let status = Self.statusLine(snapshot)
        if status != lastStatus { SystemdNotifier.notify("STATUS=\(status)") }
        return status
    }

    static func statusLine(_ snapshot: UploadRegistry.Snapshot) -> String {
        if let queued = snapshot.queued, !queued.isEmpty {
            let failing = queued.filter { $0.lastError != nil }.count
            return "mounted \(snapshot.mountpoint); \(snapshot.uploads.count) upload(s) in progress, \(queued.count) file(s) queued\(failing > 0 ? ", \(failing) failing" : "")"
        }
        guard !snapshot.uploads.isEmpty else { return "mounted \(snapshot.mountpoint); no uploads in progress" }
        let pending = snapshot.uploads.reduce(Int64(0)) { $0 + max(0, $1.bytesWritten - $1.bytesUploaded) }
        return "mounted \(snapshot.mountpoint); \(snapshot.uploads.count) upload(s) in progress, \(pending >> 20) MiB not yet acknowledged"
    }

    func stop() {
        stopped.withLock { $0 = true }
        finished.wait()
    }
}
