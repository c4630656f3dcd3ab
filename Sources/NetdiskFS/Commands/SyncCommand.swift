#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation

/// `netdiskfs sync MOUNTPOINT`: wait until everything the mount has queued (`--writeback`) and
/// everything it is uploading is committed.
public struct SyncCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Wait until every file a mount has queued or is uploading is committed in the cloud.",
        discussion: """
            Exits 0 once the mount's write-back queue is empty and no upload is in progress. When files \
            keep failing (each has failed again since sync started), it lists them with the reason and \
            exits 1; they stay queued and are retried. Failed uploads are retried at once when sync starts.
            """)

    @Argument(help: "The mountpoint.")
    var mountpoint: String

    @Option(help: "Give up after this many seconds (exit 1, listing what is left). Default: no limit.")
    var timeout: Double?

    @Flag(help: "No progress lines.")
    var quiet = false

    public init() {}

    public func run() throws {
        let mountpoint = MountCommand.absolute(self.mountpoint)
        guard let first = StatusReader.read(mountpoint: mountpoint), kill(first.pid, 0) == 0 else {
            FileHandle.standardError.write(Data("netdiskfs: \(mountpoint) is not a running netdiskfs mount\n".utf8))
            throw ExitCode(1)
        }
        kill(first.pid, SIGUSR1)
        let started = Date()
        let attemptsAtStart = Dictionary((first.queued ?? []).map { (Self.key($0), $0.attempts) }, uniquingKeysWith: max)
        var lastLine = ""
        while true {
            guard let snapshot = StatusReader.read(mountpoint: mountpoint), kill(snapshot.pid, 0) == 0 else {
                FileHandle.standardError.write(Data("netdiskfs: the mount of \(mountpoint) went away while syncing\n".utf8))
                throw ExitCode(1)
            }
            // The status file is rewritten every second: only one written after sync started counts.
            let fresh = snapshot.updated > started.timeIntervalSince1970
            let queued = snapshot.queued ?? []
            if fresh && queued.isEmpty && snapshot.uploads.isEmpty {
                if !quiet { print("netdiskfs: \(mountpoint): everything is committed") }
                return
            }
            let failing = queued.filter { $0.lastError != nil && !$0.uploading && $0.attempts > (attemptsAtStart[Self.key($0)] ?? 0) }
            let timedOut = timeout.map { Date().timeIntervalSince(started) > $0 } ?? false
            if fresh && (!queued.isEmpty && failing.count == queued.count && snapshot.uploads.isEmpty || timedOut) {
                let reason = timedOut ? "still not committed after \(Int(timeout ?? 0)) s" : "failing"
                FileHandle.standardError.write(Data("netdiskfs: \(queued.count) file(s) \(reason) (they stay queued and are retried):\n".utf8))
                for file in queued {
                    FileHandle.standardError.write(Data("  \(file.path): \(file.lastError ?? "not uploaded yet")\n".utf8))
                }
                throw ExitCode(1)
            }
            let line = "waiting for \(queued.count) queued file(s) and \(snapshot.uploads.count) upload(s)"
            if fresh && !quiet && line != lastLine {
                print("netdiskfs: \(line)")
                lastLine = line
            }
            usleep(200_000)
        }
    }

    static func key(_ file: UploadRegistry.Queued) -> String { "\(file.path)\u{0}\(file.queuedAt)" }
}
