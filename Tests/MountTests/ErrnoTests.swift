#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NetdiskEmulator
import Testing
import Uploader

/// What a program sees when Baidu or the local disk says no: the errno it can act on, at once,
/// never a generic EIO after the upload (chaos scenarios "forbidden-names" and "small-cache").
@Suite(.serialized, .enabled(if: FuseSupport.shouldRun, "needs /dev/fuse (set CI=true to fail instead of skipping)"))
struct ErrnoTests {
    @Test func namesBaiduForbidsFailWithEINVALBeforeAnyUpload() async throws {
        try await withMount { m in
            try await shell("head -c \(6 << 20) /dev/urandom > \(m.local("x")) && cp \(m.local("x")) \(m.mounted("good"))")
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            for name in ["a:b", "q?", "x*y", "p|q", "lt<gt>", "quo\\\"te", "back\\\\slash"] {
                let result = try await shell("cp \(m.local("x")) \"\(m.mounted(name))\"", check: false)
                #expect(result.status != 0 && result.stderr.contains("Invalid argument"), "\(name): \(result.stderr)")
            }
            let long = String(repeating: "n", count: 256)
            let tooLong = try await shell("cp \(m.local("x")) \(m.mounted(long))", check: false)
            #expect(tooLong.status != 0 && tooLong.stderr.contains("too long"), "\(tooLong.stderr)")
            let mkdir = try await shell("mkdir \(m.mounted("d:ir"))", check: false)
            #expect(mkdir.stderr.contains("Invalid argument"), "\(mkdir.stderr)")
            // (mv words rename(2)'s EINVAL as "a subdirectory of itself": ask the syscall directly.)
            let rename = try await shell("python3 -c 'import os, sys; os.rename(sys.argv[1], sys.argv[2])' \(m.mounted("good")) '\(m.mounted("re:named"))'", check: false)
            #expect(rename.status != 0 && rename.stderr.contains("Invalid argument"), "\(rename.stderr)")
            let link = try await shell("ln -s good \(m.mounted("l*nk"))", check: false)
            #expect(link.status != 0 && link.stderr.contains("Invalid argument"), "\(link.stderr)")
            let data = Data(try await shell("curl -sf \(m.emulator.baseURL)/__emulator/stats").stdout.utf8)
            let calls = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["calls"] as? [String: Int] ?? [:]
            #expect((calls["superfile2"] ?? 0) == 0 && (calls["create"] ?? 0) == 0, "nothing was uploaded: \(calls)")
            #expect(try await m.cloudFiles()[m.remote("good")] != nil)
        }
    }

    /// The cached path's sparse file on a full disk: ENOSPC, which `cp` reports, and nothing committed.
    @Test func aFullCacheDiskIsENOSPC() async throws {
        let fixture = try await MountFixture.make()
        let cache = fixture.local("cache")
        try await shell("mkdir -p \(cache) && mount -t tmpfs -o size=4m tmpfs \(cache)")
        do {
            try await fixture.mount(["--cache-dir", cache])
            try await shell("head -c \(12 << 20) /dev/urandom > \(fixture.local("x"))")
            // Written from the end backwards: out of order, so the file takes the cached path.
            let script = """
                import os, sys
                data = open(sys.argv[1], 'rb').read()
                fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    for off in range(len(data) - (1 << 20), -1, -(1 << 20)):
                        os.pwrite(fd, data[off:off + (1 << 20)], off)
                    os.close(fd)
                except OSError as e:
                    print(os.strerror(e.errno)); sys.exit(1)
                """
            try script.write(toFile: fixture.local("rev.py"), atomically: true, encoding: .utf8)
            let result = try await shell("python3 \(fixture.local("rev.py")) \(fixture.local("x")) \(fixture.mounted("rev"))", check: false)
            #expect(result.status == 1 && result.stdout.contains("No space left on device"), "\(result.stdout)\(result.stderr)")
            #expect(try await fixture.cloudFiles()[fixture.remote("rev")] == nil, "nothing committed")
        } catch {
            await fixture.tearDown()
            _ = try? await shell("umount -l \(cache)", check: false)
            throw error
        }
        await fixture.tearDown()
        _ = try await shell("umount -l \(cache)", check: false)
    }
}
