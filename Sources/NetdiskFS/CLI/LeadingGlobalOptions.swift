import Foundation

/// Lets global options come before the subcommand: `netdiskfs --endpoint URL login`.
///
/// ArgumentParser only parses options after the subcommand that declares them, so `main` strips
/// `--endpoint`, `--config-dir` and `-v/--verbose` from in front of the subcommand name and passes them
/// on through the environment variables that ``GlobalOptions`` and ``ResolvedSettings`` read anyway
/// (`NETDISKFS_ENDPOINT`, `NETDISKFS_CONFIG_DIR`, `NETDISKFS_VERBOSE`). Options after the subcommand still win.
public enum LeadingGlobalOptions {
    public static func extract(_ arguments: [String]) -> (remaining: [String], environment: [String: String]) {
        var environment: [String: String] = [:]
        var remaining: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if !argument.hasPrefix("-") || argument == "--" { break }
            if let (name, variable) = valued.first(where: { argument == $0.0 || argument.hasPrefix($0.0 + "=") }) {
                if argument.hasPrefix(name + "=") {
                    environment[variable] = String(argument.dropFirst(name.count + 1))
                } else if index + 1 < arguments.count {
                    environment[variable] = arguments[index + 1]
                    index += 1
                } else {
                    remaining.append(argument)  // let the parser report the missing value
                }
            } else if argument == "-v" || argument == "--verbose" {
                environment["NETDISKFS_VERBOSE"] = "1"
            } else {
                remaining.append(argument)
            }
            index += 1
        }
        remaining.append(contentsOf: arguments[index...])
        return (remaining, environment)
    }

    /// Applies ``extract(_:)`` to the process: sets the variables and returns the arguments to parse.
    public static func apply(to arguments: [String]) -> [String] {
        let (remaining, environment) = extract(arguments)
        for (name, value) in environment { setenv(name, value, 1) }
        return remaining
    }

    private static let valued: [(String, String)] = [("--endpoint", "NETDISKFS_ENDPOINT"), ("--config-dir", "NETDISKFS_CONFIG_DIR")]
}

import ArgumentParser

/// The process entry point: hoists leading global options, then parses and runs the command asynchronously.
///
/// It lives here rather than in `main.swift` because at top level Swift picks ArgumentParser's synchronous
/// `main()`/`run()` overloads, which refuse (or skip) async commands.
public enum CommandLineDriver {
    public static func main() async {
        let arguments = LeadingGlobalOptions.apply(to: Array(CommandLine.arguments.dropFirst()))
        do {
            let command = try await NetdiskCommand.asyncParseAsRoot(arguments)
            try await runParsed(command)
        } catch {
            NetdiskCommand.exit(withError: error)
        }
    }

    private static func runParsed(_ command: any ParsableCommand) async throws {
        if var asyncCommand = command as? any AsyncParsableCommand {
            try await runAsync(&asyncCommand)
        } else {
            var command = command
            try command.run()
        }
    }

    private static func runAsync(_ command: inout any AsyncParsableCommand) async throws {
        try await command.run()
    }
}
