import ArgumentParser
import Uploader

/// `netdiskfs mv`: move or rename a remote file or directory.
public struct MoveCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mv",
        abstract: "Move or rename a remote file or directory.",
        discussion: """
            If DESTINATION is an existing directory (or ends with /), SOURCE moves into it under its own name; \
            otherwise SOURCE is moved and renamed to DESTINATION. An existing destination file is an error \
            unless --overwrite is given. Relative paths are under the remote root.
            """)

    @OptionGroup public var global: GlobalOptions

    @Flag(name: .long, help: "Replace an existing file at the destination.")
    public var overwrite = false

    @Argument(help: "The remote path to move.")
    public var source: String

    @Argument(help: "The new path, or a directory to move into.")
    public var destination: String

    public init() {}

    public func run() async throws {
        try await CommandRunner.run("") {
            let settings = try global.settings()
            let client = try ClientFactory.makeClient(settings: settings, logger: global.logger())
            let from = CLIPath.resolve(source, root: settings.remoteRoot)
            var to = CLIPath.resolve(destination, root: settings.remoteRoot)
            let context = "mv \(from) \(to)"
            do {
                if destination.hasSuffix("/") {
                    to = CLIPath.join(to, CLIPath.name(from))
                } else if let existing = try await RemoteLookup.stat(client, to), existing.isDirectory {
                    to = CLIPath.join(to, CLIPath.name(from))
                }
                guard from != "/", from != to else { throw CommandError("source and destination are the same") }
                try await client.move(from: from, toDirectory: CLIPath.parent(to), newName: CLIPath.name(to),
                                      ondup: overwrite ? .overwrite : .fail)
            } catch {
                throw CommandError("\(context): \(error)")
            }
        }
    }
}
