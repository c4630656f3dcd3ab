import ArgumentParser
import Foundation
import Logging
import Uploader
#if canImport(Glibc)
import Glibc
#endif

/// `netdiskfs put SRC DST`: stream stdin, or upload a local file with rapid upload and resume.
public struct PutCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Upload a local file, or stream standard input, to the cloud.",
        discussion: """
            SRC '-' reads standard input and streams it: parts are hashed and uploaded while the \
            data arrives, with no local spool file and memory bounded by --max-memory. \
            The file appears at DST only once it is complete.

            A local file takes the cached path: it is hashed first (content MD5, slice MD5, block list), \
            then rapid upload (秒传) is tried, so content the cloud already holds is not sent again. \
            Otherwise only the parts the server asks for are uploaded. An interrupted put of the same \
            file to the same DST resumes: it sends only the parts still missing (the journal lives in \
            $XDG_CACHE_HOME/netdiskfs/journal.sqlite).

            DST is a remote path; relative paths are under the configured remote root. A DST that is an \
            existing directory, or ends in '/', receives the file under SRC's name. An existing file \
            at DST is replaced.

            Examples:
              netdiskfs put movie.mkv videos/
              tar c photos | netdiskfs put - backups/photos.tar
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("Local file, or '-' for standard input.", valueName: "src"))
    var source: String

    @Argument(help: ArgumentHelp("Remote destination path (a directory if it ends in '/').", valueName: "dst"))
    var destination: String

    @Option(name: .long, help: "Parts uploaded concurrently.")
    var threads: Int = 4

    @Option(name: .long, help: ArgumentHelp(
        "Part size, e.g. 4M (default: the smallest whose 2048 parts hold the file, or for stdin the tier's largest file: 4 MiB normal, 8 MiB VIP, 12 MiB SVIP, in steps of 4 MiB; at most the tier's slice size, 4/16/32 MiB). Baidu refuses multi-part files whose parts are under 4 MiB.",
        valueName: "size"))
    var chunkSize: ByteCount?

    @Option(name: .long, help: ArgumentHelp(
        "Memory for parts in flight, e.g. 32M (default). Upload concurrency shrinks to fit: at least one part is always in memory.",
        valueName: "size"))
    var maxMemory: ByteCount?

    @Flag(name: .long, help: "No progress bar, only the summary line.")
    var quiet = false

    public init() {}

    public func validate() throws {
        guard (1...32).contains(threads) else { throw ValidationError("--threads must be between 1 and 32") }
    }

    public func run() async throws {
        AllocatorTuning.configure()
        try await CommandRunner.run("put") {
            let settings = try global.settings()
            let client = try global.makeClient()
            let logger = global.logger(label: "netdiskfs.put")
            let account = try await client.accountInfo()
            let tier = account.tier
            if let chunk = chunkSize?.bytes, chunk > tier.maxSliceSize {
                throw CommandError("--chunk-size \(chunk) exceeds the \(tier.displayName) account's slice size \(tier.maxSliceSize)")
            }
            let fileSize = source == "-" ? nil : (try? FileManager.default.attributesOfItem(atPath: source)[.size] as? Int64) ?? nil
            var options = EngineOptions.forTier(tier, sliceSize: chunkSize?.bytes ?? EngineOptions.smallestSlice(for: tier, holding: fileSize),
                                                threads: threads)
            options.conflictPolicy = .overwrite
            var remote = CLIPath.resolve(destination, root: settings.remoteRoot)
            let sourceName = source == "-" ? "" : (source as NSString).lastPathComponent
            if destination.hasSuffix("/") {
                guard !sourceName.isEmpty else { throw CommandError("'put -' needs a file name in DST, not a directory") }
                remote = CLIPath.join(remote, sourceName)
            } else if let existing = try await RemoteLookup.stat(client, remote), existing.isDirectory {
                guard !sourceName.isEmpty else { throw CommandError("'put -' needs a file name in DST, not a directory") }
                remote = CLIPath.join(remote, sourceName)
            }
            // What a killed mount or put left behind: staging files and cache files nobody owns.
            CacheSweeper.sweep(cacheDirectory: options.cacheDirectory, logger: logger)
            await StagingSweeper.sweep(api: client, directory: options.stagingDirectory(for: remote), logger: logger)
            options.streaming = StreamingStrategies(
                probe: StreamingStrategyProbe(api: client, scratchDirectory: options.stagingDirectory(for: remote)),
                store: StreamingStrategyStore.forAccount(uk: account.uk, endpoint: client.endpoints.api), logger: logger)
            let reporter = TransferReporter(label: "put \(source == "-" ? "stdin" : sourceName) → \(remote)", quiet: quiet)
            if source == "-" {
                try await streamStandardInput(to: remote, client: client, options: options, reporter: reporter, logger: logger)
            } else {
                try await uploadFile(to: remote, client: client, options: options, reporter: reporter, logger: logger)
            }
        }
    }

    /// The default: two SVIP parts of 12 MiB (one filling, one uploading), eight at 4 MiB.
    static let defaultMaxMemory = 32 << 20

    /// `put`'s own budget: never less than one part, so the upload always makes progress.
    private func budget(_ options: EngineOptions) -> MemoryBudget {
        MemoryBudget(bytes: max(maxMemory?.bytes ?? Self.defaultMaxMemory, options.sliceSize))
    }

    private func streamStandardInput(to remote: String, client: BaiduClient, options: EngineOptions,
                                     reporter: TransferReporter, logger: Logger) async throws {
        let session = FileWriteSession(api: client, remotePath: remote, mode: .streaming, options: options,
                                       budget: budget(options),
                                       logger: logger, progressObserver: { reporter.update($0) })
        // stdin is read on a dedicated thread: read(2) blocks, and the session applies backpressure.
        let entry = try await runOnDedicatedThread(name: "nd.stdin") { () throws(NetdiskError) -> RemoteEntry in
            let chunk = 1 << 20
            // A 1 MiB pipe (Linux F_SETPIPE_SZ; fails harmlessly on files and terminals) cuts the
            // reader's wake-ups sixteenfold compared with the default 64 KiB.
            _ = fcntl(STDIN_FILENO, 1031 /* F_SETPIPE_SZ */, Int32(chunk))
            do throws(NetdiskError) {
                // Bytes are read straight into the session's section buffers: no intermediate copy.
                while try session.append(limit: chunk, { (space) throws(NetdiskError) -> Int in
                    while true {
                        let n = read(STDIN_FILENO, space.baseAddress!, space.count)
                        if n >= 0 { return n }
                        if errno != EINTR { throw .localIO("reading standard input: \(String(cString: strerror(errno)))") }
                    }
                }) > 0 {}
            } catch {
                session.abort()
                throw error
            }
            return try session.finish()
        }
        let progress = session.progress
        reporter.summary(progress, bytes: entry.size, how: session.isCached ? "cached" : "streamed")
    }

    private func uploadFile(to remote: String, client: BaiduClient, options: EngineOptions, reporter: TransferReporter,
                            logger: Logger) async throws {
        let journal = try UploadJournal(path: options.cacheDirectory + "/journal.sqlite")
        let counters = ProgressCounters(mode: .cached, observer: { reporter.update($0) })
        let upload = CachedUpload(api: client, options: options,
                                  budget: budget(options),
                                  journal: journal, progress: counters, logger: logger)
        let path = source
        let entry = try await runOnDedicatedThread(name: "nd.put") { () throws(NetdiskError) -> RemoteEntry in
            let file = try LocalFileSource(path: path)
            return try upload.upload(file, to: remote, identity: file.identity, localMtime: file.mtime)
        }
        let progress = counters.current
        reporter.summary(progress, bytes: entry.size, how: progress.mode == .rapid ? "rapid upload, no data sent" : "uploaded")
    }
}
