#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import NetdiskEmulator
import Testing
import Uploader

/// The mount, driven the way users drive it: coreutils, tar, rsync, dd against a real FUSE mount
/// of the `netdiskfs` binary, talking HTTP to an in-process emulator. Serialized: each test moves
/// hundreds of MiB and the machine has two cores.
@Suite(.serialized, .enabled(if: FuseSupport.shouldRun, "needs /dev/fuse (set CI=true to fail instead of skipping)"))
struct MountTests {
    @Test func copiesOfEdgeSizesReadBackIdentical() async throws {
        try await withMount { m in
            let sizes = [0, 1, 4 << 20 - 1, 4 << 20, 4 << 20 + 1, 100 << 20]
            for size in sizes {
                try await shell("head -c \(size) /dev/urandom > \(m.local("f\(size)"))")
                try await shell("cp \(m.local("f\(size)")) \(m.mounted("f\(size)"))")
                try await shell("cmp \(m.local("f\(size)")) \(m.mounted("f\(size)"))")
            }
            let cloud = try await m.cloudFiles()
            for size in sizes {
                let local = try await shell("md5sum < \(m.local("f\(size)")) | cut -d' ' -f1").stdout
                let mounted = try await shell("md5sum < \(m.mounted("f\(size)")) | cut -d' ' -f1").stdout
                #expect(local == mounted, "md5 of f\(size) read back")
                if size == 0 && m.profile.refuseEmptyFiles {
                    #expect(cloud[m.remote("f0")] == nil, "the account refuses empty files: kept by the mount")
                    continue
                }
                let remote = try #require(cloud[m.remote("f\(size)")], "f\(size) is in the cloud")
                #expect(remote.size == Int64(size))
                #expect(remote.md5 == local.trimmingCharacters(in: .whitespacesAndNewlines), "cloud content of f\(size)")
            }
            let listing = try await shell("stat -c '%s %o' \(m.mounted("f\(4 << 20)"))").stdout
            #expect(listing.trimmingCharacters(in: .whitespacesAndNewlines) == "\(4 << 20) \(1 << 20)", "size and st_blksize 1 MiB")
        }
    }

    /// `cat` of a file arrives as 1 MiB reads, several at once and slightly out of order; the
    /// read path must still fetch it in a few large ranges (it once made one per 1–2 MiB).
    @Test func sequentialReadFetchesFewLargeRanges() async throws {
        try await withMount { m in
            let size = 96 << 20
            try await shell("head -c \(size) /dev/urandom > \(m.local("seq")) && cp \(m.local("seq")) \(m.mounted("seq"))")
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            try await shell("cmp \(m.local("seq")) \(m.mounted("seq"))")
            let stats = Data(try await shell("curl -sf \(m.emulator.baseURL)/__emulator/stats").stdout.utf8)
            let calls = try #require((try JSONSerialization.jsonObject(with: stats) as? [String: Any])?["calls"] as? [String: Any])
            let ranges = (calls["cdn"] as? NSNumber)?.intValue ?? 0
            // Windows of 1, 1, 2, 4, 8, then 16 MiB: about 10 ranges for 96 MiB.
            #expect(ranges >= 1 && ranges <= 16, "\(ranges) ranged downloads for 96 MiB")
        }
    }

    @Test func tarOfThousandFilesThenDiff() async throws {
        try await withMount { m in
            try await shell("""
                set -e; cd \(m.local(""))
                for d in $(seq 0 9); do mkdir -p tree/d$d; for f in $(seq 0 99); do
                  head -c $(( (d * 100 + f) * 37 % 20000 )) /dev/urandom > tree/d$d/f$f; done; done
                tar -cf tree.tar tree
                """)
            try await shell("tar -xf \(m.local("tree.tar")) -C \(m.mountpoint)")
            try await shell("diff -r \(m.local("tree")) \(m.mounted("tree"))")
            let count = try await shell("find \(m.mounted("tree")) -type f | wc -l").stdout
            #expect(count.trimmingCharacters(in: .whitespacesAndNewlines) == "1000")
        }
    }

