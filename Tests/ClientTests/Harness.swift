import Foundation
import Logging
import NetdiskEmulator
import Synchronization
import Testing
@testable import Uploader

/// A real emulator on a free loopback port, a private config directory, and a logged-in client.
struct Harness {
    let server: EmulatorServer
    let configDirectory: String
    let settings: ResolvedSettings
    let client: BaiduClient
    let logs: LogCapture

    static func start(configure: (inout EmulatorOptions) -> Void = { _ in },
                      retry: RetryPolicy = RetryPolicy(maxRetries: 4, baseDelay: 0.01, maxDelay: 0.05)) async throws -> Harness {
        var options = EmulatorOptions()
        configure(&options)
        let server = try await EmulatorServer.start(options)
        let directory = try TempDirectory.make()
        let settings = try ResolvedSettings.resolve(configDirectory: directory, endpoint: server.baseURL, environment: [:])
        let logs = LogCapture()
        let client = try await ClientFactory.loginToEmulator(settings: settings, retryPolicy: retry, logger: logs.logger())
        return Harness(server: server, configDirectory: directory, settings: settings, client: client, logs: logs)
    }

    func stop() async {
        await server.shutdown()
        try? FileManager.default.removeItem(atPath: configDirectory)
    }

    // MARK: admin API

    func admin(_ method: HTTPMethod, _ path: String, body: String = "") async throws -> [String: Any] {
        let response = try await HTTPTransport.shared.send(HTTPRequest(method: method, url: server.baseURL + path,
                                                                       body: method == .post ? .bytes(Array(body.utf8)) : .empty))
        #expect(response.status == 200, "admin \(path): \(response.bodyText)")
        return try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] ?? [:]
    }

    func setFaults(_ spec: String) async throws {
        let answer = try await admin(.post, "/__emulator/faults", body: spec)
        #expect(answer["ok"] as? Bool == true, "fault spec \(spec): \(answer)")
    }

    func stats() async throws -> [String: Any] { try await admin(.get, "/__emulator/stats") }

    func calls(_ endpoint: String) async throws -> Int {
        (try await stats()["calls"] as? [String: Any])?[endpoint] as? Int ?? 0
    }

    func refreshes() async throws -> Int { try await stats()["refreshes"] as? Int ?? -1 }

    func resetStats() async throws { _ = try await admin(.post, "/__emulator/stats/reset") }

    /// path → true content MD5 of every stored file.
    func storedFiles() async throws -> [String: (size: Int, md5: String?)] {
        var result: [String: (Int, String?)] = [:]
        for item in try await admin(.get, "/__emulator/files")["files"] as? [[String: Any]] ?? [] {
            if let path = item["path"] as? String { result[path] = (item["size"] as? Int ?? -1, item["md5"] as? String) }
        }
        return result
    }
}

enum TempDirectory {
    static func make() throws -> String {
        let path = NSTemporaryDirectory() + "netdiskfs-client-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

/// Collects every log line (at trace level) so tests can check what would reach a log file.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    func logger(label: String = "test") -> Logger {
        var logger = Logger(label: label) { _ in CapturingHandler(capture: self) }
        logger.logLevel = .trace
        return logger
    }

    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var text: String { lines.withLock { $0.joined(separator: "\n") } }
    var count: Int { lines.withLock { $0.count } }

    struct CapturingHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.append("\(event.level) \(event.message) \(event.metadata ?? [:])")
        }
    }
}

/// Deterministic test content.
func pattern(_ count: Int, seed: UInt8 = 7) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    var state = UInt32(seed) &* 2_654_435_761 | 1
    for index in 0..<count {
        state ^= state << 13; state ^= state >> 17; state ^= state << 5
        bytes[index] = UInt8(truncatingIfNeeded: state)
    }
    return bytes
}

func md5(_ bytes: ArraySlice<UInt8>) -> String { bytes.withUnsafeBytes { MD5Hasher.hex(of: $0) } }
func md5(_ bytes: [UInt8]) -> String { md5(bytes[...]) }

/// Uploads `content` through precreate/superfile2/create in `slice`-sized parts.
func uploadFile(_ client: BaiduClient, path: String, content: [UInt8], slice: Int = 4 << 20,
                streaming: Bool = false) async throws -> RemoteEntry {
    var blocks: [String] = []
    var start = 0
    repeat {
        let end = min(start + slice, content.count)
        blocks.append(md5(content[start..<end]))
        start = end
    } while start < content.count
    let uploadID: String
    if streaming {
        uploadID = try await client.precreateStreaming(path: path, policy: .overwrite)
    } else {
        let result = try await client.precreate(path: path, size: Int64(content.count), blockList: blocks, contentMD5: nil,
                                                sliceMD5: nil, localMtime: 1_700_000_000, policy: .overwrite)
        uploadID = try #require(result.uploadID)
    }
    let pinned = PinnedBytes(content)
    for (partseq, expected) in blocks.enumerated() {
        let range = (partseq * slice)..<min((partseq + 1) * slice, content.count)
        let answer = try await client.uploadPart(path: path, uploadID: uploadID, partseq: partseq,
                                                 bytes: pinned.part(range))
        #expect(answer == expected)
    }
    return try await client.create(path: path, size: Int64(content.count), uploadID: uploadID, blockList: blocks,
                                   localMtime: 1_700_000_000, policy: .overwrite)
}

/// Bytes at a stable address for the duration of uploads (what the engine's chunk buffers are).
final class PinnedBytes: @unchecked Sendable {
    let buffer: UnsafeMutableRawBufferPointer
    init(_ bytes: [UInt8]) {
        buffer = .allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
    }
    deinit { buffer.deallocate() }
    func part(_ range: Range<Int>) -> PartBytes {
        PartBytes(base: UnsafeRawPointer(buffer.baseAddress! + range.lowerBound), count: range.count)
    }
}
