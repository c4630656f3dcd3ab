import ArgumentParser
import Foundation
import Uploader

/// `netdiskfs login`: the OAuth device flow, or importing a refresh token.
public struct LoginCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Authorize netdiskfs to use your Baidu Netdisk account.",
        discussion: """
            Starts Baidu's device-code flow: prints a verification URL and a user code (and a QR code when \
            stdout is a terminal), then waits while you approve netdiskfs in a browser or the Baidu app. \
            The token pair is saved to credentials.json (mode 0600) in the config directory.
            With --refresh-token, an existing refresh token is exchanged for a fresh pair instead.
            Against an emulator: netdiskfs --endpoint http://127.0.0.1:PORT login
            """)

    @OptionGroup public var global: GlobalOptions

    @Option(name: .long, help: ArgumentHelp("Import an existing refresh token (it is used once and replaced).", valueName: "token"))
    public var refreshToken: String?

    @Flag(name: .long, help: "Do not draw the QR code.")
    public var noQR = false

    public init() {}

    public func run() async throws {
        try await CommandRunner.run("login") {
            let settings = try global.settings()
            try settings.requireAppCredentials()
            let client = try ClientFactory.makeClient(settings: settings, logger: global.logger())
            let pair: TokenPair
            if let refreshToken {
                pair = try await client.oauth.refresh(refreshToken: refreshToken)
            } else {
                pair = try await deviceFlow(client.oauth)
            }
            try await client.tokens.install(pair)
            let account = try await client.accountInfo()
            print("Logged in as \(account.name) (\(account.tier.displayName)). Credentials saved to \(settings.paths.credentialsFile).")
        }
    }

    private func deviceFlow(_ oauth: OAuthClient) async throws -> TokenPair {
        let authorization = try await oauth.requestDeviceCode()
        print("To authorize netdiskfs, open")
        print("    \(authorization.verificationURL)")
        print("and enter the code: \(authorization.userCode)")
        if !noQR, Terminal.isTTY(1), let qr = QRCodeRenderer.render(authorization.verificationURLWithCode) {
            print("or scan this QR code with the Baidu app:")
            print(qr, terminator: "")
        }
        print("Waiting for approval (the code expires in \(max(1, authorization.expiresIn / 60)) min)...")
        fflush(nil)
        var interval = authorization.interval
        let deadline = ContinuousClock.now + .seconds(authorization.expiresIn)
        while true {
            switch try await oauth.pollToken(deviceCode: authorization.deviceCode) {
            case .granted(let pair):
                return pair
            case .pending:
                break
            case .slowDown:
                interval += 5
                print("The server asked to poll more slowly; now every \(interval) s.")
            case .expired:
                throw CommandError("the code expired before it was approved; run `netdiskfs login` again")
            case .denied(let why):
                throw CommandError("authorization was denied (\(why))")
            }
            guard ContinuousClock.now + .seconds(interval) < deadline else {
                throw CommandError("the code expired before it was approved; run `netdiskfs login` again")
            }
            try await Task.sleep(for: .seconds(interval))
        }
    }
}