    @Test func rsyncTreeThenDiff() async throws {
        try await withMount { m in
            try await shell("""
                set -e; mkdir -p \(m.local("src/a/b")) \(m.local("src/empty"))
                head -c 9437185 /dev/urandom > \(m.local("src/big"))
                for i in $(seq 1 30); do head -c $((i * 1000)) /dev/urandom > \(m.local("src/a/f$i")); done
                echo hello > \(m.local("src/a/b/deep.txt")); : > \(m.local("src/zero"))
                """)
            try await shell("rsync -a \(m.local("src"))/ \(m.mounted("dst"))/")
            try await shell("diff -r \(m.local("src")) \(m.mounted("dst"))")
            // A second run with one changed file: rsync rewrites it through a temp file and a rename.
            try await shell("echo changed >> \(m.local("src/a/f3")) && rsync -a \(m.local("src"))/ \(m.mounted("dst"))/")
            try await shell("diff -r \(m.local("src")) \(m.mounted("dst"))")
        }
    }

    @Test func ddSeekAndNotrunc() async throws {
        try await withMount { m in
            try await shell("""
                set -e
                head -c 10485760 /dev/urandom > \(m.local("base")); head -c 10000 /dev/urandom > \(m.local("patch"))
                cp \(m.local("base")) \(m.mounted("dd")); cp \(m.local("base")) \(m.local("dd"))
                for target in \(m.mounted("dd")) \(m.local("dd")); do
                  dd if=\(m.local("patch")) of=$target bs=4096 seek=100 conv=notrunc status=none
                  dd if=\(m.local("patch")) of=$target bs=1M seek=12 conv=notrunc status=none
                done
                dd if=\(m.local("patch")) of=\(m.mounted("dd2")) bs=1000 seek=5 status=none
                dd if=\(m.local("patch")) of=\(m.local("dd2")) bs=1000 seek=5 status=none
                """)
            try await shell("cmp \(m.local("dd")) \(m.mounted("dd"))")
            try await shell("cmp \(m.local("dd2")) \(m.mounted("dd2"))")
        }
    }

