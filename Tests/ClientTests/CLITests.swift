import Foundation
import NetdiskEmulator
import Synchronization
import Testing
@testable import NetdiskFS
@testable import Uploader

/// The built `netdiskfs` binary, run as a new user would, against `netdiskfs emulator` and in-process emulators.
@Suite struct CLITests {
    @Test func newUserFlowAgainstTheEmulatorCommand() async throws {
        let emulator = try await EmulatorProcess.start()
        defer { emulator.stop() }
        let config = try TempDirectory.make()
        defer { try? FileManager.default.removeItem(atPath: config) }
        let cli = CLI(endpoint: emulator.url, configDirectory: config)

        let login = try await cli.run("login")
        #expect(login.status == 0, "\(login)")
        #expect(login.stdout.contains("enter the code:"))
        #expect(login.stdout.contains("Logged in as emulator"))
        #expect(!login.stdout.contains("█"), "no QR code when stdout is not a terminal")
        #expect(try fileMode(config + "/credentials.json") == 0o600)
        let firstPair = try #require(try CredentialStore(path: config + "/credentials.json").load())

        let whoami = try await cli.run("whoami")
        #expect(whoami.status == 0)
        #expect(whoami.stdout.contains("Account: emulator"))
        #expect(whoami.stdout.contains("Tier:    normal"))
        #expect(whoami.stdout.contains("Quota:   0 B used of 2.0 TiB"))

        #expect(try await cli.run("mkdir", "docs").status == 0)
        #expect(try await cli.run("mkdir", "-p", "docs/a/b", "/apps/netdiskfs/docs/c").status == 0)
        #expect(try await cli.run("mkdir", "-p", "docs/a").status == 0, "-p accepts an existing directory")
        let again = try await cli.run("mkdir", "docs")
        #expect(again.status == 1 && again.stderrLines == ["netdiskfs: mkdir /apps/netdiskfs/docs: already exists (errno -8)"])
        let orphan = try await cli.run("mkdir", "x/y")
        #expect(orphan.status == 1 && orphan.stderrLines.count == 1 && orphan.stderr.contains("use -p"))

        // A file to list, put there through the client library.
        let settings = try ResolvedSettings.resolve(configDirectory: config, endpoint: emulator.url, environment: [:])
        let client = try ClientFactory.makeClient(settings: settings)
        _ = try await uploadFile(client, path: "/apps/netdiskfs/docs/report.bin", content: pattern(1234))

        let long = try await cli.run("ls", "-l", "docs")
        #expect(long.status == 0)
        let lines = long.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("d ") && lines[0].hasSuffix(" a/"))
        #expect(lines[2].hasPrefix("- ") && lines[2].contains(" 1234 ") && lines[2].hasSuffix(" report.bin"))
        let human = try await cli.run("ls", "-l", "-H", "/apps/netdiskfs/docs/report.bin")
        #expect(human.stdout.contains("1.2 KiB") && human.stdout.hasSuffix("report.bin\n"))
        let recursive = try await cli.run("ls", "-R", "docs")
        #expect(recursive.stdout == "/apps/netdiskfs/docs:\na/\nc/\nreport.bin\n\n/apps/netdiskfs/docs/a:\nb/\n\n/apps/netdiskfs/docs/a/b:\n\n/apps/netdiskfs/docs/c:\n")

        #expect(try await cli.run("mv", "docs/report.bin", "docs/a").status == 0, "into a directory")
        #expect(try await cli.run("mv", "docs/a/report.bin", "docs/final.bin").status == 0, "move and rename")
        #expect(try await cli.run("mv", "docs/c", "docs/a/").status == 0)
        #expect(try await cli.run("ls", "docs").stdout == "a/\nfinal.bin\n")
        #expect(try await cli.run("ls", "docs/a").stdout == "b/\nc/\n")
        #expect(try await cli.run("rm", "docs/final.bin", "docs/a/c").status == 0)
        let missing = try await cli.run("rm", "docs/final.bin")
        #expect(missing.status == 1)
        #expect(missing.stderrLines == ["netdiskfs: rm /apps/netdiskfs/docs/final.bin: no such file or directory (errno -9)"])
        #expect(try await cli.run("rm", "-f", "docs/final.bin").status == 0)
        #expect(try await cli.run("ls", "-R", "docs").stdout == "/apps/netdiskfs/docs:\na/\n\n/apps/netdiskfs/docs/a:\nb/\n\n/apps/netdiskfs/docs/a/b:\n")
        let notThere = try await cli.run("ls", "nowhere")
        #expect(notThere.status == 1 && notThere.stderrLines == ["netdiskfs: ls /apps/netdiskfs/nowhere: no such file or directory (errno -9)"])

