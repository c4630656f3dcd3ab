import ArgumentParser
import Foundation
import Logging
import Uploader
#if canImport(Glibc)
import Glibc
#endif

/// `netdiskfs get SRC DST|-`: download with ranged requests over several connections.
public struct GetCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Download a file from the cloud to a local file or standard output.",
        discussion: """
            The file is fetched in ranges over several connections; an expired download link is \
            fetched again transparently. DST '-' writes to standard output, in order. A local DST \
            that is a directory receives the file under its remote name; the file is written as \
            DST.part and renamed when complete.

            Examples:
              netdiskfs get videos/movie.mkv .
              netdiskfs get backups/photos.tar - | tar x
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Remote file path.", valueName: "src"))
    var source: String

    @Argument(help: ArgumentHelp("Local path, or '-' for standard output.", valueName: "dst"))
    var destination: String

    @Option(name: .long, help: "Concurrent ranged requests (default: 1 on a normal account, which Baidu throttles for more; 4 VIP; 8 SVIP).")
    var connections: Int?

    @Option(name: .long, help: ArgumentHelp("Bytes per ranged request, e.g. 4M (default: 16M with one connection, else 4M).", valueName: "size"))
    var chunkSize: ByteCount?

    @Flag(name: .long, help: "No progress bar, only the summary line.")
    var quiet = false

    public init() {}

    public func validate() throws {
        guard (1...32).contains(connections ?? 1) else { throw ValidationError("--connections must be between 1 and 32") }
    }

    public func run() async throws {
        try await CommandRunner.run("get") {
            let settings = try global.settings()
            let client = try global.makeClient()
            let logger = global.logger(label: "netdiskfs.get")
            let remote = CLIPath.resolve(source, root: settings.remoteRoot)
            guard let entry = try await RemoteLookup.stat(client, remote) else { throw NetdiskError.notFound(code: -9) }
            if entry.isDirectory { throw CommandError("\(remote) is a directory") }
            let reporter = TransferReporter(label: "get \(remote)", quiet: quiet)
            let counters = ProgressCounters(mode: .streaming, observer: { reporter.update($0) })
            var connections = self.connections ?? 1
            if self.connections == nil { connections = try await client.accountInfo().tier.defaultDownloadConnections }
            await client.downloadSlots.setLimit(connections)
            // One connection pays one round trip per request: fewer, larger requests keep it busy.
            let chunk = chunkSize?.bytes ?? (connections == 1 ? 16 << 20 : 4 << 20)
            let download = RangedDownload(api: client, connections: connections, chunkSize: chunk, logger: logger)
            if destination == "-" {
                try await runOnDedicatedThread(name: "nd.get") { () throws(NetdiskError) in
                    try download.run(entry, into: StreamSink(fd: STDOUT_FILENO), progress: counters)
                }
            } else {
                var target = destination
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory), isDirectory.boolValue {
                    target = (target as NSString).appendingPathComponent(entry.name)
                }
                let partial = target + ".part"
                let finalPath = target
                try await runOnDedicatedThread(name: "nd.get") { () throws(NetdiskError) in
                    do throws(NetdiskError) {
                        try download.run(entry, into: try FileSink(path: partial, size: entry.size), progress: counters)
                    } catch {
                        unlink(partial)
                        throw error
                    }
                    guard rename(partial, finalPath) == 0 else {
                        throw .localIO("rename \(partial) → \(finalPath): \(String(cString: strerror(errno)))")
                    }
                }
            }
            reporter.summary(counters.current, bytes: entry.size, how: "\(connections) connections")
        }
    }
}
