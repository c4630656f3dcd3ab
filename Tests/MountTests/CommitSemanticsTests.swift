#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import NetdiskEmulator
import Testing
import Uploader

/// Samples the cloud (`/__emulator/files`) and the local cache dir every 50 ms while a test runs,
/// so that a partial commit or a spool, however brief, cannot slip by unseen.
final class CloudWatcher: @unchecked Sendable {
    private let fixture: MountFixture
    private let state = Mutex(State())
    private struct State {
        var sizes: [String: Set<Int64>] = [:]
        var maxCacheBytes: Int64 = 0
        var samples = 0
        var stopped = false
    }
    private var task: Task<Void, Never>?

    init(_ fixture: MountFixture) { self.fixture = fixture }

    func start() {
        task = Task { [self] in
            while !state.withLock({ $0.stopped }) {
                if let files = try? await fixture.cloudFiles() {
                    let cache = Self.allocatedBytes(under: fixture.path + "/cache")
                    state.withLock { state in
                        for (path, file) in files { state.sizes[path, default: []].insert(file.size) }
                        state.maxCacheBytes = max(state.maxCacheBytes, cache)
                        state.samples += 1
                    }
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    func stop() async {
        state.withLock { $0.stopped = true }
        await task?.value
    }

    /// Every size seen at this cloud path (empty if it never appeared).
    func sizes(at path: String) -> Set<Int64> { state.withLock { $0.sizes[path] ?? [] } }
    /// Every cloud path ever seen.
    var paths: Set<String> { state.withLock { Set($0.sizes.keys) } }
    var maxCacheBytes: Int64 { state.withLock { $0.maxCacheBytes } }
    var samples: Int { state.withLock { $0.samples } }

    static func allocatedBytes(under directory: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { return 0 }
        var total: Int64 = 0
        while let name = walker.nextObject() as? String {
            var st = stat()
            if lstat(directory + "/" + name, &st) == 0, st.st_mode & S_IFMT == S_IFREG { total += Int64(st.st_blocks) * 512 }
        }
        return total
    }
}

/// Writes a file through the mount from a plain thread, in steps the test controls.
final class StepWriter: @unchecked Sendable {
    let path: String
    private let fd: Int32

    init(_ path: String, flags: Int32 = O_WRONLY | O_CREAT | O_TRUNC) throws {
        self.path = path
        fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw TestFailure.message("open \(path): \(String(cString: strerror(errno)))") }
    }

    /// Appends `megabytes` MiB of a pattern; the errno of the first failed write, or 0.
    func write(megabytes: Int, seed: UInt8) async throws -> Int32 {
        let fd = self.fd
        return try await onThread { () -> Int32 in
            var chunk = [UInt8](repeating: seed, count: 1 << 20)
            for index in 0..<megabytes {
                chunk[0] = UInt8(truncatingIfNeeded: index)
                let n = chunk.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n != chunk.count { return errno }
            }
            return 0
        }
    }

    func pwrite(_ bytes: [UInt8], at offset: Int64) async throws -> Int32 {
        let fd = self.fd
        return try await onThread { () -> Int32 in
            bytes.withUnsafeBytes { Glibc.pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) } == bytes.count ? 0 : errno
        }
    }

    func fsync() async throws -> Int32 {
        let fd = self.fd
        return try await onThread { Glibc.fsync(fd) == 0 ? 0 : errno }
    }

    /// close(2): 0, or its errno.
    func close() async throws -> Int32 {
        let fd = self.fd
        return try await onThread { Glibc.close(fd) == 0 ? 0 : errno }
    }
}

/// The write-semantics table of DESIGN.md, driven through the real mount with real programs while
/// the cloud is sampled throughout: a file is committed once, whole, by its writer.
@Suite(.serialized, .enabled(if: FuseSupport.shouldRun, "needs /dev/fuse (set CI=true to fail instead of skipping)"))
struct CommitSemanticsTests {
    /// `head`, `file` and `stat` of a file being streamed read from memory and never commit it.
    ///
    /// The parts kept for readers (head and tail) are a convenience that yields to a short budget:
    /// then a sniffer of sent bytes moves the file to the cached path (still exact, but spooled).
    /// At the default 64 MiB every tier's uploads can fill the budget, and in a loaded run VIP's
    /// tail and then head went, and `file` of the end spooled 300 MiB. So for the no-spool claim the
    /// mount gets a budget that holds its whole stream pool (up to 16 workers + 1 + head + tail
    /// slices: 88 MiB normal, 160 MiB VIP, 320 MiB SVIP).
    @Test(arguments: [0, 1, 2]) func readersDuringACopyNeverCommitOrSpool(vipType: Int) async throws {
        var options = EmulatorOptions()
        options.vipType = vipType
        // Slow parts, so the copy is still running while the readers come and go.
        options.faults = "superfile2:delay=250ms"
        try await withMount(["--max-memory", vipType == 2 ? "384M" : "256M"], emulatorOptions: options) { m in
            let size = 300 << 20
            try await shell("head -c \(size) /dev/urandom > \(m.local("big"))")
            let watcher = CloudWatcher(m)
            watcher.start()
            let copy = try Spawned.start(["/bin/cp", m.local("big"), m.mounted("big")])
            var readerRuns = 0
            while copy.isRunning && readerRuns < 6 {
                // cp has created the name before its first write lands: an empty file is then
                // the right answer, so the readers wait until the first 100 bytes exist.
                if (try? await shell("test $(stat -c %s \(m.mounted("big")) 2>/dev/null || echo 0) -ge 100", check: false))?.status == 0 {
                    let head = try await shell("head -c 100 \(m.mounted("big")) | cmp - <(head -c 100 \(m.local("big"))) && file \(m.mounted("big")) && stat \(m.mounted("big"))", check: false)
                    #expect(head.status == 0, "a reader of the file being written: \(head.stderr)")
                    readerRuns += 1
                }
                try await Task.sleep(for: .milliseconds(300))
            }
            let status = try await onThread { copy.wait() }
            await watcher.stop()
            #expect(status == 0, "cp succeeds")
            #expect(readerRuns >= 2, "the readers ran while cp was writing (\(readerRuns) runs)")
            #expect(watcher.sizes(at: m.remote("big")).subtracting([Int64(size)]).isEmpty,
                    "no size but the final one is ever visible: \(watcher.sizes(at: m.remote("big")).sorted())")
            let switches = m.daemonLog().split(separator: "\n").filter { $0.contains("switching to the cached path") }
            #expect(watcher.maxCacheBytes < 64 << 20, "readers did not force a spool: \(watcher.maxCacheBytes) bytes in the cache dir; \(switches)")
            let md5 = try await shell("md5sum < \(m.local("big")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await m.cloudFiles()[m.remote("big")]?.md5 == md5)
            #expect(m.daemonLog().components(separatedBy: "committed \(m.remote("big"))").count == 2, "committed exactly once")
        }
    }

    /// `{ a; sleep; b; } > f`: the first child's exit closes its inherited descriptor; only the
    /// shell (the opener) closing commits, once, with every byte.
    @Test(arguments: [0, 1, 2]) func shellGroupCommitsOnceWhole(vipType: Int) async throws {
        var options = EmulatorOptions()
        options.vipType = vipType
        try await withMount(emulatorOptions: options) { m in
            let watcher = CloudWatcher(m)
            watcher.start()
            try await shell("{ head -c 40M /dev/zero; sleep 1; head -c 40M /dev/zero; } > \(m.mounted("group"))")
            // The commit happened at the shell's close, before it exited: no waiting for release.
            let committed = try await m.cloudFiles()[m.remote("group")]
            await watcher.stop()
            #expect(committed?.size == 80 << 20, "the shell's close committed all 80 MiB")
            #expect(watcher.samples > 10, "the cloud was sampled while the group ran")
            #expect(watcher.sizes(at: m.remote("group")).subtracting([80 << 20]).isEmpty,
                    "only the whole file was ever visible: \(watcher.sizes(at: m.remote("group")).sorted())")
            let md5 = try await shell("head -c 80M /dev/zero | md5sum | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(committed?.md5 == md5)
        }
    }

    /// `mv a.txt t.bin` while t.bin is being written: t.bin names a.txt's content, and the
    /// writer's bytes are committed nowhere.
    @Test func renameOntoAFileBeingWrittenReplacesIt() async throws {
        try await withMount { m in
            let watcher = CloudWatcher(m)
            watcher.start()
            let writer = try StepWriter(m.mounted("t.bin"))
            #expect(try await writer.write(megabytes: 20, seed: 7) == 0)
            try await shell("echo 'the renamed file' > \(m.mounted("a.txt")) && mv \(m.mounted("a.txt")) \(m.mounted("t.bin"))")
            let late = try await writer.write(megabytes: 40, seed: 9)
            let closed = try await writer.close()
            #expect(late == EIO || closed == EIO, "the replaced writer is told its bytes are gone (write \(late), close \(closed))")
            try await Task.sleep(for: .milliseconds(500))
            await watcher.stop()
            #expect(try await shell("cat \(m.mounted("t.bin"))").stdout == "the renamed file\n")
            let cloud = try await m.cloudFiles()
            #expect(cloud[m.remote("t.bin")]?.size == 17)
            #expect(cloud[m.remote("a.txt")] == nil)
            #expect(watcher.sizes(at: m.remote("t.bin")).subtracting([17]).isEmpty,
                    "the writer's bytes never appeared: \(watcher.sizes(at: m.remote("t.bin")).sorted())")
        }
    }

    /// rm of a file being written: nothing is committed, and the handle answers EIO rather than
    /// pretending (writes that vanish, reads of zeros).
    @Test func unlinkWhileOpenCommitsNothingAndSaysSo() async throws {
        try await withMount { m in
            let watcher = CloudWatcher(m)
            watcher.start()
            let path = m.mounted("scratch")
            let (late, readBack, closed) = try await onThread { () -> (Int32, Int32, Int32) in
                let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
                guard fd >= 0 else { return (errno, 0, 0) }
                let bytes = [UInt8](repeating: 1, count: 6 << 20)
                _ = write(fd, bytes, bytes.count)
                unlink(path)
                let late = write(fd, bytes, 4096) < 0 ? errno : 0
                var buffer = [UInt8](repeating: 0, count: 4096)
                // EIO, or (from the kernel's page cache) the very bytes written: never anything else.
                let n = pread(fd, &buffer, 4096, 0)
                let readBack: Int32 = n < 0 ? errno : (n == 4096 && buffer.allSatisfy { $0 == 1 } ? EIO : -1)
                return (late, readBack, close(fd) == 0 ? 0 : errno)
            }
            try await Task.sleep(for: .milliseconds(300))
            await watcher.stop()
            #expect(late == EIO && readBack == EIO, "write \(late), read \(readBack) after unlink")
            #expect(closed == 0 || closed == EIO, "close: \(closed)")
            #expect(watcher.sizes(at: m.remote("scratch")).isEmpty, "nothing was ever committed")
            try await shell("test ! -e \(path)")
        }
    }

    /// A file being written is renamed, then its directory is: it commits at the final path, and
    /// nothing (not even the old directory) appears at the old ones.
    @Test(arguments: [0, 1, 2]) func renameOfAFileBeingWrittenAndOfItsDirectory(vipType: Int) async throws {
        var options = EmulatorOptions()
        options.vipType = vipType
        try await withMount(emulatorOptions: options) { m in
            try await shell("mkdir \(m.mounted("d1"))")
            let watcher = CloudWatcher(m)
            watcher.start()
            let writer = try StepWriter(m.mounted("d1/f.part"))
            #expect(try await writer.write(megabytes: 12, seed: 1) == 0)
            try await shell("mv \(m.mounted("d1/f.part")) \(m.mounted("d1/f.bin"))")
            #expect(try await writer.write(megabytes: 12, seed: 2) == 0)
            try await shell("mv \(m.mounted("d1")) \(m.mounted("d2"))")
            #expect(try await writer.write(megabytes: 12, seed: 3) == 0)
            #expect(try await writer.close() == 0, "close commits at the new path")
            await watcher.stop()
            let cloud = try await m.cloudFiles()
            #expect(cloud[m.remote("d2/f.bin")]?.size == 36 << 20)
            let stray = watcher.paths.filter { $0.hasPrefix(m.remote("d1") + "/") || $0.hasSuffix("f.part") }
            #expect(cloud[m.remote("d1")] == nil, "the old directory is not re-created")
            #expect(stray.isEmpty, "nothing at the old paths, ever: \(stray.sorted())")
            try await shell("test ! -e \(m.mounted("d1")) && test $(stat -c %s \(m.mounted("d2/f.bin"))) = \(36 << 20)")
            // Read back: 12 MiB of each seed, with the chunk index in each MiB's first byte.
            try await shell("""
                python3 -c "
                import sys
                data = open('\(m.mounted("d2/f.bin"))', 'rb').read()
                for i in range(36):
                    mib = data[i << 20:(i + 1) << 20]
                    assert mib[0] == i % 12 and set(mib[1:]) == {i // 12 + 1}, i
                "
                """)
        }
    }

    /// rsync closes its temp file and renames it at once, before the kernel's release arrives.
    @Test func renameRightAfterCloseNeverAnswersBusy() async throws {
        try await withMount { m in
            try await onThread {
                for index in 0..<40 {
                    let temp = m.mounted(".f\(index).tmp"), final = m.mounted("f\(index)")
                    let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
                    guard fd >= 0 else { throw TestFailure.message("open: \(errno)") }
                    let text = Array("file \(index)\n".utf8)
                    guard write(fd, text, text.count) == text.count, close(fd) == 0 else { throw TestFailure.message("write/close: \(errno)") }
                    guard rename(temp, final) == 0 else { throw TestFailure.message("rename \(index): \(String(cString: strerror(errno)))") }
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            let cloud = try await m.cloudFiles()
            for index in 0..<40 {
                #expect(cloud[m.remote("f\(index)")]?.size == Int64("file \(index)\n".utf8.count))
                #expect(cloud[m.remote(".f\(index).tmp")] == nil)
            }
        }
    }

    /// Two write handles on one file: the first close commits nothing; the last one commits both.
    @Test func twoWriteHandlesTheLastCloseCommits() async throws {
        try await withMount { m in
            let first = try StepWriter(m.mounted("shared"))
            let second = try StepWriter(m.mounted("shared"), flags: O_WRONLY)
            #expect(try await first.write(megabytes: 1, seed: 1) == 0)
            #expect(try await second.pwrite([UInt8](repeating: 2, count: 1000), at: 1 << 20) == 0)
            #expect(try await first.close() == 0)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await m.cloudFiles()[m.remote("shared")] == nil, "a close with another write handle open commits nothing")
            #expect(try await second.close() == 0)
            #expect(try await m.cloudFiles()[m.remote("shared")]?.size == Int64(1 << 20) + 1000, "the last close committed both")
        }
    }

    /// While a small file's close waits on a slow commit, metadata is not held behind it: `stat`,
    /// `ls -l` and `access` answer at once, and a reader gets every byte. (The reader itself waits
    /// for the commit to end, since the session holds its lock through the commit; the test prints how long.)
    @Test func aSlowSmallFileCommitHoldsNoMetadataCall() async throws {
        try await withMount { m in
            try await shell("head -c \(1 << 20) /dev/urandom > \(m.local("small"))")
            try await shell("curl -sf -X POST --data 'superfile2:delay=4s,create:delay=4s' \(m.emulator.baseURL)/__emulator/faults")
            let copy = try Spawned.start(["/bin/cp", m.local("small"), m.mounted("small")])
            try await Task.sleep(for: .seconds(1))
            #expect(copy.isRunning, "cp is still in its close, waiting on the commit")
            for probe in ["stat \(m.mounted("small"))", "ls -l \(m.mountpoint)", "test -w \(m.mounted("small"))"] {
                let started = Date()
                let result = try await shell("timeout 20 \(probe)", check: false)
                let seconds = Date().timeIntervalSince(started)
                #expect(result.status == 0 && seconds < 2, "\(probe): \(seconds) s, exit \(result.status) \(result.stderr)")
            }
            let started = Date()
            let read = try await shell("timeout 20 cat \(m.mounted("small")) | cmp - \(m.local("small"))", check: false)
            print("aSlowSmallFileCommitHoldsNoMetadataCall: a reader during the commit took \(Date().timeIntervalSince(started)) s")
            #expect(read.status == 0, "a reader during the commit gets every byte: \(read.stderr)")
            #expect(try await onThread { copy.wait() } == 0)
            try await shell("curl -sf -X POST --data '' \(m.emulator.baseURL)/__emulator/faults")
            let md5 = try await shell("md5sum < \(m.local("small")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await m.cloudFiles()[m.remote("small")]?.md5 == md5)
            #expect(m.daemonLog().components(separatedBy: "committed \(m.remote("small"))").count == 2, "committed exactly once")
        }
    }

    /// A program that opens in one thread and closes in another still gets its commit at close.
    @Test func closeFromAnotherThreadOfTheOpenerCommits() async throws {
        try await withMount { m in
            let path = m.mounted("threads")
            let fd = try await onThread { () -> Int32 in open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
            #expect(fd >= 0)
            let closed = try await onThread { () -> Int32 in
                let bytes = [UInt8](repeating: 5, count: 3 << 20)
                guard write(fd, bytes, bytes.count) == bytes.count else { return errno }
                return close(fd) == 0 ? 0 : errno
            }
            #expect(closed == 0)
            #expect(try await m.cloudFiles()[m.remote("threads")]?.size == 3 << 20, "committed when close returned")
        }
    }

    /// O_EXCL is decided by the cloud: a name made behind the mount's back (and so missing from its
    /// cached listing) is found, as git's lock files need.
    @Test func exclusiveCreateSeesFilesMadeBehindTheMountsBack() async throws {
        try await withMount { m in
            try await shell("mkdir \(m.mounted("repo")) && ls \(m.mounted("repo"))")
            try await shell("echo lock > \(m.local("index.lock"))")
            try await shell("\(Binary.path) put --endpoint \(m.emulator.baseURL) \(m.local("index.lock")) \(m.remote("repo/index.lock"))",
                            environment: m.environment)
            let (excl, plain) = try await onThread { () -> (Int32, Int32) in
                let fd = open(m.mounted("repo/index.lock"), O_WRONLY | O_CREAT | O_EXCL, 0o644)
                let exclErrno = fd >= 0 ? 0 : errno
                if fd >= 0 { close(fd) }
                let other = open(m.mounted("repo/other.lock"), O_WRONLY | O_CREAT | O_EXCL, 0o644)
                let otherErrno = other >= 0 ? 0 : errno
                if other >= 0 { close(other) }
                return (exclErrno, otherErrno)
            }
            #expect(excl == EEXIST, "O_EXCL of a name only the cloud knows: \(excl)")
            #expect(plain == 0, "O_EXCL of a free name succeeds")
            #expect(try await m.cloudFiles()[m.remote("repo/index.lock")]?.size == 5, "the cloud's file is untouched")
        }
    }

    /// `cp` looks the new name up (a listing of its directory) and then opens it O_EXCL: a listing
    /// read from the cloud under a second ago answers the O_EXCL check, so a new file costs one
    /// listing, not two (a round trip per copy). One older than a second is read again, so a file
    /// made behind the mount's back since is still found.
    @Test func exclusiveCreateTrustsOnlyAListingUnderASecondOld() async throws {
        try await withMount { m in
            try await shell("echo a > \(m.local("a")) && head -c 300000 /dev/urandom > \(m.local("src"))")
            // The directory is made behind the mount's back, so no listing of it is cached.
            try await shell("\(Binary.path) put --endpoint \(m.emulator.baseURL) \(m.local("a")) \(m.remote("dir/a"))",
                            environment: m.environment)
            try await shell("ls \(m.mounted("")) > /dev/null")
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            // GNU cp stats the name, then opens it O_WRONLY|O_CREAT|O_EXCL.
            try await shell("cp \(m.local("src")) \(m.mounted("dir/new"))")
            let data = Data(try await shell("curl -sf \(m.emulator.baseURL)/__emulator/stats").stdout.utf8)
            let calls = (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["calls"] as? [String: Int] ?? [:]
            #expect(calls["list"] == 1, "the lookup's listing answers the O_EXCL check: \(calls)")
            try await shell("cmp \(m.local("src")) \(m.mounted("dir/new"))")

            // Over a second later, a name made behind the mount's back is found.
            try await shell("sleep 1.2")
            try await shell("\(Binary.path) put --endpoint \(m.emulator.baseURL) \(m.local("a")) \(m.remote("dir/index.lock"))",
                            environment: m.environment)
            let excl = try await onThread { () -> Int32 in
                let fd = open(m.mounted("dir/index.lock"), O_WRONLY | O_CREAT | O_EXCL, 0o644)
                if fd >= 0 { close(fd); return 0 }
                return errno
            }
            #expect(excl == EEXIST, "O_EXCL after the listing aged: \(excl)")
        }
    }

    /// A miss remembered from an older listing (the negative cache, 5 s) must not hide a file that
    /// a fresher listing holds: `stat` misses `x`, another machine makes it, `ls` refreshes the
    /// listing (TTL 1 s) and shows it, and O_EXCL at once answers from that listing: EEXIST.
    @Test func exclusiveCreateIsNotFooledByAnOlderMiss() async throws {
        try await withMount(["--dir-cache-ttl", "1"]) { m in
            try await shell("echo a > \(m.local("a"))")
            try await shell("\(Binary.path) put --endpoint \(m.emulator.baseURL) \(m.local("a")) \(m.remote("dir/a"))",
                            environment: m.environment)
            try await shell("! stat \(m.mounted("dir/x")) 2> /dev/null")
            try await shell("\(Binary.path) put --endpoint \(m.emulator.baseURL) \(m.local("a")) \(m.remote("dir/x"))",
                            environment: m.environment)
            try await shell("sleep 1.2")
            // Refreshes the listing (it answers once the refresh lands, or after 0.5 s with the old one).
            try await shell("ls \(m.mounted("dir")) > /dev/null")
            let excl = try await onThread { () -> Int32 in
                let fd = open(m.mounted("dir/x"), O_WRONLY | O_CREAT | O_EXCL, 0o644)
                if fd >= 0 { close(fd); return 0 }
                return errno
            }
            #expect(excl == EEXIST, "O_EXCL of a file the fresh listing holds: \(excl)")
            #expect(try await m.cloudFiles()[m.remote("dir/x")]?.size == 2, "the other machine's file is untouched")
        }
    }

    /// The call takes effect, its answer is lost (`reset-after`): every user-visible call still
    /// reports success, and the cloud is right.
    @Test func lostAnswersStillSucceed() async throws {
        try await withMount { m in
            func fault(_ spec: String) async throws {
                try await shell("curl -sf -X POST --data '\(spec)' \(m.emulator.baseURL)/__emulator/faults")
            }
            try await shell("echo a > \(m.mounted("a.txt"))")
            try await fault("filemanager:reset-after:n=1")
            try await shell("mv \(m.mounted("a.txt")) \(m.mounted("b.txt"))")
            try await shell("test ! -e \(m.mounted("a.txt")) && test \"$(cat \(m.mounted("b.txt")))\" = a")

            try await fault("create:reset-after:n=1")
            try await shell("mkdir \(m.mounted("e"))")
            try await shell("test -d \(m.mounted("e"))")

            for (name, size) in [("five", 5 << 20), ("thirty", 30 << 20)] {
                try await shell("head -c \(size) /dev/urandom > \(m.local(name))")
                try await fault("create:reset-after:n=1")
                try await shell("cp \(m.local(name)) \(m.mounted(name))")
                try await shell("cmp \(m.local(name)) \(m.mounted(name))")
            }
            try await fault("filemanager:reset-after:n=1")
            try await shell("rm \(m.mounted("b.txt"))")
            try await fault("")

            let cloud = try await m.cloudFiles()
            #expect(cloud[m.remote("a.txt")] == nil && cloud[m.remote("b.txt")] == nil)
            #expect(cloud[m.remote("e")] != nil)
            for (name, size) in [("five", 5 << 20), ("thirty", 30 << 20)] {
                let md5 = try await shell("md5sum < \(m.local(name)) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(cloud[m.remote(name)]?.size == Int64(size))
                #expect(cloud[m.remote(name)]?.md5 == md5, "\(name) is exact")
            }
            let staged = cloud.keys.filter { $0.contains(".netdiskfs-staging/") }
            #expect(staged.isEmpty, "nothing left in staging: \(staged)")
            let stats = try await shell("curl -sf \(m.emulator.baseURL)/__emulator/stats").stdout
            #expect(stats.contains("faults_fired"), "\(stats)")
        }
    }

    /// kill -9 of the daemon while a file is open on the cached path (so a staging file and a
    /// cache file exist), then remount: both are swept, and nothing partial is visible.
    @Test func killThenRemountSweepsStagingAndCache() async throws {
        let fixture = try await MountFixture.make()
        do {
            try await fixture.mount()
            let writer = try StepWriter(fixture.mounted("victim"))
            #expect(try await writer.write(megabytes: 24, seed: 4) == 0)
            // A write behind what was sent: the stream falls back, committing what it sent to staging.
            #expect(try await writer.pwrite(Array("header".utf8), at: 0) == 0)
            #expect(try await writer.write(megabytes: 4, seed: 5) == 0)
            let staged = try await fixture.cloudFiles().keys.filter { $0.contains(".netdiskfs-staging/") }
            #expect(!staged.isEmpty, "the fallback left a staging file")
            #expect(CloudWatcher.allocatedBytes(under: fixture.path + "/cache/files") > 0, "and a cache file")
            kill(try #require(fixture.daemon?.pid), SIGKILL)
            _ = try? await writer.close()
            await fixture.unmount()
            try await fixture.mount()
            let cloud = try await fixture.cloudFiles()
            #expect(cloud.keys.filter { $0.contains(".netdiskfs-staging/") }.isEmpty, "staging swept: \(cloud.keys.sorted())")
            #expect(cloud[fixture.remote("victim")] == nil, "nothing partial is visible")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: fixture.path + "/cache/files")) ?? []
            #expect(left.isEmpty, "cache swept: \(left)")
            #expect(fixture.daemonLog().contains("swept"), "the sweep is reported in the log")
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    /// fsync after the upload failed for good returns EIO (not 0, not EAGAIN), and so does close.
    @Test func fsyncReportsAFailedUpload() async throws {
        var options = EmulatorOptions()
        // From the 3rd part on: a mount that first probes how to stream (2 parts) gets it on the file.
        options.faults = "superfile2:errno=31364:n=3:count=100000"
        try await withMount(emulatorOptions: options) { m in
            let writer = try StepWriter(m.mounted("doomed"))
            _ = try await writer.write(megabytes: 16, seed: 3)
            try await Task.sleep(for: .seconds(2))
            _ = try await writer.write(megabytes: 1, seed: 3)
            #expect(try await writer.fsync() == EIO, "fsync reports the failure")
            #expect(try await writer.close() == EIO, "close reports it too")
            #expect(try await m.cloudFiles()[m.remote("doomed")] == nil)
        }
    }

    /// --allow-other would otherwise let every local user read, overwrite and delete the account.
    @Test func allowOtherImpliesDefaultPermissions() async throws {
        try await withMount(["--allow-other"]) { m in
            let line = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
                .split(separator: "\n").first { $0.contains(" \(m.mountpoint) ") }
            let options = String(line ?? "")
            #expect(options.contains("default_permissions") && options.contains("allow_other"), "\(options)")
            // Another user: kept out where the modes say so, and the owner of what they create.
            try await shell("mkdir \(m.mounted("shared")) && chmod 1777 \(m.mounted("shared"))")
            let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
            try await shell("\(nobody) sh -c 'echo hi > \(m.mounted("shared/theirs")) && mkdir \(m.mounted("shared/dir"))'")
            #expect(try await shell("stat -c '%u %g' \(m.mounted("shared/theirs")) \(m.mounted("shared/dir"))").stdout == "65534 65534\n65534 65534\n")
            let denied = try await shell("\(nobody) sh -c 'echo x > \(m.mounted("mine"))'", check: false)
            #expect(denied.status != 0 && denied.stderr.contains("Permission denied"), "\(denied.stderr)")
        }
    }
}