        // Every command above ran with -v: the debug log names the calls but holds no secret.
        let lastPair = try #require(try CredentialStore(path: config + "/credentials.json").load())
        #expect(cli.allStderr.contains("HTTP GET"))
        #expect(cli.allStderr.contains("access_token=REDACTED"))
        for secret in [firstPair.accessToken, firstPair.refreshToken, lastPair.accessToken, lastPair.refreshToken,
                       NetdiskConfig.emulatorClientSecret] {
            #expect(!cli.allStderr.contains(secret), "the debug log leaks a secret")
        }
    }

    @Test func loginReportsAnExpiredCodeAndImportsARefreshToken() async throws {
        let server = try await EmulatorServer.start({ var o = EmulatorOptions(); o.faults = "token:expired_token:n=1"; return o }())
        defer { Task { await server.shutdown() } }
        let config = try TempDirectory.make()
        defer { try? FileManager.default.removeItem(atPath: config) }
        let cli = CLI(endpoint: server.baseURL, configDirectory: config, verbose: false)
        let expired = try await cli.run("login")
        #expect(expired.status == 1)
        #expect(expired.stderrLines == ["netdiskfs: login: the code expired before it was approved; run `netdiskfs login` again"])
        #expect(!FileManager.default.fileExists(atPath: config + "/credentials.json"))

        let whoami = try await cli.run("whoami")
        #expect(whoami.status == 1 && whoami.stderrLines == ["netdiskfs: whoami: not logged in: no credentials; run `netdiskfs login`"])

        // --refresh-token: a token obtained elsewhere is exchanged (and so spent) for a saved pair.
        let issued = try await HTTPTransport.shared.send(HTTPRequest(method: .post, url: server.baseURL + "/__emulator/token"))
        let json = try JSONSerialization.jsonObject(with: Data(issued.body)) as? [String: Any]
        let refresh = try #require(json?["refresh_token"] as? String)
        let imported = try await cli.run("login", "--refresh-token", refresh)
        #expect(imported.status == 0 && imported.stdout.contains("Logged in as emulator"))
        let saved = try #require(try CredentialStore(path: config + "/credentials.json").load())
        #expect(saved.refreshToken != refresh)
        #expect(try await cli.run("whoami").status == 0)
        let reused = try await cli.run("login", "--refresh-token", refresh)
        #expect(reused.status == 1 && reused.stderr.contains("refresh token was refused"))
    }

    @Test func plainHTTPToARemoteHostIsRefused() async throws {
        let cli = CLI(endpoint: "http://192.0.2.1:8080", configDirectory: "/nonexistent-netdiskfs", verbose: false)
        let result = try await cli.run("whoami")
        #expect(result.status == 1)
        #expect(result.stderrLines.count == 1 && result.stderr.contains("http is allowed only to loopback"))
    }

    @Test(arguments: ["login", "whoami", "ls", "rm", "mv", "mkdir"])
    func everyCommandExplainsItself(_ command: String) async throws {
        let result = try await CLI(endpoint: nil, configDirectory: "/nonexistent-netdiskfs", verbose: false).run(command, "--help")
        #expect(result.status == 0)
        #expect(result.stdout.contains("OVERVIEW:") && result.stdout.contains("--endpoint"))
        #expect(result.stdout.split(separator: "\n").count > 8)
    }

    @Test func aRootOutsideTheAppFolderIsWarnedAbout() {
        #expect(MountBackend.appFolderWarning(for: "/apps/netdiskfs") == nil)
        #expect(MountBackend.appFolderWarning(for: "/apps/netdiskfs/backups") == nil)
        #expect(MountBackend.appFolderWarning(for: "/")?.contains("31064") == true)
        #expect(MountBackend.appFolderWarning(for: "/photos")?.contains("outside /apps/<app name>") == true)
        #expect(MountBackend.appFolderWarning(for: "/apps") != nil)
    }

    @Test func leadingGlobalOptionsBecomeEnvironment() {
        let (rest, environment) = LeadingGlobalOptions.extract(["--endpoint", "http://127.0.0.1:5", "-v", "--config-dir=/c",
                                                                "ls", "-l", "--endpoint", "x"])
        #expect(rest == ["ls", "-l", "--endpoint", "x"])
        #expect(environment == ["NETDISKFS_ENDPOINT": "http://127.0.0.1:5", "NETDISKFS_VERBOSE": "1", "NETDISKFS_CONFIG_DIR": "/c"])
    }

    @Test func pathsAndSizes() {
        #expect(CLIPath.resolve("a/./b/../c", root: "/apps/x") == "/apps/x/a/c")
        #expect(CLIPath.resolve("/abs//p/", root: "/apps/x") == "/abs/p")
        #expect(CLIPath.resolve(".", root: "/apps/x") == "/apps/x")
        #expect(CLIPath.resolve("../..", root: "/apps/x") == "/")
        #expect(CLIPath.parent("/a") == "/" && CLIPath.parent("/a/b") == "/a" && CLIPath.name("/a/b") == "b")
        #expect(HumanSize.format(0) == "0 B" && HumanSize.format(1023) == "1023 B")
        #expect(HumanSize.format(1536) == "1.5 KiB" && HumanSize.format(2 << 40) == "2.0 TiB")
        #expect(QRCodeRenderer.render("http://127.0.0.1/device?code=AB12")?.split(separator: "\n").count ?? 0 > 10)
    }
}

