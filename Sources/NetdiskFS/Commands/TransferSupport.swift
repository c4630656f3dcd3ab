import ArgumentParser
import Foundation
import Uploader
#if canImport(Glibc)
import Glibc
#endif

/// Byte sizes on the command line: `4194304`, `4M`, `4MiB`, `512k`.
struct ByteCount: ExpressibleByArgument, Sendable {
    let bytes: Int

    init?(argument: String) {
        let text = argument.trimmingCharacters(in: .whitespaces).lowercased()
        let digits = text.prefix { $0.isNumber }
        guard let value = Int(digits), value > 0 else { return nil }
        let unit = text.dropFirst(digits.count).replacingOccurrences(of: "ib", with: "").replacingOccurrences(of: "b", with: "")
        switch unit {
        case "": bytes = value
        case "k": bytes = value << 10
        case "m": bytes = value << 20
        case "g": bytes = value << 30
        default: return nil
        }
    }
}

/// The put/get progress display: a redrawn bar on a terminal, one summary line otherwise.
///
/// Written to stderr so `get SRC -` keeps stdout for data.
final class TransferReporter: @unchecked Sendable {
    private let lock = NSLock()
    private let interactive: Bool
    private var lastDraw = 0.0
    private let label: String

    init(label: String, quiet: Bool) {
        self.label = label
        interactive = !quiet && isatty(STDERR_FILENO) != 0
    }

    /// Progress observer; throttled to five redraws a second.
    func update(_ progress: UploadProgress) {
        guard interactive else { return }
        lock.lock()
        defer { lock.unlock() }
        guard progress.elapsed - lastDraw >= 0.2 else { return }
        lastDraw = progress.elapsed
        let done = progress.bytesAcknowledged
        var line = "\r\(label): \(HumanSize.format(done))"
        if let total = progress.totalBytes, total > 0 {
            let fraction = min(1, Double(done) / Double(total))
            let width = 24
            let filled = Int(fraction * Double(width))
            line += " / \(HumanSize.format(total)) [" + String(repeating: "#", count: filled)
                + String(repeating: " ", count: width - filled) + "] \(Int(fraction * 100))%"
            if progress.rate > 0 {
                line += "  ETA \(Self.duration(Double(total - done) / progress.rate))"
            }
        } else if progress.bytesWritten > 0 {
            line += " (read \(HumanSize.format(progress.bytesWritten)))"
        }
        line += "  \(HumanSize.format(Int64(progress.rate)))/s   "
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// The final line: what moved, how fast, and how (streaming, cached, rapid).
    func summary(_ progress: UploadProgress, bytes: Int64, how: String) {
        let seconds = max(progress.elapsed, 0.001)
        let rate = Double(bytes) / seconds
        let prefix = interactive ? "\r\u{1B}[K" : ""
        let line = "\(prefix)\(label): \(HumanSize.format(bytes)) in \(String(format: "%.2f", seconds)) s "
            + "(\(HumanSize.format(Int64(rate)))/s, \(how))\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "--:--" }
        let s = Int(seconds)
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
