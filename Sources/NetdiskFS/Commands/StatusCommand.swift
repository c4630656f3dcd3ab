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

    public init() {}

    public func run() throws {
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
            if snapshot.uploads.isEmpty { print("  no uploads in progress"); continue }
            for upload in snapshot.uploads {
                let progress = upload.bytesWritten > 0
                    ? String(format: "%5.1f%%", 100 * Double(upload.bytesUploaded) / Double(upload.bytesWritten)) : "  -  "
                print("  \(upload.mode.padding(toLength: 9, withPad: " ", startingAt: 0)) \(progress)  "
                      + "\(Self.bytes(upload.bytesUploaded)) of \(Self.bytes(upload.bytesWritten)) written  "
                      + "\(Self.bytes(Int64(upload.rateBytesPerSecond)))/s  \(upload.path)")
            }
        }
    }

    static func bytes(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count), unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }
}
