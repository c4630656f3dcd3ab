import Foundation
import Testing
@testable import Uploader

/// `netdiskfs selftest` against `netdiskfs emulator` in both profiles: it passes on both (the mount
/// can work) and reports exactly the beliefs that differ between them.
@Suite struct SelftestTests {
    struct Row: Decodable, Equatable {
        var check: String
        var result: String
        var errno: Int?
    }

    struct Report: Decodable {
        var checks: [Row]
        var streaming: String
        var mount_can_work: Bool
    }

    static func selftest(_ profile: String, extra: [String] = []) async throws -> (Report, CLI.Result, String) {
        let emulator = try await EmulatorProcess.start(["--profile", profile] + extra)
        defer { emulator.stop() }
        let config = try TempDirectory.make()
        defer { try? FileManager.default.removeItem(atPath: config) }
        let cli = CLI(endpoint: emulator.url, configDirectory: config, verbose: false)
        let login = try await cli.run("login")
        #expect(login.status == 0, "\(login)")
        let json = try await cli.run("selftest", "--json")
        let report = try JSONDecoder().decode(Report.self, from: Data(json.stdout.utf8))
        let files = try await Subprocess.run("/usr/bin/curl", ["-sf", emulator.url + "/__emulator/files"]).stdout
        // The human form too: one row per check.
        let text = try await cli.run("selftest")
        #expect(text.status == json.status)
        #expect(text.stdout.split(separator: "\n").filter { $0.hasPrefix("PASS ") || $0.hasPrefix("FAIL ") || $0.hasPrefix("SKIP ") }.count
                == report.checks.count)
        return (report, json, files)
    }

    @Test func bothProfilesPassAndTheirDifferencesAreReported() async throws {
        let (standard, standardRun, standardFiles) = try await Self.selftest("default")
        let (strict, strictRun, strictFiles) = try await Self.selftest("documented")
        #expect(standardRun.status == 0 && standard.mount_can_work, "\(standardRun)")
        #expect(strictRun.status == 0 && strict.mount_can_work, "\(strictRun)")
        #expect(standard.streaming == "web-placeholder")
        #expect(strict.streaming == "xpan-provisional")
        // It cleans up after itself: the scratch directory is gone.
        #expect(!standardFiles.contains("selftest") && !strictFiles.contains("selftest"), "\(strictFiles)")

        let standardRows = Dictionary(uniqueKeysWithValues: standard.checks.map { ($0.check, $0) })
        let strictRows = Dictionary(uniqueKeysWithValues: strict.checks.map { ($0.check, $0) })
        #expect(Set(standardRows.keys) == Set(strictRows.keys))
        let differing = Set(standardRows.keys.filter { standardRows[$0]?.result != strictRows[$0]?.result })
        #expect(differing == [
            "streaming (a): xpan precreate with a provisional size",
            "streaming (b): web-API precreate without size",
            "empty file",
            "rapid upload (create)",
        ], "\(standard.checks) vs \(strict.checks)")
        #expect(strictRows["empty file"]?.errno == 2)
        #expect(strictRows["streaming (b): web-API precreate without size"]?.errno == -6)
        #expect(standardRows["streaming (a): xpan precreate with a provisional size"]?.errno == 2)
        for row in standard.checks + strict.checks where !differing.contains(row.check) {
            #expect(row.result == "PASS", "\(row)")
        }
    }

    /// When no streaming strategy works, the mount still can (cached path): exit 0, streaming none.
    @Test func noStreamingIsReportedButNotFatal() async throws {
        let (report, run, _) = try await Self.selftest("documented", extra: ["--create-must-repeat-precreate-size", "true"])
        #expect(run.status == 0 && report.mount_can_work)
        #expect(report.streaming == "none")
    }
}

extension SelftestTests {
    /// Uploads refused outright (31064, "not your app folder"): the mount cannot work, and says so.
    @Test func anAccountThatCannotUploadFailsTheSelftest() async throws {
        let (report, run, _) = try await Self.selftest("default", extra: ["--faults", "create:errno=31064"])
        #expect(run.status == 1)
        #expect(!report.mount_can_work)
        #expect(report.checks.first { $0.check == "mkdir" }?.errno == 31064)
    }
}
