import ArgumentParser
import Foundation
import Uploader

/// `netdiskfs ls`: list a remote directory, paging through any size.
public struct ListCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List a remote directory.",
        discussion: """
            PATH is absolute (/apps/netdiskfs/x) or relative to the remote root (remote_root in config.json, \
            default /apps/netdiskfs). Directories are paged 1000 entries at a time, so any size works. \
            With -l each line is: type (d or -), size in bytes, modification time (UTC), name.
            """)

    @OptionGroup public var global: GlobalOptions

    @Flag(name: .short, help: "Long format: type, size, modification time, name.")
    public var l = false

    @Flag(name: .customShort("R"), help: "List subdirectories recursively.")
    public var recursive = false

    @Flag(name: [.customShort("H"), .long], help: "With -l, print sizes in KiB/MiB/GiB.")
    public var human = false

    @Argument(help: "Remote directory or file (default: the remote root).")
    public var path: String = "."

    public init() {}

    public func run() async throws {
        let settings = try? global.settings()
        let target = CLIPath.resolve(path, root: settings?.remoteRoot ?? NetdiskConfig.defaultRemoteRoot)
        try await CommandRunner.run("ls \(target)") {
            let settings = try global.settings()
            let client = try ClientFactory.makeClient(settings: settings, logger: global.logger())
            guard let entry = try await RemoteLookup.stat(client, target) else {
                // The app's root exists implicitly: Baidu creates it on the first write.
                if target == settings.remoteRoot { return }
                throw NetdiskError.notFound(code: -9)
            }
            guard entry.isDirectory else {
                print(line(for: entry))
                return
            }
            try await listDirectory(client, target, heading: false)
        }
    }

    private func listDirectory(_ client: BaiduClient, _ directory: String, heading: Bool) async throws {
        let entries = try await client.listAll(directory: directory)
        if heading { print("\n\(directory):") } else if recursive { print("\(directory):") }
        var output = ""
        for entry in entries { output += line(for: entry) + "\n" }
        print(output, terminator: "")
        if recursive {
            for entry in entries where entry.isDirectory {
                try await listDirectory(client, entry.path, heading: true)
            }
        }
    }

    private func line(for entry: RemoteEntry) -> String {
        let name = entry.isDirectory ? entry.name + "/" : entry.name
        guard l else { return name }
        let size = human ? HumanSize.format(entry.size) : String(entry.size)
        let padded = String(repeating: " ", count: max(0, 12 - size.count)) + size
        return "\(entry.isDirectory ? "d" : "-") \(padded) \(Self.timestamp(entry.serverMtime)) \(name)"
    }

    static func timestamp(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min))
    }
}
