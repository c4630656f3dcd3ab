import Foundation
import Testing

/// doc/CONFIGURATION.md promises every flag of every command: a flag added without its line fails here.
@Suite struct DocumentationTests {
    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Every long and short name of every command's options, from the CLI's own description of itself.
    static func flags() async throws -> [(command: String, flag: String)] {
        let result = try await Subprocess.run(Binary.netdiskfs, ["--experimental-dump-help"])
        #expect(result.status == 0, "\(result.stderr)")
        let root = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        var found: [(String, String)] = []
        func walk(_ command: [String: Any], _ path: String) {
            for argument in command["arguments"] as? [[String: Any]] ?? [] {
                for name in argument["names"] as? [[String: Any]] ?? [] {
                    guard let kind = name["kind"] as? String, let text = name["name"] as? String else { continue }
                    if kind == "long" { found.append((path, "--" + text)) }
                    if kind == "short" { found.append((path, "-" + text)) }
                }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] {
                walk(sub, path + " " + (sub["commandName"] as? String ?? "?"))
            }
        }
        walk(try #require(root["command"] as? [String: Any]), "netdiskfs")
        return found
    }

    @Test func configurationListsEveryFlag() async throws {
        let doc = try String(contentsOfFile: Self.repositoryRoot + "/doc/CONFIGURATION.md", encoding: .utf8)
        let flags = try await Self.flags()
        #expect(flags.count > 40, "the CLI described itself: \(flags.count) flags")
        // Written as code: `--flag` or `-f` (alone, or followed by a value or a comma).
        let missing = flags.filter { !doc.contains("`\($0.flag)`") && !doc.contains("`\($0.flag) ") && !doc.contains("`\($0.flag)=") }
        #expect(missing.isEmpty, "flags missing from doc/CONFIGURATION.md: \(missing.map { "\($0.command) \($0.flag)" })")
    }

    @Test func everyDocumentThatTheReadmeLinksExists() throws {
        let readme = try String(contentsOfFile: Self.repositoryRoot + "/README.md", encoding: .utf8)
        for document in ["doc/SEMANTICS.md", "doc/CONFIGURATION.md", "doc/EMULATOR.md", "doc/ARCHITECTURE.md"] {
            #expect(readme.contains("(\(document))"), "README links \(document)")
            #expect(FileManager.default.fileExists(atPath: Self.repositoryRoot + "/" + document), "\(document) exists")
        }
    }
}
