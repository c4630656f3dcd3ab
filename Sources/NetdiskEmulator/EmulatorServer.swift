import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A running Baidu-compatible server: one main listener (OAuth, API, downloads, admin, and the default
/// upload host) plus `uploadHostCount` extra upload listeners on their own ports, handed out by locateupload.
public final class EmulatorServer: Sendable {
    private let emulator: Emulator
    private let listeners: [Listener]
    private let temporaryDirectory: String?

    /// Serves API, OAuth, locateupload, superfile2, downloads and `/__emulator/`.
    public var baseURL: String { emulator.baseURL }
    /// Where content, parts and metadata live (a temp dir when the options named none).
    public let dataDirectory: String
    /// The upload hosts locateupload returns.
    public var uploadURLs: [String] { emulator.uploadURLs }

    /// One running Hummingbird application and the service group that runs it.
    private struct Listener: Sendable {
        let group: ServiceGroup
        let task: Task<Void, Never>

        func stop() async {
            await group.triggerGracefulShutdown()
            await task.value
        }
    }

    private init(emulator: Emulator, listeners: [Listener], dataDirectory: String, temporaryDirectory: String?) {
        self.emulator = emulator
        self.listeners = listeners
        self.dataDirectory = dataDirectory
        self.temporaryDirectory = temporaryDirectory
    }

    public static func start(_ options: EmulatorOptions) async throws -> EmulatorServer {
        var logger = Logger(label: "netdiskfs.emulator")
        logger.logLevel = ProcessInfo.processInfo.environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        let temporary = options.dataDirectory == nil
            ? NSTemporaryDirectory() + "/netdiskfs-emulator-" + Random.hex(8) : nil
        let emulator = try Emulator(options: options, dataDirectory: options.dataDirectory ?? temporary!, logger: logger)
        var listeners: [Listener] = []
        var urls: [String] = []
        do {
            try await emulator.blobs.removeOrphanParts(keeping: try await emulator.store.uploadIDs())
            for listener in 0...max(1, options.uploadHostCount) {
                let port = listener == 0 ? options.port : 0
                let (url, running) = try await startListener(emulator, host: options.host, port: port, listener: listener,
                                                             logger: logger)
                urls.append(url)
                listeners.append(running)
            }
        } catch {
            for listener in listeners { await listener.stop() }
            await emulator.blobs.shutdown()
            if let temporary { try? FileManager.default.removeItem(atPath: temporary) }
            throw error
        }
        emulator.setURLs(main: urls[0], uploads: Array(urls.dropFirst()))
        return EmulatorServer(emulator: emulator, listeners: listeners, dataDirectory: options.dataDirectory ?? temporary!,
                              temporaryDirectory: temporary)
    }

    /// Stops accepting, lets calls in flight finish (idle keep-alive connections are closed), then
    /// closes the database and removes a temporary data directory.
    public func shutdown() async {
        for listener in listeners { await listener.stop() }
        await emulator.blobs.shutdown()
        try? emulator.store.db.close()
        if let temporaryDirectory { try? FileManager.default.removeItem(atPath: temporaryDirectory) }
    }

    /// Starts one Hummingbird application and waits until it is bound (or failed to bind).
    private static func startListener(_ emulator: Emulator, host: String, port: Int, listener: Int,
                                      logger: Logger) async throws -> (String, Listener) {
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
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task {
            do {
                try await group.run()
                bound.fail(CancellationError())
            } catch {
                bound.fail(error)
            }
        }
        let running = Listener(group: group, task: task)
        let actualPort: Int
        do {
            actualPort = try await bound.wait()
        } catch {
            await running.stop()
            throw error
        }
        let printableHost = host.contains(":") ? "[\(host)]" : host
        return ("http://\(printableHost):\(actualPort)", running)
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
