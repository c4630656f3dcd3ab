import Foundation
import Logging
import NetdiskEmulator
import Uploader

/// The cloud client and the upload engine a mount runs on.
///
/// With `--emulator` it first starts an embedded emulator (data under
/// `$XDG_DATA_HOME/netdiskfs/emulator`) and logs in to it without a human, keeping those
/// credentials beside the emulator's data so the user's real login is never touched.
struct MountBackend: Sendable {
    struct Options: Sendable {
        var emulator = false
        /// An emulator already running elsewhere: log in to it automatically (tests, benchmarks).
        var emulatorURL: String?
        var endpoint: String?
        var configDirectory: String?
        var root: String?
        var cacheDirectory: String?
        var maxMemory: Int?
        /// nil: the tier's default (1 for a normal account).
        var downloadConnections: Int?
        /// `--writeback`: queue files up to `writebackThreshold` bytes (nil: one slice) at close().
        var writeback = false
        var writebackThreshold: Int?
        var writebackUploads = 8
        var writebackMaxDisk = 1 << 30
        var readOnly = false
    }

    /// The default memory budget for write slices, read-ahead and transfer buffers together.
    /// More files share it and wait for buffers; they never fail.
    static let defaultMaxMemory = 64 << 20

    let api: any NetdiskAPI
    let writers: any WriteSessionFactory
    /// The one budget writers and readers share.
    let memory: MemoryBudget
    let remoteRoot: String
    let emulatorURL: String?
    /// The account (its `uk`): the metadata overlay is kept per account.
    let account: AccountInfo
    /// Download connections the account holds at once (account-wide, in the client).
    let downloadConnections: Int
    /// `--writeback`'s queue, resumed from the last run.
    let writeback: WritebackQueue?
    let shutdown: @Sendable () async -> Void

