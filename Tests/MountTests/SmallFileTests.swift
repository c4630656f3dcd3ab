#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NetdiskEmulator
import Testing
import Uploader

/// Small files at cloud latency: few calls per file by default, and `--writeback`'s durable queue.
struct SmallFileTests {
    static func stats(_ m: MountFixture) async throws -> [String: Int] {
        let data = Data(try await shell("curl -sf \(m.emulator.baseURL)/__emulator/stats").stdout.utf8)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        return (object["calls"] as? [String: Any] ?? [:]).compactMapValues { $0 as? Int }
    }

    /// Random small files under `local(name)/d` (and `d/e`), and their tarball.
    static func makeTree(_ m: MountFixture, _ name: String, files: Int) async throws {
        try await shell("""
            mkdir -p \(m.local(name))/d/e && cd \(m.local(name)) && \
            for i in $(seq \(files)); do head -c $(( (RANDOM % 60 + 1) * 16384 )) /dev/urandom > d/$([ $((i % 2)) = 0 ] && echo e/)f$i; done && \
            tar cf \(m.local(name)).tar d
            """)
    }

    static func setFaults(_ m: MountFixture, _ spec: String) async throws {
        try await shell("curl -sf -X POST --data '\(spec)' \(m.emulator.baseURL)/__emulator/faults")
    }

    /// A new small file costs precreate (rapid upload asked in the same call), superfile2 and
    /// create: no rapid create, no locateupload per file, no listing caused by our own writes.
    /// tar opens every file O_EXCL, which must see names made behind the mount's back: that costs
    /// at most one listing per directory per second, not one per file.
    @Test func aNewSmallFileCostsAtMostThreeCalls() async throws {
        try await withMount { m in
            try await Self.makeTree(m, "t", files: 40)
            try await shell("mkdir \(m.mounted("x"))")
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            let started = Date()
            try await shell("tar xf \(m.local("t")).tar -C \(m.mounted("x"))")
            let seconds = Date().timeIntervalSince(started)
            let calls = try await Self.stats(m)
            // tar made two directories (d, d/e): one create each. The upload host is asked once and
            // reused while locateupload's answer is valid (a minute), not once per file.
            #expect((calls["locateupload"] ?? 0) <= 1, "\(calls)")
            let uploadCalls = (calls["precreate"] ?? 0) + (calls["superfile2"] ?? 0) + (calls["create"] ?? 0) - 2
            #expect(Double(uploadCalls) / 40 <= 3, "upload calls per new small file: \(Double(uploadCalls) / 40) (\(calls))")
            #expect(Double(calls["list"] ?? 0) <= 2 * (seconds.rounded(.up) + 1), "O_EXCL: ≤ 1 listing per directory per second (\(seconds) s): \(calls)")
            #expect(Set(calls.keys).isSubset(of: ["precreate", "superfile2", "create", "locateupload", "list"]), "\(calls)")
            try await shell("diff -r \(m.local("t"))/d \(m.mounted("x/d"))")
            // A stat storm on one directory: one listing per TTL, here none (cached).
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            try await shell("for i in $(seq 5); do stat \(m.mounted("x/d"))/* > /dev/null; ls -l \(m.mounted("x/d")) > /dev/null; done")
            #expect((try await Self.stats(m)["list"] ?? 0) <= 1)
            // mkdir -p of a deep path: one call per missing level.
            try await shell("curl -sf -X POST \(m.emulator.baseURL)/__emulator/stats/reset")
            try await shell("mkdir -p \(m.mounted("x/deep/a/b/c/d"))")
            let mkdir = try await Self.stats(m)
            // (A listing of x may be due again: its TTL can pass on a loaded machine.)
            #expect(mkdir["create"] == 5 && (mkdir["list"] ?? 0) <= 1 && mkdir.values.reduce(0, +) <= 6, "one create per level: \(mkdir)")
        }
    }

