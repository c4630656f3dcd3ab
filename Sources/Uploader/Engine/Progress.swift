import Foundation

/// A snapshot of one transfer, for the CLI's progress bar and `netdiskfs status`.
public struct UploadProgress: Sendable, Equatable {
    public enum Mode: String, Sendable { case streaming, cached, rapid, done, failed }
    public var mode: Mode
    /// Bytes the producer handed over (the logical size so far).
    public var bytesWritten: Int64
    /// Bytes hashed (part MD5s, content MD5 on the cached path).
    public var bytesHashed: Int64
    /// Bytes handed to the HTTP layer (including resends).
    public var bytesSent: Int64
    /// Bytes of parts the server confirmed with the right MD5.
    public var bytesAcknowledged: Int64
    /// Known total for cached uploads; nil while streaming.
    public var totalBytes: Int64?
    /// Seconds since the transfer started.
    public var elapsed: Double

    /// Acknowledged bytes per second since the start.
    public var rate: Double { elapsed > 0 ? Double(bytesAcknowledged) / elapsed : 0 }
}

/// Thread-safe counters behind ``UploadProgress``; updated from upload workers, read by anyone.
public final class ProgressCounters: @unchecked Sendable {
    private let lock = NSLock()
    private var snapshot: UploadProgress
    private let start = DispatchTime.now().uptimeNanoseconds
    /// Called (outside the lock) after every update, e.g. to redraw a progress bar; keep it cheap.
    private let observer: (@Sendable (UploadProgress) -> Void)?

    public init(mode: UploadProgress.Mode, totalBytes: Int64? = nil,
                observer: (@Sendable (UploadProgress) -> Void)? = nil) {
        snapshot = UploadProgress(mode: mode, bytesWritten: 0, bytesHashed: 0, bytesSent: 0,
                                  bytesAcknowledged: 0, totalBytes: totalBytes, elapsed: 0)
        self.observer = observer
    }

    public var current: UploadProgress {
        lock.lock()
        var copy = snapshot
        lock.unlock()
        copy.elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return copy
    }

    func update(_ change: (inout UploadProgress) -> Void) {
        lock.lock()
        change(&snapshot)
        lock.unlock()
        if let observer { observer(current) }
    }

    func addWritten(_ n: Int64) { update { $0.bytesWritten += n } }
    func addHashed(_ n: Int64) { update { $0.bytesHashed += n } }
    func addSent(_ n: Int64) { update { $0.bytesSent += n } }
    func addAcknowledged(_ n: Int64) { update { $0.bytesAcknowledged += n } }
    func setMode(_ mode: UploadProgress.Mode) { update { $0.mode = mode } }
    func setTotal(_ total: Int64?) { update { $0.totalBytes = total } }
}
