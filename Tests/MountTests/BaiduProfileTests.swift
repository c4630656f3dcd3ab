#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NetdiskEmulator
import Testing
import Uploader

/// The mount against the strict reading of the real Baidu (`--profile documented`): a belief that
/// turns out wrong must cost speed, never data.
struct BaiduProfileTests {
    static func stats(_ m: MountFixture) async throws -> [String: Any] {
        let data = Data(try await shell("curl -sf \(m.emulator.baseURL)/__emulator/stats").stdout.utf8)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    static func learned(_ m: MountFixture) throws -> LearnedStreaming? {
        let directory = m.path + "/state/netdiskfs"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        guard let name = names.first(where: { $0.hasPrefix("streaming-") }) else { return nil }
        return StreamingStrategyStore(path: directory + "/" + name).load()
    }

    /// On `documented`, the web-API precreate refuses OAuth and the mount learns strategy (a): a
    /// sequential `cp` still streams, with nothing in the cache dir, at every tier.
    @Test(arguments: [0, 1, 2]) func documentedProfileStreamsThroughStrategyA(vipType: Int) async throws {
        var options = EmulatorOptions()
        options.vipType = vipType
        options.profile = .documented
        try await withMount(emulatorOptions: options) { m in
            try await shell("head -c 70M /dev/urandom > \(m.local("a.bin"))")
            let watcher = CloudWatcher(m)
            watcher.start()
            try await shell("cp \(m.local("a.bin")) \(m.mounted("a.bin")) && cp \(m.local("a.bin")) \(m.mounted("b.bin"))")
            await watcher.stop()
            #expect(watcher.maxCacheBytes == 0, "streamed, not spooled: \(watcher.maxCacheBytes) bytes in the cache dir")
            for name in ["a.bin", "b.bin"] {
                #expect(watcher.sizes(at: m.remote(name)).subtracting([70 << 20]).isEmpty, "no partial \(name) was visible")
            }
            let md5 = try await shell("md5sum < \(m.local("a.bin")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let cloud = try await m.cloudFiles()
            #expect(cloud[m.remote("a.bin")]?.md5 == md5 && cloud[m.remote("b.bin")]?.md5 == md5)
            #expect(try Self.learned(m)?.strategy == .xpanProvisional)
            let log = m.daemonLog()
            #expect(log.contains("streams with (a)"), "\(log.suffix(2000))")
            #expect(log.components(separatedBy: "streams with").count == 2, "learned once, not per file")
            #expect(log.contains("(streaming)") && !log.contains("switching to the cached path"))
        }
    }

    /// When create must repeat precreate's size, (a) fails its probe and (b) is refused: the mount
    /// takes the cached path from the first write, exact, with one warning, learned once.
    @Test func createThatMustRepeatTheSizeFallsBackToTheCachedPathOnce() async throws {
        var options = EmulatorOptions()
        options.profile = .documented
        options.profile.createMustRepeatPrecreateSize = true
        try await withMount(emulatorOptions: options) { m in
            try await shell("head -c 30M /dev/urandom > \(m.local("c.bin"))")
            let watcher = CloudWatcher(m)
            watcher.start()
            for name in ["c1.bin", "c2.bin", "c3.bin"] {
                try await shell("cp \(m.local("c.bin")) \(m.mounted(name))")
            }
            await watcher.stop()
            let md5 = try await shell("md5sum < \(m.local("c.bin")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let cloud = try await m.cloudFiles()
            for name in ["c1.bin", "c2.bin", "c3.bin"] {
                #expect(cloud[m.remote(name)]?.md5 == md5, "\(name) is exact")
                #expect(watcher.sizes(at: m.remote(name)).subtracting([30 << 20]).isEmpty)
            }
            #expect(watcher.maxCacheBytes > 0, "the cached path was taken")
            let log = m.daemonLog()
            #expect(log.components(separatedBy: "refuses every streaming upload").count == 2, "one warning: \(log.suffix(3000))")
            #expect(try Self.learned(m)?.strategy == StreamingStrategy.none)
            let calls = try await Self.stats(m)["calls"] as? [String: Any] ?? [:]
            // Probe: (a) precreate + create, (b) precreate. Then one precreate and create per file.
            #expect((calls["precreate"] as? Int ?? 0) <= 2 + 3, "no failed streaming attempt per file: \(calls)")
            // A new mount reads what was learned and does not probe again.
            await m.unmount()
            try await m.mount()
            try await shell("cp \(m.local("c.bin")) \(m.mounted("c4.bin"))")
            #expect(try await m.cloudFiles()[m.remote("c4.bin")]?.md5 == md5)
            #expect(m.daemonLog().components(separatedBy: "refuses every streaming upload").count == 2, "the remount remembered")
            #expect(m.daemonLog().components(separatedBy: ": mounted \(m.mountpoint)").count == 3, "it was remounted")
        }
    }

    /// A belief that stops holding: the state dir says (b) works, the account now refuses it. The
    /// first file's precreate is refused, the mount learns again, and that very file streams with (a).
    @Test func aStrategyThatStopsWorkingIsLearnedAgainWithoutFailingTheFile() async throws {
        var options = EmulatorOptions()
        options.profile = .documented
        let m = try await MountFixture.make(emulatorOptions: options)
        do {
            let name = (StreamingStrategyStore.forAccount(uk: 3_141_592_653, endpoint: m.emulator.baseURL).path as NSString).lastPathComponent
            let store = StreamingStrategyStore(path: m.path + "/state/netdiskfs/" + name)
            try store.save(LearnedStreaming(strategy: .webPlaceholder))
            try await m.mount()
            try await shell("head -c 30M /dev/urandom > \(m.local("s.bin"))")
            let watcher = CloudWatcher(m)
            watcher.start()
            let copy = try await shell("cp \(m.local("s.bin")) \(m.mounted("s.bin"))", check: false)
            await watcher.stop()
            #expect(copy.status == 0, "the file in hand does not fail: \(copy.stderr)")
            let md5 = try await shell("md5sum < \(m.local("s.bin")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await m.cloudFiles()[m.remote("s.bin")]?.md5 == md5)
            #expect(watcher.maxCacheBytes == 0, "it still streamed")
            let log = m.daemonLog()
            #expect(log.contains("was refused") && log.contains("learning again") && log.contains("streams with (a)"), "\(log.suffix(2000))")
            #expect(store.load()?.strategy == .xpanProvisional, "the new belief is remembered")
        } catch {
            await m.tearDown()
            throw error
        }
        await m.tearDown()
    }

    /// A normal account may hold one download connection: `cat` of 256 MiB and `get` never open two.
    @Test func normalAccountReadsOverOneConnection() async throws {
        var options = EmulatorOptions()
        options.profile = .documented
        try await withMount(emulatorOptions: options) { m in
            try await shell("head -c 256M /dev/urandom > \(m.local("r.bin"))")
            try await shell("cp \(m.local("r.bin")) \(m.mounted("r.bin"))")
            let md5 = try await shell("md5sum < \(m.local("r.bin")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            // A fresh mount, so the kernel's page cache does not answer the read.
            await m.unmount()
            try await m.mount()
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            let read = try await shell("md5sum < \(m.mounted("r.bin")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(read == md5)
            var stats = try await Self.stats(m)
            #expect(stats["downloads_peak"] as? Int == 1, "cat: \(stats["downloads_peak"] ?? "?") connections at once")
            #expect(stats["downloads_refused"] as? Int == 0)

            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            let get = try await shell("\(Binary.path) --endpoint \(m.emulator.baseURL) get --quiet \(m.remote("r.bin")) \(m.local("got.bin"))",
                                      environment: m.environment, check: false)
            #expect(get.status == 0, "\(get.stderr)")
            #expect(try await shell("md5sum < \(m.local("got.bin")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines) == md5)
            stats = try await Self.stats(m)
            #expect(stats["downloads_peak"] as? Int == 1, "get: \(stats["downloads_peak"] ?? "?") connections at once")
            #expect(stats["downloads_refused"] as? Int == 0)
        }
    }

    /// The account refuses empty files: `touch` is never lost. The empty file is listed, read,
    /// renamed, truncates what was there, survives a remount, and gets uploaded once it has content.
    @Test func emptyFilesTheCloudRefusesAreKeptLocally() async throws {
        var options = EmulatorOptions()
        options.profile = .documented
        try await withMount(emulatorOptions: options) { m in
            try await shell("touch \(m.mounted("e1")) && : > \(m.mounted("e2"))")
            try await shell("test -f \(m.mounted("e1")) && test ! -s \(m.mounted("e1")) && test -f \(m.mounted("e2"))")
            #expect(try await shell("ls \(m.mounted(""))").stdout.split(separator: "\n").sorted() == ["e1", "e2"])
            #expect(try await shell("cat \(m.mounted("e1")) | wc -c").stdout.trimmingCharacters(in: .whitespaces) == "0\n")
            try await shell("mv \(m.mounted("e1")) \(m.mounted("e3"))")
            // An existing file truncated to nothing: the cloud must not keep the old content.
            try await shell("echo old > \(m.mounted("full")) && : > \(m.mounted("full"))")
            #expect(try await shell("stat -c %s \(m.mounted("full"))").stdout == "0\n")
            // `: >` writes nothing: its commit comes at FUSE release, just after close(2) returned.
            var cloud = try await m.cloudFiles()
            for _ in 0..<50 where cloud[m.remote("full")] != nil {
                try await Task.sleep(for: .milliseconds(100))
                cloud = try await m.cloudFiles()
            }
            #expect(cloud[m.remote("full")] == nil, "the old content was deleted")
            let log = m.daemonLog()
            #expect(log.components(separatedBy: "kept in the local metadata overlay").count == 2, "said once: \(log.suffix(2000))")

            await m.unmount()
            try await m.mount()
            #expect(try await shell("ls \(m.mounted(""))").stdout.split(separator: "\n").sorted() == ["e2", "e3", "full"])
            try await shell("echo content >> \(m.mounted("e3"))")
            #expect(try await m.cloudFiles()[m.remote("e3")]?.size == 8, "uploaded once it had content")
            #expect(try await shell("cat \(m.mounted("e3"))").stdout == "content\n")
            try await shell("rm \(m.mounted("e2")) \(m.mounted("full"))")
            #expect(try await shell("ls \(m.mounted(""))").stdout == "e3\n")
        }
    }
}
