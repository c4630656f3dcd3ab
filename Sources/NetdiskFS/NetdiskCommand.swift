import ArgumentParser

/// The `netdiskfs` command line: mount a Baidu Netdisk, and the account and transfer tools around it.
public struct NetdiskCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "netdiskfs",
        abstract: "Mount a Baidu Netdisk (百度网盘) account as a Linux filesystem.",
        discussion: """
            Files written sequentially are streamed to the cloud while they are written: \
            no local spool file, bounded memory.
            """,
        version: "0.1.0",
        subcommands: [
            EmulatorCommand.self,
            LoginCommand.self, WhoamiCommand.self, ListCommand.self, RemoveCommand.self, MoveCommand.self,
            MakeDirectoryCommand.self, PutCommand.self, GetCommand.self,
            MountCommand.self, UnmountCommand.self, StatusCommand.self, SyncCommand.self, SelftestCommand.self,
        ]
    )

    public init() {}
}