/// Runs the built binary with a clean environment.
final class CLI: @unchecked Sendable {
    let endpoint: String?
    let configDirectory: String
    let verbose: Bool
    private(set) var allStderr = ""

    init(endpoint: String?, configDirectory: String, verbose: Bool = true) {
        self.endpoint = endpoint
        self.configDirectory = configDirectory
        self.verbose = verbose
    }

    struct Result: CustomStringConvertible {
        var status: Int32
        var stdout: String
        var stderr: String
        /// stderr without debug log lines.
        var stderrLines: [String] {
            stderr.split(separator: "\n").map(String.init).filter { !$0.contains(" debug ") && !$0.contains(" info ") }
        }
        var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
    }

    /// Global options go first, as the README shows: `netdiskfs --endpoint URL -v login`.
    func run(_ arguments: String...) async throws -> Result {
        var full: [String] = []
        if let endpoint { full += ["--endpoint", endpoint] }
        full += ["--config-dir", configDirectory]
        if verbose { full.append("-v") }
        let result = try await Subprocess.run(Binary.netdiskfs, full + arguments)
        allStderr += result.stderr
        return result
    }
}

enum Binary {
    /// `netdiskfs` sits next to the test bundle in the build directory.
    static var netdiskfs: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var directory = (executable as NSString).deletingLastPathComponent
        while !directory.isEmpty, directory != "/" {
            let candidate = directory + "/netdiskfs"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = (directory as NSString).deletingLastPathComponent
        }
        return "netdiskfs-binary-not-found-next-to-\(executable)"
    }
}

/// Children started with posix_spawn, output to temp files: swift-corelibs-foundation's Process.run
/// crashed (a bad memcpy while it closed inherited descriptors) when this test process had many open.
enum Subprocess {
    static func environment() -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("NETDISKFS_") }
        environment["XDG_CONFIG_HOME"] = "/nonexistent-netdiskfs-xdg"
        // What commands learn about an account (the streaming strategy) stays out of the user's home.
        environment["XDG_STATE_HOME"] = NSTemporaryDirectory() + "netdiskfs-cli-tests-state"
        return environment
    }

    /// Starts `executable` with stdin from /dev/null and stdout/stderr to the given files.
    static func spawn(_ executable: String, _ arguments: [String], stdout: String, stderr: String) throws(NetdiskError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment().map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard rc == 0 else { throw .localIO("cannot run \(executable): \(String(cString: strerror(rc)))") }
        return pid
    }

    static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    static func run(_ executable: String, _ arguments: [String]) async throws -> CLI.Result {
        try await BlockingIO.run { () -> Swift.Result<CLI.Result, NetdiskError> in
            let base = NSTemporaryDirectory() + "netdiskfs-cli-\(UUID().uuidString)"
            defer { unlink(base + ".out"); unlink(base + ".err") }
            let pid: pid_t
            do throws(NetdiskError) {
                pid = try spawn(executable, arguments, stdout: base + ".out", stderr: base + ".err")
            } catch {
                return .failure(error)
            }
            let status = wait(pid)
            let out = (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? ""
            let err = (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? ""
            return .success(CLI.Result(status: status, stdout: out, stderr: err))
        }
    }
}

/// `netdiskfs emulator --listen 127.0.0.1:0` as a child process, for the new-user flow.
final class EmulatorProcess: @unchecked Sendable {
    let pid: pid_t
    let url: String
    private let output: String

    private init(pid: pid_t, url: String, output: String) {
        self.pid = pid
        self.url = url
        self.output = output
    }

    /// Starts the child and waits for its first line on a dedicated thread.
    static func start(_ extra: [String] = []) async throws -> EmulatorProcess {
        try await BlockingIO.run { () -> Swift.Result<EmulatorProcess, NetdiskError> in
            do { return .success(try startBlocking(extra)) } catch { return .failure(.localIO("\(error)")) }
        }
    }

    private static func startBlocking(_ extra: [String]) throws -> EmulatorProcess {
        let output = NSTemporaryDirectory() + "netdiskfs-emulator-\(UUID().uuidString).out"
        let pid = try Subprocess.spawn(Binary.netdiskfs, ["emulator", "--listen", "127.0.0.1:0"] + extra,
                                       stdout: output, stderr: "/dev/null")
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            if let range = text.range(of: "http://[0-9.:]+", options: .regularExpression), text.contains("\n") {
                return EmulatorProcess(pid: pid, url: String(text[range]), output: output)
            }
            usleep(20_000)
        }
        kill(pid, SIGTERM)
        _ = Subprocess.wait(pid)
        unlink(output)
        throw CommandError("emulator did not print its URL within 30 s")
    }

    func stop() {
        kill(pid, SIGTERM)
        _ = Subprocess.wait(pid)
        unlink(output)
    }
}
