#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation

/// Reads the status files running mounts publish.
enum StatusReader {
    static func read(mountpoint: String) -> UploadRegistry.Snapshot? {
        guard let data = try? Data(contentsOf: StatusFiles.file(for: mountpoint)) else { return nil }
        return try? JSONDecoder().decode(UploadRegistry.Snapshot.self, from: data)
    }

    /// Snapshots of every mount whose daemon is alive.
    static func all() -> [UploadRegistry.Snapshot] {
        let directory = StatusFiles.directory()
        let files = (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? []
        return files.filter { $0.pathExtension == "json" }
            .compactMap { try? JSONDecoder().decode(UploadRegistry.Snapshot.self, from: Data(contentsOf: $0)) }
            .filter { kill($0.pid, 0) == 0 }
            .sorted { $0.mountpoint < $1.mountpoint }
    }
}

/// `netdiskfs status`: every file uploading now, with progress, rate and mode, from the running mounts.
public struct StatusCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the files each running mount is uploading.")

    @Flag(help: "Print the raw JSON snapshots.")
    var json = false

    @Flag(help: "Redraw every second with a progress bar per file (bytes, rate, ETA, mode) until interrupted.")
    var watch = false

    public init() {}

    public func run() throws {
        guard watch else { return try show() }
        while true {
            // Home and clear, then the same report with bars.
            print("\u{1B}[H\u{1B}[2J", terminator: "")
            print("netdiskfs status  \(Date())  (Ctrl-C to stop)\n")
            try show()
            fflush(nil)
            Thread.sleep(forTimeInterval: 1)
        }
    }

    private func show() throws {
        let snapshots = StatusReader.all()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(snapshots), as: UTF8.self))
            return
        }
        if snapshots.isEmpty {
            print("no netdiskfs mounts running")
            return
        }
        for snapshot in snapshots {
            let age = Date().timeIntervalSince1970 - snapshot.updated
            print("\(snapshot.mountpoint) (pid \(snapshot.pid)\(age > 5 ? ", status \(Int(age)) s old" : ""))")
            if let memory = snapshot.memory {
                print("  memory budget: \(Self.bytes(Int64(memory.inUse))) of \(Self.bytes(Int64(memory.capacity))) in use"
                      + " (writes \(Self.bytes(Int64(memory.writes))), read-ahead \(Self.bytes(Int64(memory.reads)))),"
                      + " peak \(Self.bytes(Int64(memory.peak)))")
            }
            if let queued = snapshot.queued, !queued.isEmpty {
                let bytes = queued.reduce(Int64(0)) { $0 + $1.size }
                print("  write-back queue: \(queued.count) file(s), \(Self.bytes(bytes)) closed and waiting for upload")
                for file in queued where file.lastError != nil || file.uploading || watch {
                    let state = file.uploading ? "uploading" : (file.lastError != nil ? "failing (\(file.attempts) attempts)" : "queued")
                    print("    \(state.padding(toLength: 24, withPad: " ", startingAt: 0)) \(Self.bytes(file.size))  \(file.path)"
                          + (file.lastError.map { "\n      last error: \($0)" } ?? ""))
                }
            }
            if snapshot.uploads.isEmpty { print("  no uploads in progress"); continue }
            for upload in snapshot.uploads where watch {
                print("  " + Self.bar(upload))
            }
            for upload in snapshot.uploads where !watch {
                let progress = upload.bytesWritten > 0
                    ? String(format: "%5.1f%%", 100 * Double(upload.bytesUploaded) / Double(upload.bytesWritten)) : "  -  "
                print("  \(upload.mode.padding(toLength: 9, withPad: " ", startingAt: 0)) \(progress)  "
                      + "\(Self.bytes(upload.bytesUploaded)) of \(Self.bytes(upload.bytesWritten)) written  "
                      + "\(Self.bytes(Int64(upload.rateBytesPerSecond)))/s  \(upload.path)")
            }
        }
    }

    /// `[#########...........]  45.1%  120.0 MiB of 266.1 MiB  12.3 MiB/s  ETA 0:12  streaming  /path`
    static func bar(_ upload: UploadRegistry.Upload, width: Int = 24) -> String {
        let fraction = upload.bytesWritten > 0 ? min(1, Double(upload.bytesUploaded) / Double(upload.bytesWritten)) : 0
        let filled = Int(fraction * Double(width))
        let eta: String
        if upload.rateBytesPerSecond > 0 {
            let seconds = Int(Double(max(0, upload.bytesWritten - upload.bytesUploaded)) / upload.rateBytesPerSecond)
            eta = String(format: "ETA %d:%02d", seconds / 60, seconds % 60)
        } else {
            eta = "ETA  -  "
        }
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
            + String(format: "%5.1f%%", 100 * fraction) + "  \(bytes(upload.bytesUploaded)) of \(bytes(upload.bytesWritten))  "
            + "\(bytes(Int64(upload.rateBytesPerSecond)))/s  \(eta)  \(upload.mode)  \(upload.path)"
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }
}