    /// Like an MP4 muxer: 64 MiB written in order, then the header at 0 and a box in the middle patched.
    @Test func muxerPatchesHeaderAfterSequentialWrite() async throws {
        try await withMount { m in
            let targets = [m.mounted("movie.mp4"), m.local("movie.mp4")]
            try await onThread {
                for target in targets {
                    let fd = open(target, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
                    guard fd >= 0 else { throw TestFailure.message("open \(target): \(errno)") }
                    var chunk = [UInt8](repeating: 0, count: 1 << 20)
                    for index in 0..<64 {
                        for i in stride(from: 0, to: chunk.count, by: 4096) { chunk[i] = UInt8(truncatingIfNeeded: index &* 31 &+ i / 4096) }
                        let written = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                        guard written == chunk.count else { throw TestFailure.message("write: \(errno)") }
                    }
                    let header = Array("ftypisom-moov-at-front".utf8)
                    guard header.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == header.count,
                          header.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 32 << 20 + 123) }) == header.count
                    else { throw TestFailure.message("pwrite: \(errno)") }
                    guard close(fd) == 0 else { throw TestFailure.message("close \(target): \(errno)") }
                }
            }
            try await shell("cmp \(targets[1]) \(targets[0])")
            let cloud = try await m.cloudFiles()
            let md5 = try await shell("md5sum < \(targets[1]) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(cloud[m.remote("movie.mp4")]?.md5 == md5)
        }
    }

    @Test func appendTruncateRenameMkdirRmdirUnlink() async throws {
        try await withMount { m in
            try await shell("""
                set -e; cd \(m.mountpoint)
                printf abc > a; printf def >> a; test "$(cat a)" = abcdef
                head -c 5242881 /dev/urandom > \(m.local("big")); cp \(m.local("big")) big
                echo tail >> big; echo tail >> \(m.local("big")); cmp big \(m.local("big"))
                truncate -s 3 a; test "$(cat a)" = abc
                truncate -s 1000 big; test $(stat -c %s big) = 1000; head -c 1000 \(m.local("big")) | cmp - big
                mkdir d; mkdir d/sub; mv a d/sub/a2; test "$(cat d/sub/a2)" = abc; test ! -e a
                echo new > b; echo old > c; mv b c; test "$(cat c)" = new; test ! -e b
                mv d e; test -d e/sub; test ! -e d
                if rmdir e 2> err; then echo "rmdir of a non-empty dir succeeded"; exit 1; fi; grep -q "not empty" err
                rm e/sub/a2; rmdir e/sub; rmdir e; test ! -e e
                rm c big; test ! -e c
                echo h > hl; if ln hl hardlink 2> err; then exit 1; fi; grep -q "not supported" err; rm hl
                ln -s x link; test "$(readlink link)" = x; rm link; test ! -L link
                touch empty; test -f empty; test $(stat -c %s empty) = 0
                ls -la > /dev/null
                """)
            // A file opened and closed without a write (`touch`) commits at FUSE release, which the
            // kernel sends after close(2) has returned (so `cmd > f` still streams); allow it a moment.
            var cloud = try await m.cloudFiles()
            for _ in 0..<50 where cloud[m.remote("empty")] == nil && !m.profile.refuseEmptyFiles {
                try await Task.sleep(for: .milliseconds(100))
                cloud = try await m.cloudFiles()
            }
            if m.profile.refuseEmptyFiles {
                #expect(try await shell("stat -c %s \(m.mounted("empty"))").stdout == "0\n", "a touched empty file is kept by the mount")
            } else {
                #expect(cloud[m.remote("empty")]?.size == 0, "a touched empty file is committed")
            }
            #expect(cloud[m.remote("c")] == nil && cloud[m.remote("e")] == nil)
        }
    }

    @Test func dfShowsTheQuota() async throws {
        var options = EmulatorOptions()
        options.quota = 3 << 40
        try await withMount(emulatorOptions: options) { m in
            let size = try await shell("df -B1 --output=size \(m.mountpoint) | tail -1").stdout
            #expect(Int64(size.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: .newlines)) == 3 << 40)
        }
    }

    @Test func eightConcurrentCopies() async throws {
        try await withMount { m in
            try await shell("for i in $(seq 1 8); do head -c 67108864 /dev/urandom > \(m.local("c$i")); done")
            try await shell("for i in $(seq 1 8); do cp \(m.local("c$i")) \(m.mounted("c$i")) & done; fail=0; for j in $(jobs -p); do wait $j || fail=1; done; exit $fail")
            try await shell("for i in $(seq 1 8); do cmp \(m.local("c$i")) \(m.mounted("c$i")); done")
        }
    }

    /// One thread writing several new files in turn (an event-loop downloader does this): every
    /// file holds a buffer it is filling that only this thread can complete, so no file's first
    /// write may wait on the global budget (nor, as it once did, for a whole other file to finish).
    @Test func oneThreadInterleavingTwentyFiles() async throws {
        try await withMount { m in
            // More files than the default 64 MiB budget has 4 MiB slices.
            let files = 20, chunk = 1 << 20, chunks = 6
            let paths = (0..<files).map { m.mounted("il\($0)") }
            let finished = Mutex(false)
            let failure = Mutex<String?>(nil)
            let writer = Thread {
                defer { finished.withLock { $0 = true } }
                let fds = paths.map { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
                guard fds.allSatisfy({ $0 >= 0 }) else { failure.withLock { $0 = "open: \(errno)" }; return }
                var block = [UInt8](repeating: 0, count: chunk)
                for index in 0..<chunks {
                    for (file, fd) in fds.enumerated() {
                        Self.fillInterleavedBlock(&block, file: file, index: index)
                        guard block.withUnsafeBytes({ write(fd, $0.baseAddress, chunk) }) == chunk else {
                            failure.withLock { $0 = "write: \(errno)" }
                            return
                        }
                    }
                }
                for fd in fds where close(fd) != 0 { failure.withLock { $0 = "close: \(errno)" } }
            }
            writer.start()
            var waited = 0
            while !finished.withLock({ $0 }) && waited < 1200 {
                try await Task.sleep(for: .milliseconds(100))
                waited += 1
            }
            try #require(finished.withLock { $0 }, "the writer is still blocked after 120 s: the budget starved it")
            #expect(failure.withLock { $0 } == nil)
            let cloud = try await m.cloudFiles()
            for file in 0..<files {
                #expect(cloud[m.remote("il\(file)")]?.size == Int64(chunk * chunks), "il\(file) committed whole")
            }
            // The content round-trips: regenerate one file locally and compare.
            var local = [UInt8]()
            var block = [UInt8](repeating: 0, count: chunk)
            for index in 0..<chunks {
                Self.fillInterleavedBlock(&block, file: 3, index: index)
                local += block
            }
            try Data(local).write(to: URL(fileURLWithPath: m.local("il3")))
            try await shell("cmp \(m.local("il3")) \(paths[3])")
        }
    }

    /// Block `index` of interleaved file `file`: a byte every 512 that differs per file and block.
    static func fillInterleavedBlock(_ block: inout [UInt8], file: Int, index: Int) {
        for i in stride(from: 0, to: block.count, by: 512) { block[i] = UInt8(truncatingIfNeeded: file &* 7 &+ index &* 13 &+ i >> 9) }
    }

    @Test func killDuringCopyCommitsNothing() async throws {
        var options = EmulatorOptions()
        options.faults = "superfile2:delay=400ms"
        let fixture = try await MountFixture.make(emulatorOptions: options)
        do {
            try await fixture.mount()
            try await shell("head -c 209715200 /dev/urandom > \(fixture.local("victim"))")
            let copy = try Spawned.start(["/bin/cp", fixture.local("victim"), fixture.mounted("victim")])
            try await Task.sleep(for: .milliseconds(1500))
            let pid = try #require(fixture.daemon?.pid)
            #expect(copy.isRunning, "the copy is still in flight when the daemon dies")
            kill(pid, SIGKILL)
            let status = try await onThread { copy.wait() }
            #expect(status != 0, "cp sees the dead mount")
            await fixture.unmount()
            let cloud = try await fixture.cloudFiles()
            #expect(cloud[fixture.remote("victim")] == nil, "no partial file committed")
            #expect(!cloud.keys.contains { $0.hasSuffix("/victim") })
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    @Test func listsTenThousandEntries() async throws {
        try await withMount { m in
            let client = m.client
            let directory = m.remote("many")
            _ = try await client.makeDirectory(path: directory)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        for index in stride(from: worker, to: 10_000, by: 16) {
                            _ = try await client.makeDirectory(path: directory + String(format: "/entry%05d", index))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let started = Date()
            let lines = try await shell("ls -l \(m.mounted("many")) | grep -c '^d'").stdout
            let elapsed = Date().timeIntervalSince(started)
            #expect(lines.trimmingCharacters(in: .whitespacesAndNewlines) == "10000")
            #expect(elapsed < 30, "ls -l of 10,000 entries took \(elapsed) s")
            let again = Date()
            _ = try await shell("ls -l \(m.mounted("many")) > /dev/null")
            #expect(Date().timeIntervalSince(again) < 10, "a cached listing is fast")
        }
    }

    @Test func startErrorsPrintOneLineAndMountNothing() async throws {
        let fixture = try await MountFixture.make()
        defer { Task { await fixture.tearDown() } }
        let missing = try await shell("\(Binary.path) mount -f --endpoint \(fixture.emulator.baseURL) \(fixture.path)/no/such/dir",
                                      environment: fixture.environment, check: false)
        #expect(missing.status != 0)
        #expect(missing.stderr.split(separator: "\n").count == 1 && missing.stderr.contains("does not exist"), "\(missing.stderr)")

        var anonymous = fixture.environment
        anonymous["XDG_CONFIG_HOME"] = fixture.path + "/no-config"
        let loggedOut = try await shell("\(Binary.path) mount --endpoint \(fixture.emulator.baseURL) \(fixture.mountpoint)",
                                        environment: anonymous, check: false)
        #expect(loggedOut.status != 0)
        #expect(loggedOut.stderr.split(separator: "\n").count == 1, "\(loggedOut.stderr)")
        #expect(!isMounted(fixture.mountpoint))

        try await fixture.mount()
        let busy = try await shell("\(Binary.path) mount --endpoint \(fixture.emulator.baseURL) \(fixture.mountpoint)",
                                   environment: fixture.environment, check: false)
        #expect(busy.status != 0 && busy.stderr.contains("already mounted"), "\(busy.stderr)")
        await fixture.unmount()
    }

    @Test func daemonStatusAndUnmountCommand() async throws {
        var options = EmulatorOptions()
        options.faults = "superfile2:delay=500ms"
        let fixture = try await MountFixture.make(emulatorOptions: options)
        do {
            let env = fixture.environment
            let base = "\(Binary.path) mount --endpoint \(fixture.emulator.baseURL) --cache-dir \(fixture.path)/cache \(fixture.mountpoint)"
            try await shell(base, environment: env)
            #expect(isMounted(fixture.mountpoint), "mount returns once mounted")
            try await shell("head -c 67108864 /dev/urandom > \(fixture.local("slow"))")
            let copy = try Spawned.start(["/bin/cp", fixture.local("slow"), fixture.mounted("slow")])
            var seen = ""
            for _ in 0..<100 {
                try await Task.sleep(for: .milliseconds(100))
                seen = try await shell("\(Binary.path) status", environment: env).stdout
                if seen.contains("/slow") { break }
            }
            #expect(seen.contains("/slow") && seen.contains("streaming"), "status shows the upload: \(seen)")
            let status = try await onThread { copy.wait() }
            #expect(status == 0)
            try await shell("\(Binary.path) unmount \(fixture.mountpoint)", environment: env)
            #expect(!isMounted(fixture.mountpoint))
            #expect(try await fixture.cloudFiles()[fixture.remote("slow")]?.size == 67108864)
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }
}
