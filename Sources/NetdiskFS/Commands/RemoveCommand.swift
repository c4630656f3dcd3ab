import ArgumentParser
import Uploader

/// `netdiskfs rm`: delete remote files or directories.
public struct RemoveCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Delete remote files or directories.",
        discussion: """
            Deletes each PATH (relative paths are under the remote root). A directory is deleted with \
            everything in it, as Baidu does; Baidu keeps deleted files in its recycle bin for a while.
            """)

    @OptionGroup public var global: GlobalOptions

    @Flag(name: .short, help: "Ignore paths that do not exist.")
    public var force = false

    @Argument(help: "Remote paths to delete.")
    public var paths: [String]

    public init() {}

    public func validate() throws {
        guard !paths.isEmpty else { throw ValidationError("name at least one path to delete") }
    }

    public func run() async throws {
        try await CommandRunner.run("") {
            let settings = try global.settings()
            let client = try ClientFactory.makeClient(settings: settings, logger: global.logger())
            for argument in paths {
                let path = CLIPath.resolve(argument, root: settings.remoteRoot)
                guard path != "/" else { throw CommandError("rm /: refusing to delete the whole account") }
                do {
                    try await client.delete(paths: [path])
                } catch NetdiskError.notFound where force {
                    continue
                } catch {
                    throw CommandError("rm \(path): \(error)")
                }
            }
        }
    }
}
