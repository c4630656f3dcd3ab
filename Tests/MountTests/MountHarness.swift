#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NetdiskEmulator
import Testing
import Uploader

/// Real-mount tests need /dev/fuse. Locally they are skipped without it; with CI=true they run
/// (and fail if the mount cannot be made), never skip.
enum FuseSupport {
    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }
    static var deviceUsable: Bool { access("/dev/fuse", R_OK | W_OK) == 0 }
    static var shouldRun: Bool { deviceUsable || isCI }
}

struct CommandResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum TestFailure: Error, CustomStringConvertible {
    case message(String)
    var description: String {
        switch self { case .message(let text): return text }
    }
}

/// Runs blocking work (syscalls on the mount, waiting for processes) on a plain thread, so the
/// cooperative pool stays free for the in-process emulator the mount is talking to.
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            do { continuation.resume(returning: try work()) } catch { continuation.resume(throwing: error) }
        }
    }
}

/// Runs `bash -c script` without blocking the cooperative pool.
@discardableResult
func shell(_ script: String, environment: [String: String]? = nil, check: Bool = true) async throws -> CommandResult {
    let result = try await onThread { () throws -> CommandResult in
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        if let environment { process.environment = environment }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Drain both pipes on their own threads so a chatty command cannot fill a pipe and stall.
        let errData = DataBox()
        let reader = Thread { errData.data = err.fileHandleForReading.readDataToEndOfFile(); errData.done.signal() }
        reader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        errData.done.wait()
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData.data, as: UTF8.self))
    }
    if check && result.status != 0 {
        throw TestFailure.message("`\(script)` exited \(result.status): \(result.stderr)\(result.stdout.suffix(2000))")
    }
    return result
}

final class DataBox: @unchecked Sendable {
    var data = Data()
    let done = DispatchSemaphore(value: 0)
}

/// The `netdiskfs` binary built next to this test bundle.
enum Binary {
    static var path: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("netdiskfs").path,
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("netdiskfs").path,
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent(".build/debug/netdiskfs").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }
}

func isMounted(_ mountpoint: String) -> Bool {
    guard let table = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
    return table.split(separator: "\n").contains { $0.split(separator: " ").count > 4 && $0.split(separator: " ")[4] == mountpoint }
}

/// An in-process emulator, a logged-in config directory and a foreground `netdiskfs mount` on a temp mountpoint.
final class MountFixture: @unchecked Sendable {
    let directory: URL
    let mountpoint: String
    let emulator: EmulatorServer
    let environment: [String: String]
    let client: BaiduClient
    let remoteRoot: String
    private(set) var process: Process?

    private init(directory: URL, emulator: EmulatorServer, client: BaiduClient, remoteRoot: String, environment: [String: String]) {
        self.directory = directory
        self.mountpoint = directory.appendingPathComponent("mnt").path
        self.emulator = emulator
        self.client = client
        self.remoteRoot = remoteRoot
        self.environment = environment
    }

    var path: String { directory.path }
    func local(_ name: String) -> String { directory.appendingPathComponent("local").appendingPathComponent(name).path }
    func mounted(_ name: String) -> String { mountpoint + "/" + name }

    static func make(emulatorOptions: EmulatorOptions = EmulatorOptions()) async throws -> MountFixture {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("netdiskfs-mount-\(UUID().uuidString.prefix(8))")
        for sub in ["mnt", "local", "config", "state", "cache", "data", "emulator"] {
            try FileManager.default.createDirectory(at: directory.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        var options = emulatorOptions
        options.dataDirectory = directory.appendingPathComponent("emulator").path
        let emulator = try await EmulatorServer.start(options)
        var environment = ProcessInfo.processInfo.environment
        environment["XDG_CONFIG_HOME"] = directory.appendingPathComponent("config").path
        environment["XDG_STATE_HOME"] = directory.appendingPathComponent("state").path
        environment["XDG_CACHE_HOME"] = directory.appendingPathComponent("cache").path
        environment["XDG_DATA_HOME"] = directory.appendingPathComponent("data").path
        environment["XDG_RUNTIME_DIR"] = directory.appendingPathComponent("state").path
        environment["NETDISKFS_ENDPOINT"] = nil
        environment["NETDISKFS_CONFIG_DIR"] = nil
        let settings = try ResolvedSettings.resolve(configDirectory: directory.appendingPathComponent("config/netdiskfs").path,
                                                    endpoint: emulator.baseURL, environment: environment)
        let client = try await ClientFactory.loginToEmulator(settings: settings)
        return MountFixture(directory: directory, emulator: emulator, client: client, remoteRoot: settings.remoteRoot,
                            environment: environment)
    }

    /// Starts `netdiskfs mount -f` and waits until the kernel shows the mount.
    func mount(_ extra: [String] = []) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Binary.path)
        process.arguments = ["mount", "-f", "--endpoint", emulator.baseURL, "--cache-dir", path + "/cache"] + extra + [mountpoint]
        process.environment = environment
        let log = FileHandle(forWritingAtPath: path + "/mount.stderr") ?? {
            FileManager.default.createFile(atPath: path + "/mount.stderr", contents: nil)
            return FileHandle(forWritingAtPath: path + "/mount.stderr")!
        }()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while !isMounted(mountpoint) {
            if !process.isRunning {
                throw TestFailure.message("netdiskfs mount exited \(process.terminationStatus): \(daemonLog())")
            }
            if Date() > deadline { throw TestFailure.message("mount did not appear within 30 s: \(daemonLog())") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func daemonLog() -> String {
        (try? String(contentsOfFile: path + "/mount.stderr", encoding: .utf8)) ?? ""
    }

    /// Unmounts and waits for the daemon to exit (it commits pending closes first).
    func unmount() async {
        if isMounted(mountpoint) { _ = try? await shell("fusermount3 -u \(mountpoint) || fusermount3 -u -z \(mountpoint)", check: false) }
        if let process {
            let deadline = Date().addingTimeInterval(60)
            while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(50)) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        if isMounted(mountpoint) { _ = try? await shell("fusermount3 -u -z \(mountpoint)", check: false) }
    }

    func tearDown() async {
        await unmount()
        await emulator.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `/__emulator/files`: every path in the cloud with its true content MD5.
    func cloudFiles() async throws -> [String: (size: Int64, md5: String?)] {
        let url = URL(string: emulator.baseURL + "/__emulator/files")!
        let data = try await onThread { try Data(contentsOf: url) }
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let files = object["files"] as? [[String: Any]] else { throw TestFailure.message("bad /__emulator/files answer") }
        var result: [String: (Int64, String?)] = [:]
        for file in files {
            guard let path = file["path"] as? String else { continue }
            result[path] = ((file["size"] as? NSNumber)?.int64Value ?? -1, file["md5"] as? String)
        }
        return result
    }

    func remote(_ name: String) -> String { remoteRoot == "/" ? "/" + name : remoteRoot + "/" + name }
}

/// Runs `body` against a fresh mounted fixture and always unmounts.
func withMount(_ extra: [String] = [], emulatorOptions: EmulatorOptions = EmulatorOptions(),
               _ body: (MountFixture) async throws -> Void) async throws {
    let fixture = try await MountFixture.make(emulatorOptions: emulatorOptions)
    do {
        try await fixture.mount(extra)
        try await body(fixture)
    } catch {
        await fixture.tearDown()
        throw error
    }
    await fixture.tearDown()
}
