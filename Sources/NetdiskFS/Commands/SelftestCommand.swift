import ArgumentParser
import Foundation
import Uploader

/// `netdiskfs selftest`: which of our beliefs about Baidu hold on this account.
public struct SelftestCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Check, on your account, each protocol belief the mount rests on.",
        discussion: """
            In a scratch directory under the remote root (deleted at the end), it checks: tier, quota and \
            paging; mkdir; a multi-part upload with a real block list; rapid upload; an empty file; each \
            streaming strategy; a dlink read with Range and User-Agent, and a second Range request; move with \
            ondup; delete. One row per check (PASS, FAIL or SKIP, with Baidu's errno). It records the streaming \
            strategy it learned for the mount and `put`, and exits 1 if the mount cannot work on this account. \
            Please paste its output (or --json) into bug reports.
            """)

    @OptionGroup public var global: GlobalOptions

    @Flag(help: "Machine-readable output: {\"checks\": [...], \"streaming\": ..., \"mount_can_work\": ...}.")
    var json = false

    public init() {}

    public func run() async throws {
        var canWork = true
        try await CommandRunner.run("selftest") {
            let settings = try global.settings()
            let client = try global.makeClient()
            let json = self.json
            if !json { print("netdiskfs selftest of \(settings.remoteRoot) at \(client.endpoints.api)") }
            let report = await AccountSelftest(api: client, remoteRoot: settings.remoteRoot).run { check in
                guard !json else { return }
                let code = check.errno.map { " (errno \($0))" } ?? ""
                print("\(check.result.rawValue)  \(check.check)\(code): \(check.detail)")
            }
            if let account = try? await client.accountInfo() {
                let store = StreamingStrategyStore.forAccount(uk: account.uk, endpoint: client.endpoints.api)
                let refusals = Dictionary(uniqueKeysWithValues: StreamingStrategy.probeOrder.compactMap { strategy -> (String, String)? in
                    report.checks.first { $0.check == strategy.checkName && $0.result == .fail }.map { (strategy.rawValue, $0.detail) }
                })
                try? store.save(LearnedStreaming(strategy: report.streaming, refusals: refusals))
            }
            canWork = report.mountCanWork
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                let failed = report.checks.filter { $0.result == .fail }.count
                print("streaming: \(report.streaming.label) (recorded for the mount)")
                print(report.mountCanWork
                      ? "the mount can work on this account (\(failed) belief(s) did not hold; the mount takes the path that works)"
                      : "the mount cannot work on this account: see the critical FAIL rows above")
            }
        }
        if !canWork { throw ExitCode(1) }
    }
}
