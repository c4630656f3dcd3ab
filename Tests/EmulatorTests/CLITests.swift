import Foundation
import Testing

@Suite("netdiskfs emulator command")
struct CLITests {
    /// The `netdiskfs` binary `swift build --build-tests` produced next to this test bundle.
    static func binary() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let candidates = [Bundle.main.bundleURL.appendingPathComponent("netdiskfs").path,
                          root.appendingPathComponent(".build/debug/netdiskfs").path]
        return try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0) },
                            "netdiskfs binary not found in \(candidates)")
    }

    /// Starts `netdiskfs emulator` and reads its first stdout line; returns how long that took.
    static func start(dataDirectory dir: String) async throws -> (process: Process, line: String, elapsed: Double) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["emulator", "--listen", "127.0.0.1:0", "--data", dir, "--vip-type", "1"]
        let stdout = Pipe()
        process.standardOutput = stdout
        let start = Date()
        try process.run()
        let line = try await Task.detached { () -> String in
            var bytes = Data()
            while let byte = try stdout.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
                bytes.append(byte)
            }
            return String(decoding: bytes, as: UTF8.self)
        }.value
        return (process, line, Date().timeIntervalSince(start))
    }

    @Test func printsItsURLFirstAndServesTheDeviceFlowUntilSIGTERM() async throws {
        let dir = NSTemporaryDirectory() + "emulator-cli-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Idle, the first line comes after ~60 ms. The rest of the suite runs in parallel on two
        // cores and can stall a process start for seconds, so a slow start is tried again (three
        // starts at most): the claim is that it starts in under 2 s, not that the machine is idle.
        var started = try await Self.start(dataDirectory: dir)
        for _ in 0..<2 where started.elapsed >= 2 {
            started.process.terminate()
            started.process.waitUntilExit()
            started = try await Self.start(dataDirectory: dir)
        }
        let (process, line, elapsed) = started
        defer { if process.isRunning { process.terminate() } }
        #expect(elapsed < 2, "startup took \(elapsed) s")
        let prefix = "netdiskfs emulator listening on http://127.0.0.1:"
        #expect(line.hasPrefix(prefix), "first line: \(line)")
        let base = String(line.dropFirst("netdiskfs emulator listening on ".count))
        #expect(Int(base.split(separator: ":").last ?? "") ?? 0 > 0)

        let code = try await HTTP.send(base + "/oauth/2.0/device/code?response_type=device_code&client_id=c&scope=basic,netdisk")
            .json["device_code"] as! String
        let poll = base + "/oauth/2.0/token?grant_type=device_token&code=\(code)&client_id=c&client_secret=s"
        #expect(try await HTTP.send(poll).json["error"] as? String == "authorization_pending")
        let token = try #require(try await HTTP.send(poll).json["access_token"] as? String)
        let uinfo = try await HTTP.send(base + "/rest/2.0/xpan/nas?method=uinfo&access_token=\(token)")
        #expect(int(uinfo.json["vip_type"]) == 1)
        let quota = try await HTTP.send(base + "/api/quota?access_token=\(token)")
        #expect(quota.errno == 0 && quota.json["total"] != nil)

        process.terminate()
        let exited = await Task.detached { () -> Int32 in
            process.waitUntilExit()
            return process.terminationStatus
        }.value
        #expect(exited == 0)
        #expect(FileManager.default.fileExists(atPath: dir + "/metadata.sqlite"))
    }

    @Test func rejectsBadFlags() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = ["emulator", "--vip-type", "7"]
        process.standardError = Pipe()
        process.standardOutput = Pipe()
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
    }
}
