import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import NetdiskEmulator
import Testing
@testable import Uploader

/// A real emulator on loopback (port 0) plus a real BaiduClient logged in to it, per test.
struct EmulatorHarness {
    let server: EmulatorServer
    let client: BaiduClient
    let configDirectory: String
    let tier: AccountTier
    /// Set when the emulator runs another profile than `default`: the engine then learns how to stream.
    let streaming: StreamingStrategies?

    static func start(faults: String = "", uploadIDLifetime: Double? = nil, vipType: Int = 0,
                      profile: EmulatorProfile = .default, retryPolicy: RetryPolicy = RetryPolicy()) async throws -> EmulatorHarness {
        var options = EmulatorOptions()
        options.profile = profile
        options.faults = faults
        options.vipType = vipType
        if let uploadIDLifetime { options.uploadIDLifetime = uploadIDLifetime }
        let server = try await EmulatorServer.start(options)
        let configDirectory = NSTemporaryDirectory() + "engine-e2e-" + UUID().uuidString
        let settings = try ResolvedSettings.resolve(configDirectory: configDirectory, endpoint: server.baseURL,
                                                    environment: [:])
        var quiet = Logger(label: "engine-e2e.client")
        quiet.logLevel = .error
        let client = try await ClientFactory.loginToEmulator(settings: settings, retryPolicy: retryPolicy, logger: quiet)
        let streaming = profile == .default ? nil : StreamingStrategies(
            probe: StreamingStrategyProbe(api: client, scratchDirectory: "/apps/netdiskfs/.netdiskfs-staging"), store: nil, logger: quiet)
        return EmulatorHarness(server: server, client: client, configDirectory: configDirectory,
                               tier: AccountTier(rawValue: vipType) ?? .normal, streaming: streaming)
    }

    func stop() async { await server.shutdown() }

    func options(threads: Int = 4) -> EngineOptions {
        var o = EngineOptions.forTier(tier, threads: threads,
                                      cacheDirectory: NSTemporaryDirectory() + "engine-e2e-cache-" + UUID().uuidString)
        o.retryBaseDelay = 0.01
        o.streaming = streaming
        return o
    }

    /// `/__emulator/files`: path → (size, true content MD5).
    func files() async throws -> [String: (size: Int64, md5: String?)] {
        let object = try await getJSON("/__emulator/files")
        var out: [String: (Int64, String?)] = [:]
        for item in (object["files"] as? [[String: Any]]) ?? [] where (item["isdir"] as? Int ?? 0) == 0 {
            out[item["path"] as! String] = ((item["size"] as? NSNumber)?.int64Value ?? 0, item["md5"] as? String)
        }
        return out
    }

    /// `/__emulator/stats`.
    func stats() async throws -> [String: Any] { try await getJSON("/__emulator/stats") }

    /// `/__emulator/stats` calls by endpoint.
    func calls() async throws -> [String: Int] {
        try await stats()["calls"] as? [String: Int] ?? [:]
    }

    /// superfile2 parts received so far (resends included).
    func partsReceived() async throws -> Int {
        let stats = try await stats()
        return ((stats["parts_by_upload"] as? [String: [Int]]) ?? [:]).values.reduce(0) { $0 + $1.count }
    }

    func setFaults(_ spec: String) async throws {
        var request = URLRequest(url: URL(string: server.baseURL + "/__emulator/faults")!)
        request.httpMethod = "POST"
        request.httpBody = Data(spec.utf8)
        let (_, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
    }

    private func getJSON(_ path: String) async throws -> [String: Any] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: server.baseURL + path)!)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }
}

/// Pseudo-random content produced in chunks, with its MD5, so > 1 GiB tests need no big arrays.
struct GeneratedContent {
    let size: Int
    let seed: UInt64

    /// Calls `body` with consecutive chunks of at most `chunk` bytes.
    func forEachChunk(_ chunk: Int = 1 << 20, _ body: (ArraySlice<UInt8>, Int) throws -> Void) rethrows {
        var generator = SplitMix(seed: seed)
        var buffer = [UInt8](repeating: 0, count: chunk)
        var offset = 0
        while offset < size {
            let n = min(chunk, size - offset)
            buffer.withUnsafeMutableBytes { raw in
                var i = 0
                while i + 8 <= n { raw.storeBytes(of: generator.next(), toByteOffset: i, as: UInt64.self); i += 8 }
                while i < n { raw[i] = UInt8(truncatingIfNeeded: generator.next()); i += 1 }
            }
            try body(buffer[0..<n], offset)
            offset += n
        }
    }

    var md5: String {
        var hasher = MD5Hasher()
        forEachChunk { slice, _ in slice.withUnsafeBytes { hasher.update($0) } }
        return hasher.finalizeHex()
    }

    func writeFile() throws -> String {
        let path = NSTemporaryDirectory() + "engine-e2e-src-" + UUID().uuidString
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try forEachChunk(8 << 20) { slice, _ in try handle.write(contentsOf: Data(slice)) }
        try handle.close()
        return path
    }
}
