import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// A running Baidu-compatible server: one main listener (OAuth, API, downloads, admin, and the default
/// upload host) plus `uploadHostCount` extra upload listeners on their own ports, handed out by locateupload.
public final class EmulatorServer: Sendable {
    private let emulator: Emulator
    private let tasks: [Task<Void, Never>]
    private let temporaryDirectory: String?

    /// Serves API, OAuth, locateupload, superfile2, downloads and `/__emulator/`.
    public var baseURL: String { emulator.baseURL }
    /// Where content, parts and metadata live (a temp dir when the options named none).
    public let dataDirectory: String
    /// The upload hosts locateupload returns.
    public var uploadURLs: [String] { emulator.uploadURLs }

    private init(emulator: Emulator, tasks: [Task<Void, Never>], dataDirectory: String, temporaryDirectory: String?) {
        self.emulator = emulator
        self.dataDirectory = dataDirectory
        self.tasks = tasks
        self.temporaryDirectory = temporaryDirectory
    }

    public static func start(_ options: EmulatorOptions) async throws -> EmulatorServer {
        var logger = Logger(label: "netdiskfs.emulator")
        logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        let temporary = options.dataDirectory == nil
            ? NSTemporaryDirectory() + "/netdiskfs-emulator-" + Random.hex(8) : nil
        let emulator = try Emulator(options: options, dataDirectory: options.dataDirectory ?? temporary!, logger: logger)
        var tasks: [Task<Void, Never>] = []
        var urls: [String] = []
        do {
            try await emulator.blobs.removeOrphanParts(keeping: try await emulator.store.uploadIDs())
            for listener in 0...max(1, options.uploadHostCount) {
                let port = listener == 0 ? options.port : 0
                let (url, task) = try await startListener(emulator, host: options.host, port: port, listener: listener,
                                                          logger: logger)
                urls.append(url)
                tasks.append(task)
            }
        } catch {
            for task in tasks { task.cancel() }
            for task in tasks { await task.value }
            await emulator.blobs.shutdown()
            if let temporary { try? FileManager.default.removeItem(atPath: temporary) }
            throw error
        }
        emulator.setURLs(main: urls[0], uploads: Array(urls.dropFirst()))
        return EmulatorServer(emulator: emulator, tasks: tasks, dataDirectory: options.dataDirectory ?? temporary!,
                              temporaryDirectory: temporary)
    }

    public func shutdown() async {
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
        await emulator.blobs.shutdown()
        try? emulator.store.db.close()
        if let temporaryDirectory { try? FileManager.default.removeItem(atPath: temporaryDirectory) }
    }

    /// Starts one Hummingbird application and waits until it is bound (or failed to bind).
    private static func startListener(_ emulator: Emulator, host: String, port: Int, listener: Int,
                                      logger: Logger) async throws -> (String, Task<Void, Never>) {
        let bound = BindSignal()
        let responder = CallbackResponder<BasicRequestContext> { request, _ in
            await emulator.respond(request, listener: listener)
        }
        let app = Application(
            responder: responder,
            server: .http1(configuration: .init(additionalChannelHandlers: [ContinueHandler()])),
            configuration: .init(address: .hostname(host, port: port), serverName: nil),
            onServerRunning: { channel in bound.succeed(channel.localAddress?.port ?? port) },
            logger: logger)
        let task = Task {
            do {
                try await app.runService(gracefulShutdownSignals: [])
                bound.fail(CancellationError())
            } catch {
                bound.fail(error)
            }
        }
        let actualPort = try await bound.wait()
        let printableHost = host.contains(":") ? "[\(host)]" : host
        return ("http://\(printableHost):\(actualPort)", task)
    }
}

/// Resumes the starter once with the bound port, or with the error that kept the listener from binding.
private final class BindSignal: Sendable {
    private let state = Mutex<(result: Result<Int, any Error>?, waiter: CheckedContinuation<Int, any Error>?)>((nil, nil))

    func succeed(_ port: Int) { finish(.success(port)) }
    func fail(_ error: any Error) { finish(.failure(error)) }

    private func finish(_ result: Result<Int, any Error>) {
        let waiter: CheckedContinuation<Int, any Error>? = state.withLock { state in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    func wait() async throws -> Int {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<Int, any Error>? = state.withLock { state in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
