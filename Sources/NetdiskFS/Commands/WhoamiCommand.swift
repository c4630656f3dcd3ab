import ArgumentParser
import Foundation
import Uploader

/// `netdiskfs whoami`: who is logged in, their tier and quota.
public struct WhoamiCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "whoami",
        abstract: "Show the logged-in account, its tier and quota.",
        discussion: "Prints the account name, the membership tier (normal, VIP, SVIP: it sets the upload slice size) and quota used/total.")

    @OptionGroup public var global: GlobalOptions

    public init() {}

    public func run() async throws {
        try await CommandRunner.run("whoami") {
            let client = try global.makeClient()
            async let account = client.accountInfo()
            async let quota = client.quota()
            let (info, space) = try await (account, quota)
            let percent = space.total > 0 ? Double(space.used) * 100 / Double(space.total) : 0
            print("Account: \(info.name) (uk \(info.uk))")
            print("Tier:    \(info.tier.displayName) (slices up to \(HumanSize.format(Int64(info.tier.maxSliceSize))))")
            print("Quota:   \(HumanSize.format(space.used)) used of \(HumanSize.format(space.total)) (\(String(format: "%.1f", percent))%)")
        }
    }
}
