import ArgumentParser
import Uploader

/// `netdiskfs mkdir`: create remote directories.
public struct MakeDirectoryCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "mkdir",
        abstract: "Create remote directories.",
        discussion: """
            Creates each PATH (relative paths are under the remote root). Without -p the parent must exist \
            (the remote root counts as existing) and the directory must not. With -p, missing parents are \
            created and an existing directory is not an error.
            """)

    @OptionGroup public var global: GlobalOptions

    @Flag(name: .short, help: "Create missing parents; an existing directory is fine.")
    public var parents = false

    @Argument(help: "Remote directories to create.")
    public var paths: [String]

    public init() {}

    public func validate() throws {
        guard !paths.isEmpty else { throw ValidationError("name at least one directory to create") }
    }

    public func run() async throws {
        try await CommandRunner.run("") {
            let settings = try global.settings()
            let client = try ClientFactory.makeClient(settings: settings, logger: global.logger())
            for argument in paths {
                let path = CLIPath.resolve(argument, root: settings.remoteRoot)
                do {
                    if parents {
                        try await makeWithParents(client, path)
                    } else {
                        try await makeOne(client, path, root: settings.remoteRoot)
                    }
                } catch {
                    throw CommandError("mkdir \(path): \(error)")
                }
            }
        }
    }

    private func makeOne(_ client: BaiduClient, _ path: String, root: String) async throws {
        let parent = CLIPath.parent(path)
        if !CLIPath.isWithin(root, parent) {
            guard let parentEntry = try await RemoteLookup.stat(client, parent) else {
                throw CommandError("parent directory \(parent) does not exist (use -p)")
            }
            guard parentEntry.isDirectory else { throw CommandError("\(parent) is not a directory") }
        }
        if try await RemoteLookup.stat(client, path) != nil { throw NetdiskError.alreadyExists(code: -8) }
        _ = try await client.makeDirectory(path: path)
    }

    private func makeWithParents(_ client: BaiduClient, _ path: String) async throws {
        var current = "/"
        for component in path.split(separator: "/") {
            current = CLIPath.join(current, String(component))
            if let existing = try await RemoteLookup.stat(client, current) {
                guard existing.isDirectory else { throw CommandError("\(current) exists and is not a directory") }
                continue
            }
            do {
                _ = try await client.makeDirectory(path: current)
            } catch NetdiskError.alreadyExists {
                continue  // created concurrently
            }
        }
    }
}
