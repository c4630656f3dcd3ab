import Foundation
import Testing
@testable import Uploader

/// The built `netdiskfs` binary next to the test bundle's package (`swift build --build-tests` builds it).
private func netdiskfsBinary() -> String {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/netdiskfs").path
}

@Suite("put resumes after kill -9")
struct ResumeAfterKillTests {
    @Test func rerunSendsOnlyTheMissingParts() async throws {
        // Slow parts so the first run is still uploading when it is killed.
        let harness = try await EmulatorHarness.start(faults: "superfile2:delay=150ms")
        let content = GeneratedContent(size: 200 << 20, seed: 2024)
        let file = try content.writeFile()
        defer { unlink(file) }
        let cacheHome = NSTemporaryDirectory() + "engine-kill-cache-" + UUID().uuidString
        func put(log: String? = nil) throws -> Process {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: netdiskfsBinary())
            process.arguments = ["put", "--endpoint", harness.server.baseURL, "--config-dir", harness.configDirectory,
                                 "--quiet", file, "/apps/netdiskfs/resumed.bin"]
            var environment = ProcessInfo.processInfo.environment
            environment["XDG_CACHE_HOME"] = cacheHome
            process.environment = environment
            if let log {
                _ = FileManager.default.createFile(atPath: log, contents: nil)
                process.standardError = FileHandle(forWritingAtPath: log)
            }
            try process.run()
            return process
        }
        let first = try put()
        var waited = 0
        while try await harness.partsReceived() < 12 && waited < 600 {
            try await Task.sleep(for: .milliseconds(50))
            waited += 1
        }
        kill(first.processIdentifier, SIGKILL)
        while first.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        #expect(first.terminationReason == .uncaughtSignal)
        // Parts whose bodies reached the server before the kill are still being stored (the fault
        // delays them 150 ms): let the server settle before reading what it holds.
        try await Task.sleep(for: .seconds(1))

        let afterKill = try await harness.stats()["parts_by_upload"] as? [String: [Int]] ?? [:]
        #expect(afterKill.count == 1)
        let storedBeforeKill = Set(afterKill.values.first ?? [])
        #expect(storedBeforeKill.count >= 12 && storedBeforeKill.count < 50, "killed mid-upload")
        try await harness.setFaults("")

        let second = try put(log: cacheHome + "-rerun.log")
        while second.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        #expect(second.terminationStatus == 0)
        let rerunLog = (try? String(contentsOfFile: cacheHome + "-rerun.log", encoding: .utf8)) ?? ""
        #expect(rerunLog.contains("rapid") == false)

        let afterRerun = try await harness.stats()["parts_by_upload"] as? [String: [Int]] ?? [:]
        #expect(afterRerun.count == 1, "the rerun continued the same uploadid")
        let all = afterRerun.values.first ?? []
        let rerunParts = all.count - (afterKill.values.first?.count ?? 0)
        #expect(rerunParts == 50 - storedBeforeKill.count, "only the missing parts were sent again")
        #expect(try await harness.files()["/apps/netdiskfs/resumed.bin"]?.md5 == content.md5)
        await harness.stop()
    }
}
