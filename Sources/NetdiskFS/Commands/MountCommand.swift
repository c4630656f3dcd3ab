#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Dispatch
import Foundation
import Logging
import Uploader

/// `netdiskfs mount MOUNTPOINT`: serve a Baidu Netdisk (or the embedded emulator) over FUSE.
///
/// Daemonizing re-executes this binary with `-f` (forking a Swift process after its runtime has
/// started threads is unsafe) and waits on a pipe until the child reports the mount live, or the
/// one-line reason it could not mount. So a start error prints one clear line and leaves nothing mounted.
public struct MountCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount the netdisk at MOUNTPOINT (daemonizes unless -f).",
        discussion: """
            Files copied in sequentially (cp, rsync, tar x, cmd > file) stream to the cloud while they \
            are written, with no local spool file; other writes use a sparse local cache under \
            --cache-dir. close() returns once the file is committed in the cloud, and an upload \
            failure is EIO there, with the reason in the log.

            Examples:
              netdiskfs mount ~/baidu               your account (after `netdiskfs login`)
              netdiskfs mount --emulator ~/baidu    a local emulator, no account needed
              netdiskfs status                      files uploading now
              netdiskfs unmount ~/baidu             waits for pending uploads

            Logs go to $XDG_STATE_HOME/netdiskfs/ (default ~/.local/state/netdiskfs/), one file per \
            mountpoint: mount_root_baidu.log for /root/baidu.
            """)

    @Argument(help: "An empty directory to mount on.")
    var mountpoint: String

    @Flag(name: .customShort("f"), help: "Stay in the foreground (logs also go to stderr).")
    var foreground = false

    @Flag(help: "Serve a local Baidu emulator (data under $XDG_DATA_HOME/netdiskfs/emulator): no account needed.")
    var emulator = false

    @Option(help: "Use an emulator already running at this URL, logging in to it automatically (tests, benchmarks).")
    var emulatorURL: String?

    @Option(help: "The remote directory to show at the mountpoint (default: the config's remote root, /apps/netdiskfs).")
    var root: String?

    @Flag(help: "Refuse every change.")
    var readOnly = false

    @Flag(help: ArgumentHelp("Let other local users use the mount (needs user_allow_other in /etc/fuse.conf unless root).",
                             discussion: "Everything the mount shows is one Baidu account: with this flag, other users can read it, and write where the reported modes allow (files 0644 and directories 0755, owned by the user who mounted). The kernel checks those modes (default_permissions is implied)."))
    var allowOther = false

    @Option(help: "Most FUSE worker threads (started on demand; 16 stay when idle). Writers waiting on upload backpressure each hold one, so there must be more than writers, or `ls` and `stat` would queue behind them.")
    var threads = 256

    @Option(help: "The daemon's one memory budget for write slices, read-ahead and transfer buffers, e.g. 64M or 1G (default: 64M). Past it writers and readers wait; they never fail. `netdiskfs status` shows its use.")
    var maxMemory: String?

    @Option(help: "Download connections the account holds at once, across all readers (default: 1 on a normal account, which Baidu throttles for more; 4 VIP; 8 SVIP).")
    var downloadConnections: Int?

    @Flag(help: ArgumentHelp("close() of a small file returns once it is fsynced and journaled on local disk; uploads run in the background.",
                             discussion: "Like JuiceFS's write-back: a killed daemon resumes its queue at the next mount, a failed upload is retried with backoff and never dropped, reads see the local copy until the upload commits. `netdiskfs sync MOUNTPOINT` waits for the queue; `netdiskfs unmount` waits for it too. Larger files still stream."))
    var writeback = false

    @Option(help: ArgumentHelp("Largest file --writeback queues, e.g. 1M (default and most: one slice).", valueName: "size"))
    var writebackThreshold: String?

    @Option(help: "Write-back uploads in parallel (each costs three round trips, so latency wants several).")
    var writebackUploads = 8

    @Option(help: ArgumentHelp("Local disk the write-back queue may use, e.g. 1G (default); close() waits past it.", valueName: "size"))
    var writebackMaxDisk: String?

    @Option(help: "Directory for the cached (out-of-order write) path's sparse files.")
    var cacheDir: String?

    @Option(help: "Seconds a directory listing is trusted before it is fetched again (while the cloud takes over 0.5 s to answer, the expired listing answers).")
    var dirCacheTTL: Double = 30

    @Option(name: .customShort("o"), parsing: .singleValue, help: "A FUSE mount option (repeatable), e.g. -o noatime.")
    var fuseOptions: [String] = []

    @OptionGroup var global: GlobalOptions

    public init() {}

    public func validate() throws {
        if let downloadConnections, !(1...32).contains(downloadConnections) {
            throw ValidationError("--download-connections must be between 1 and 32")
        }
        guard (1...64).contains(writebackUploads) else { throw ValidationError("--writeback-uploads must be between 1 and 64") }
        for (flag, value) in [("--writeback-threshold", writebackThreshold), ("--writeback-max-disk", writebackMaxDisk)] {
            if let value, (Self.parseSize(value) ?? 0) <= 0 { throw ValidationError("\(flag) must be a size like 1M or 1G") }
        }
    }

    static let readyFDVariable = "NETDISKFS_READY_FD"

    public func run() async throws {
        let mountpoint = Self.absolute(self.mountpoint)
        let readyFD = ProcessInfo.processInfo.environment[Self.readyFDVariable].flatMap(Int32.init)
        if let readyFD { _ = fcntl(readyFD, F_SETFD, FD_CLOEXEC) }
        let reporter = StartReporter(readyFD: readyFD)
        if let problem = Self.checkMountpoint(mountpoint) { reporter.fail(problem) }
        if !foreground && readyFD == nil {
            throw ExitCode(Daemon.start(mountpoint: mountpoint))
        }

        signal(SIGPIPE, SIG_IGN)
        AllocatorTuning.configure()
        let logFD: Int32
        do { logFD = try MountLogging.openLogFile(for: mountpoint) } catch { reporter.fail("cannot open the log file: \(error)") }
        let descriptors = readyFD == nil ? [logFD, STDERR_FILENO] : [STDERR_FILENO]
        let level: Logger.Level = global.verbose ? .debug : .info
        LoggingSystem.bootstrap { label in MountLogHandler(descriptors: descriptors, label: label, logLevel: level) }
        let logger = Logger(label: "netdiskfs")
        logger.info("mounting \(mountpoint) (pid \(getpid()))")

        let backend: MountBackend
        do {
            backend = try await MountBackend.make(options: backendOptions(), logger: logger)
        } catch {
            reporter.fail("\(error)")
        }

        var fsOptions = NetdiskFileSystem.Options()
        fsOptions.root = backend.remoteRoot
        fsOptions.readOnly = readOnly
        fsOptions.dirCacheTTL = .milliseconds(Int64(dirCacheTTL * 1000))
        fsOptions.downloadConnections = backend.downloadConnections
        // mtime, mode, owner: what Baidu cannot store, per account, under $XDG_STATE_HOME/netdiskfs.
        let overlayPath = StateDirectory.url().appendingPathComponent("overlay-\(backend.account.uk).sqlite").path
        let overlay: MetadataOverlay
        do {
            overlay = try MetadataOverlay(path: overlayPath, logger: logger)
        } catch {
            reporter.fail("cannot open the metadata overlay \(overlayPath): \(error)")
        }
        overlay.startFlushing()
        let fileSystem = NetdiskFileSystem(api: backend.api, writers: backend.writers, memory: backend.memory,
                                           options: fsOptions, overlay: overlay,
                                           writeback: backend.writeback, logger: logger)

        var mountOptions = ["fsname=netdiskfs", "subtype=netdiskfs"]
        if readOnly { mountOptions.append("ro") }
        // Without default_permissions the kernel would let every local user read, overwrite and
        // delete the account: the modes getattr reports would not be checked at all.
        if allowOther { mountOptions += ["allow_other", "default_permissions"] }
        mountOptions += fuseOptions
        let finalMountOptions = mountOptions
        let threads = self.threads
        let publisher = StatusPublisher(registry: fileSystem.uploads, mountpoint: mountpoint, emulatorURL: backend.emulatorURL)

        let rc: Int32? = await withCheckedContinuation { continuation in
            // libfuse's loop blocks: it gets its own thread, never a cooperative-pool one.
            NamedThread.start("nd.fuse") {
                let mount: FuseMount
                do {
                    mount = try FuseMount(fileSystem: fileSystem, mountpoint: mountpoint, mountOptions: finalMountOptions)
                } catch {
                    continuation.resume(returning: nil)
                    return
                }
                let signals = SignalWatcher(mountpoint: mountpoint, writeback: backend.writeback, logger: logger)
                MountTable.raiseReadAhead(of: mountpoint, kilobytes: 1024, logger: logger)
                publisher.start()
                logger.info("mounted \(mountpoint)")
                reporter.ready()
                SystemdNotifier.notify("READY=1\nSTATUS=mounted \(mountpoint)")
                let rc = mount.run(threads: threads)
                if let queue = backend.writeback {
                    // Unmounted: what was closed still goes to the cloud before the daemon exits.
                    let left = queue.drain()
                    queue.stop()
                    for entry in left {
                        logger.error("write-back: \(entry.remotePath) is still queued (\(entry.lastError ?? "not uploaded")); the next mount uploads it")
                    }
                }
                publisher.stop()
                withExtendedLifetime(signals) {}
                continuation.resume(returning: rc)
            }
        }
        await backend.shutdown()
        guard let rc else {
            reporter.fail("cannot mount on \(mountpoint) (see the libfuse message above)")
        }
        logger.info("unmounted \(mountpoint)")
        if rc != 0 && rc != -1 { throw ExitCode(1) }
    }

    func backendOptions() -> MountBackend.Options {
        var options = MountBackend.Options()
        options.emulator = emulator
        options.emulatorURL = emulatorURL
        options.endpoint = global.endpoint
        options.configDirectory = global.configDir
        options.root = root
        options.cacheDirectory = cacheDir
        options.maxMemory = maxMemory.flatMap(Self.parseSize)
        options.downloadConnections = downloadConnections
        options.readOnly = readOnly
        options.writeback = writeback
        options.writebackThreshold = writebackThreshold.flatMap(Self.parseSize)
        options.writebackUploads = writebackUploads
        options.writebackMaxDisk = writebackMaxDisk.flatMap(Self.parseSize) ?? (1 << 30)
        return options
    }

    static func absolute(_ path: String) -> String {
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(path)
        var standardized = url.standardized.path
        while standardized.count > 1 && standardized.hasSuffix("/") { standardized.removeLast() }
        return standardized
    }

    /// "64M", "1G", "1048576" → bytes.
    static func parseSize(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        var digits = text.uppercased()
        if digits.hasSuffix("IB") || digits.hasSuffix("B") { digits = String(digits.dropLast(digits.hasSuffix("IB") ? 2 : 1)) }
        if let last = digits.last, let unit = units[last] { return Int(digits.dropLast()).map { $0 * unit } }
        return Int(digits)
    }

    /// Why the mountpoint cannot be used, in one line; nil when it can.
    static func checkMountpoint(_ mountpoint: String) -> String? {
        var st = stat()
        if stat(mountpoint, &st) != 0 {
            if errno == ENOTCONN {
                return "\(mountpoint) is a dead FUSE mount; clean it up with: fusermount3 -u \(mountpoint)"
            }
            // `netdiskfs mount --emulator ~/baidu` should work on a fresh account: make the last component.
            if errno == ENOENT && mkdir(mountpoint, 0o755) == 0 { return checkMountpoint(mountpoint) }
            return "mountpoint \(mountpoint) does not exist"
        }
        if st.st_mode & S_IFMT != S_IFDIR { return "mountpoint \(mountpoint) is not a directory" }
        if MountTable.isMounted(mountpoint) {
            return "\(mountpoint) is already mounted (netdiskfs unmount \(mountpoint))"
        }
        if access("/dev/fuse", R_OK | W_OK) != 0 {
            return "/dev/fuse is not available (install fuse3 and load the fuse module)"
        }
        return nil
    }
}