    /// `--writeback`: close() returns before the upload; reads see the queued bytes; a kill -9 with
    /// the queue full loses nothing, and the remount commits every file once, exact.
    @Test(arguments: [0, 2]) func writebackSurvivesKillNineAndCommitsEveryFileOnce(vipType: Int) async throws {
        var options = EmulatorOptions()
        options.vipType = vipType
        let m = try await MountFixture.make(emulatorOptions: options)
        do {
            try await m.mount(["--writeback"])
            try await Self.makeTree(m, "t", files: 30)
            // Parts crawl: the queue is full when the daemon dies. (At 2 s a part, a loaded machine's
            // slow tar and rename let 23 of the 30 files through first.)
            try await Self.setFaults(m, "superfile2:delay=4000ms")
            let watcher = CloudWatcher(m)
            watcher.start()
            let started = Date()
            try await shell("tar xf \(m.local("t")).tar -C \(m.mounted(""))")
            let closeTime = Date().timeIntervalSince(started)
            // Waiting for each upload would take 30 × 4 s; for 4 uploaders to drain the queue, 30 s.
            // Spooling costs two fsyncs per file, slow on a busy disk: 30 s tells the two apart.
            #expect(closeTime < 30, "close() did not wait for 30 uploads of 4 s each: \(closeTime) s")
            // Renamed and deleted while queued (a rename of a file whose upload is in flight waits for it).
            try await shell("mv \(m.mounted("d/f1")) \(m.mounted("d/renamed")) && rm \(m.mounted("d/f3"))")
            try await shell("mv \(m.local("t"))/d/f1 \(m.local("t"))/d/renamed && rm \(m.local("t"))/d/f3")
            // From here on, uploads hang: the files not yet committed are surely still queued at the
            // kill, however slow this machine's reads below are (on CI the queue once drained first).
            try await Self.setFaults(m, "superfile2:delay=60s")
            let queued = try await m.cloudFiles().keys.filter { $0.hasPrefix(m.remote("d/")) }.count
            #expect(queued <= 20, "most files are still queued when the daemon dies: \(queued) committed")
            // Reads of queued files return their bytes.
            try await shell("diff -r \(m.local("t"))/d \(m.mounted("d"))")
            kill(m.daemon!.pid, SIGKILL)
            _ = try await onThread { m.daemon!.wait() }
            _ = try await shell("fusermount3 -u \(m.mountpoint) || fusermount3 -u -z \(m.mountpoint)", check: false)
            try await Self.setFaults(m, "")
            try await m.mount(["--writeback"])
            let sync = try await shell("\(Binary.path) sync \(m.mountpoint)", environment: m.environment, check: false)
            #expect(sync.status == 0, "\(sync.stdout)\(sync.stderr)")
            await watcher.stop()
            #expect(m.daemonLog().contains("write-back queue: resuming"))
            try await shell("diff -r \(m.local("t"))/d \(m.mounted("d"))")
            let cloud = try await m.cloudFiles()
            let names = cloud.keys.filter { $0.hasPrefix(m.remote("d/")) }
            #expect(!names.contains { $0.contains("(") }, "no duplicate: \(names.sorted())")
            #expect(cloud[m.remote("d/f1")] == nil && cloud[m.remote("d/f3")] == nil && cloud[m.remote("d/renamed")] != nil)
            for file in try FileManager.default.subpathsOfDirectory(atPath: m.local("t") + "/d") {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: m.local("t") + "/d/" + file, isDirectory: &isDirectory), !isDirectory.boolValue
                else { continue }
                let md5 = try await shell("md5sum < \(m.local("t"))/d/\(file) | cut -d' ' -f1").stdout
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(cloud[m.remote("d/" + file)]?.md5 == md5, "\(file) committed exact")
                #expect(watcher.sizes(at: m.remote("d/" + file)).count == 1, "\(file): only its whole size was ever visible")
            }
        } catch {
            await m.tearDown()
            throw error
        }
        await m.tearDown()
    }

    /// A permanent failure: the file stays queued, `status` shows why, and `sync` lists it and
    /// exits 1; once the cause is gone, `sync` exits 0 and the file is committed.
    @Test func syncReportsAFailingUploadAndExitsNonZero() async throws {
        try await withMount(["--writeback"]) { m in
            try await Self.setFaults(m, "precreate:errno=31062:p=1")
            try await shell("head -c 300000 /dev/urandom > \(m.local("doomed")) && cp \(m.local("doomed")) \(m.mounted("doomed"))")
            let sync = try await shell("\(Binary.path) sync \(m.mountpoint)", environment: m.environment, check: false)
            #expect(sync.status == 1)
            #expect(sync.stderr.contains(m.remote("doomed")) && sync.stderr.contains("31062"), "\(sync.stderr)")
            let status = try await shell("\(Binary.path) status", environment: m.environment)
            #expect(status.stdout.contains("failing") && status.stdout.contains(m.remote("doomed")), "\(status.stdout)")
            try await shell("cmp \(m.local("doomed")) \(m.mounted("doomed"))")
            try await Self.setFaults(m, "")
            let again = try await shell("\(Binary.path) sync \(m.mountpoint)", environment: m.environment, check: false)
            #expect(again.status == 0, "\(again.stderr)")
            let md5 = try await shell("md5sum < \(m.local("doomed")) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await m.cloudFiles()[m.remote("doomed")]?.md5 == md5)
        }
    }

    /// The queue's disk use has a cap of its own: past it, close() waits for uploads to make room.
    @Test func theQueueKeepsToItsDiskCap() async throws {
        try await withMount(["--writeback", "--writeback-max-disk", "1M", "--writeback-uploads", "1"]) { m in
            try await Self.setFaults(m, "superfile2:delay=300ms")
            let spool = m.path + "/state/netdiskfs/writeback-3141592653/files"
            let sampler = Task { () -> Int64 in
                var peak: Int64 = 0
                while !Task.isCancelled {
                    peak = max(peak, CloudWatcher.allocatedBytes(under: spool))
                    try? await Task.sleep(for: .milliseconds(20))
                }
                return peak
            }
            let started = Date()
            try await shell("for i in $(seq 8); do head -c 400000 /dev/urandom > \(m.local(""))f$i; cp \(m.local(""))f$i \(m.mounted(""))f$i; done")
            let elapsed = Date().timeIntervalSince(started)
            let sync = try await shell("\(Binary.path) sync \(m.mountpoint)", environment: m.environment, check: false)
            sampler.cancel()
            let peak = await sampler.value
            #expect(sync.status == 0)
            #expect(peak <= (1 << 20) + (64 << 10), "the spool stayed within its 1 MiB cap: \(peak) bytes")
            #expect(elapsed > 0.6, "close() waited for room (8 files of 400 kB through a 1 MiB queue): \(elapsed) s")
            let cloud = try await m.cloudFiles()
            for i in 1...8 {
                let md5 = try await shell("md5sum < \(m.local(""))f\(i) | cut -d' ' -f1").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(cloud[m.remote("f\(i)")]?.md5 == md5)
            }
        }
    }

    /// `netdiskfs unmount` returns only after the queue is empty.
    @Test func unmountWaitsForTheQueue() async throws {
        let m = try await MountFixture.make()
        do {
            try await m.mount(["--writeback"])
            try await Self.setFaults(m, "superfile2:delay=500ms")
            try await shell("for i in $(seq 8); do head -c 200000 /dev/urandom > \(m.mounted(""))f$i; done")
            #expect(try await m.cloudFiles().keys.filter { $0.hasPrefix(m.remote("f")) }.count < 8, "still queued")
            let unmount = try await shell("\(Binary.path) unmount \(m.mountpoint)", environment: m.environment, check: false)
            #expect(unmount.status == 0, "\(unmount.stderr)")
            let cloud = try await m.cloudFiles()
            #expect((1...8).allSatisfy { cloud[m.remote("f\($0)")]?.size == 200_000 }, "every queued file was committed before unmount returned")
        } catch {
            await m.tearDown()
            throw error
        }
        await m.tearDown()
    }
}
