import ArgumentParser
import NetdiskFS

/// The process entry point. Not a main.swift: from top-level code `NetdiskCommand.main()` resolves to
/// the synchronous ParsableCommand.main(), which refuses async subcommands at run time
/// (swift-argument-parser issue #688); an async `@main` picks the async overload.
@main
enum NetdiskMain {
    static func main() async {
        await CommandLineDriver.main()
    }
}