/// Tells the waiting parent (daemon mode) that the mount is live, or why it is not.
struct StartReporter: Sendable {
    let readyFD: Int32?

    func ready() {
        guard let readyFD else { return }
        send("READY\n", to: readyFD)
        close(readyFD)
    }

    func fail(_ message: String) -> Never {
        let line = "netdiskfs: \(message)\n"
        send(line, to: STDERR_FILENO)
        if let readyFD { send(line, to: readyFD) }
        exit(1)
    }

    private func send(_ text: String, to fd: Int32) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) }
    }
}

/// SIGINT, SIGTERM and SIGHUP unmount (lazily: open files finish, their closes commit).
final class SignalWatcher: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]

    init(mountpoint: String, writeback: WritebackQueue?, logger: Logger) {
        let queue = DispatchQueue(label: "netdiskfs.signals")
        // SIGUSR1 (from `netdiskfs sync`): retry failed write-back uploads now, not after their backoff.
        signal(SIGUSR1, SIG_IGN)
        let retry = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: queue)
        retry.setEventHandler { writeback?.retryNow() }
        retry.resume()
        sources = [retry] + [SIGINT, SIGTERM, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                logger.info("signal \(number): unmounting \(mountpoint)")
                SystemdNotifier.notify("STOPPING=1\nSTATUS=unmounting \(mountpoint): open files finish and commit first")
                // umount2/fusermount3 block briefly: run them on a plain thread, not a dispatch worker.
                Thread.detachNewThread { _ = FuseMount.unmount(mountpoint, lazy: true) }
            }
            source.resume()
            return source
        }
    }

    deinit {
        sources.forEach { $0.cancel() }
    }
}