    static func make(options: Options, logger: Logger) async throws -> MountBackend {
        var server: EmulatorServer?
        let settings: ResolvedSettings
        let client: BaiduClient
        if options.emulator {
            let home = emulatorHome()
            var emulatorOptions = EmulatorOptions()
            emulatorOptions.dataDirectory = home.appendingPathComponent("store").path
            let started = try await EmulatorServer.start(emulatorOptions)
            server = started
            logger.info("embedded emulator at \(started.baseURL), data in \(home.path)")
            settings = try ResolvedSettings.resolve(configDirectory: home.appendingPathComponent("config").path,
                                                    endpoint: started.baseURL)
            client = try await ClientFactory.loginToEmulator(settings: settings, logger: logger)
        } else if let url = options.emulatorURL {
            let home = emulatorHome()
            settings = try ResolvedSettings.resolve(configDirectory: home.appendingPathComponent("config").path, endpoint: url)
            client = try await ClientFactory.loginToEmulator(settings: settings, logger: logger)
        } else {
            settings = try ResolvedSettings.resolve(configDirectory: options.configDirectory, endpoint: options.endpoint)
            client = try ClientFactory.makeClient(settings: settings, logger: logger)
        }
        do {
            let account = try await client.accountInfo()
            logger.info("account \(account.name.isEmpty ? "(unnamed)" : account.name), \(account.tier.displayName)")
            let connections = options.downloadConnections ?? account.tier.defaultDownloadConnections
            await client.downloadSlots.setLimit(connections)
            let root = RemotePath(root: options.root ?? settings.remoteRoot).root
            warnOutsideAppFolder(root, logger: logger, isEmulator: options.emulator || options.emulatorURL != nil)
            try await ensureDirectory(root, client: client)
            var engine = EngineOptions.forTier(account.tier, sliceSize: EngineOptions.smallestSlice(for: account.tier),
                                               cacheDirectory: options.cacheDirectory ?? EngineOptions.defaultCacheDirectory())
            engine.conflictPolicy = .overwrite
            let staging = engine.stagingDirectory(for: RemotePath.join(root, "file"))
            let strategies = StreamingStrategies(
                probe: StreamingStrategyProbe(api: client, scratchDirectory: staging),
                store: StreamingStrategyStore.forAccount(uk: account.uk, endpoint: client.endpoints.api), logger: logger)
            engine.streaming = strategies
            if !options.readOnly && strategies.known == nil {
                // Learned in the background now, so the first large file does not wait for the probe.
                NamedThread.start("nd.probe") { _ = strategies.current() }
            }
            // What a killed mount or put left behind: cache files and staging files nobody owns.
            CacheSweeper.sweep(cacheDirectory: engine.cacheDirectory, logger: logger)
            await StagingSweeper.sweep(api: client, directory: staging, logger: logger)
            // At least one slice, or no file could ever make progress.
            let memory = MemoryBudget(bytes: max(options.maxMemory ?? defaultMaxMemory, engine.sliceSize))
            engine.threads = EngineOptions.uploadThreads(budget: memory.capacity, slice: engine.sliceSize)
            let writers = EngineWriteSessionFactory(api: client, options: engine, budget: memory, logger: logger)
            var writeback: WritebackQueue?
            let directory = XDGDirectories.netdiskfs(.state) + "/writeback-\(account.uk)"
            // Without --writeback, a queue an earlier mount left is still uploaded (and takes no new files).
            let leftover = !options.writeback && FileManager.default.fileExists(atPath: directory + "/queue.sqlite")
            if options.writeback || leftover {
                // At most one slice: a larger file would already be streaming when it closes.
                let threshold = options.writeback
                    ? min(Int64(options.writebackThreshold ?? engine.sliceSize), Int64(engine.sliceSize)) : 0
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                let lock = open(directory + "/queue.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
                if lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 {
                    // The lock stays held (the descriptor stays open) for the daemon's life.
                    let queue = try WritebackQueue(
                        api: client, engine: engine, budget: writers.budget,
                        options: WritebackQueue.Options(threshold: threshold, uploaders: options.writebackUploads,
                                                        diskCap: Int64(options.writebackMaxDisk), directory: directory),
                        logger: logger)
                    if options.writeback {
                        writeback = queue
                        logger.info("write-back on: files up to \(threshold) bytes return from close() once on local disk, \(options.writebackUploads) upload(s) at a time")
                    } else if !queue.snapshot.isEmpty {
                        writeback = queue
                        logger.info("write-back off, but \(queue.snapshot.count) file(s) an earlier mount queued are uploaded now")
                    } else {
                        close(lock)
                    }
                } else if options.writeback {
                    throw CommandError("another netdiskfs mount of this account holds its write-back queue (\(directory)); unmount it first")
                } else {
                    if lock >= 0 { close(lock) }
                    logger.info("another mount holds this account's write-back queue; it uploads what is queued")
                }
            }
            let emulator = server
            return MountBackend(api: client, writers: writers, memory: memory, remoteRoot: root, emulatorURL: server?.baseURL ?? options.emulatorURL,
                                account: account, downloadConnections: connections, writeback: writeback) {
                await emulator?.shutdown()
            }
        } catch {
            await server?.shutdown()
            throw error
        }
    }

    /// Baidu lets most app keys upload only under the user's own `/apps/<app name>` (31064 elsewhere);
    /// listing, reading, moving and deleting are not limited. Say so before the first upload fails.
    static func warnOutsideAppFolder(_ root: String, logger: Logger, isEmulator: Bool) {
        guard !isEmulator, let warning = appFolderWarning(for: root) else { return }
        logger.warning("\(warning)")
    }

    static func appFolderWarning(for root: String) -> String? {
        let components = root.split(separator: "/")
        guard components.count < 2 || components[0] != "apps" else { return nil }
        return "remote root \(root) is outside /apps/<app name>: Baidu usually refuses uploads there (errno 31064); reading works. Use --root /apps/<your app name>/... to write"
    }

    /// The mount's root must exist (Baidu apps start with an empty /apps/<name>).
    private static func ensureDirectory(_ path: String, client: BaiduClient) async throws {
        guard path != "/" else { return }
        do {
            _ = try await client.list(directory: path, start: 0, limit: 1)
        } catch NetdiskError.notFound {
            _ = try await client.makeDirectory(path: path)
        }
    }

    /// `$XDG_DATA_HOME/netdiskfs/emulator`: the embedded emulator's store and its login.
    private static func emulatorHome() -> URL {
        URL(fileURLWithPath: XDGDirectories.netdiskfs(.data) + "/emulator", isDirectory: true)
    }
}
