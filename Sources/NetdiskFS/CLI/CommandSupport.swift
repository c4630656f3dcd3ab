import ArgumentParser
import Foundation
import Uploader
#if canImport(Glibc)
import Glibc
#endif

/// Runs a command body and turns any failure into one clear line on stderr and exit status 1.
public enum CommandRunner {
    public static func run(_ context: String, _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as ExitCode {
            throw error
        } catch let error as NetdiskError {
            printError(context.isEmpty ? "\(error)" : "\(context): \(error)")
            throw ExitCode.failure
        } catch {
            printError(context.isEmpty ? "\(error)" : "\(context): \(error)")
            throw ExitCode.failure
        }
    }

    public static func printError(_ message: String) {
        let line = "netdiskfs: " + message.replacingOccurrences(of: "\n", with: " ") + "\n"
        fflush(nil)
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// A failure found by the CLI itself (not the cloud).
public struct CommandError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Remote path arithmetic for CLI arguments: relative paths are under the remote root.
public enum CLIPath {
    /// `/abs/path` stays absolute; `rel/path` is taken under `root`; `.` and `..` are resolved.
    public static func resolve(_ argument: String, root: String) -> String {
        let joined = argument.hasPrefix("/") ? argument : root + "/" + argument
        var parts: [Substring] = []
        for component in joined.split(separator: "/") {
            switch component {
            case ".": continue
            case "..": _ = parts.popLast()
            default: parts.append(component)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    public static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), path != "/" else { return "/" }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    public static func name(_ path: String) -> String {
        String(path.split(separator: "/").last ?? "")
    }

    public static func join(_ directory: String, _ name: String) -> String {
        directory == "/" ? "/" + name : directory + "/" + name
    }

    /// True when `path` is `ancestor` or below it.
    public static func isWithin(_ path: String, _ ancestor: String) -> Bool {
        ancestor == "/" || path == ancestor || path.hasPrefix(ancestor + "/")
    }
}

/// Sizes for people: 1024-based units with one decimal (`1.5 GiB`).
public enum HumanSize {
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        guard bytes >= 1024 else { return "\(bytes) B" }
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
}

/// Looks a remote path up through its parent's listing (Baidu has no stat call).
public enum RemoteLookup {
    public static func stat(_ client: BaiduClient, _ path: String) async throws(NetdiskError) -> RemoteEntry? {
        if path == "/" { return RemoteEntry(fsID: 0, path: "/", name: "", size: 0, isDirectory: true) }
        let name = CLIPath.name(path)
        var start = 0
        while true {
            let page: [RemoteEntry]
            do throws(NetdiskError) {
                page = try await client.list(directory: CLIPath.parent(path), start: start, limit: 1000)
            } catch {
                if case .notFound = error { return nil }
                throw error
            }
            if let match = page.first(where: { $0.name == name }) { return match }
            if page.count < 1000 { return nil }
            start += page.count
        }
    }
}

/// Whether a file descriptor is a terminal (QR codes only go to terminals).
enum Terminal {
    static func isTTY(_ fd: Int32) -> Bool { isatty(fd) != 0 }
}