/// Reads /proc/self/mountinfo.
enum MountTable {
    static func isMounted(_ mountpoint: String) -> Bool {
        device(of: mountpoint) != nil
    }

    /// "major:minor" of the filesystem mounted at `mountpoint` (read without touching the mount).
    static func device(of mountpoint: String) -> String? {
        guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            if unescape(String(fields[4])) == mountpoint { return String(fields[2]) }
        }
        return nil
    }

    /// The kernel offers FUSE only its default 128 KiB read-ahead, so `cat` sends 128 KiB reads.
    /// Where we may (root), raise the mount's read-ahead to 1 MiB, FUSE's largest request:
    /// fewer round trips for sequential reads (measured ~25% faster `cat`). Best effort.
    static func raiseReadAhead(of mountpoint: String, kilobytes: Int, logger: Logger) {
        guard let device = device(of: mountpoint) else { return }
        let path = "/sys/class/bdi/\(device)/read_ahead_kb"
        do {
            try "\(kilobytes)\n".write(toFile: path, atomically: false, encoding: .utf8)
            logger.debug("read-ahead of \(mountpoint) set to \(kilobytes) KiB")
        } catch {
            logger.debug("kept the kernel's read-ahead for \(mountpoint): \(path) is not writable")
        }
    }

    /// mountinfo writes space, tab, newline and backslash as \ooo.
    static func unescape(_ field: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
