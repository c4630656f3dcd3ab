#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NetdiskEmulator
import Testing
import Uploader

/// The repository's root (for files it ships: the fstab helper, the systemd unit, the docs).
enum Repository {
    static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }
}

/// Running it like a system filesystem: fstab, systemd, and progress where people look.
@Suite(.serialized, .enabled(if: FuseSupport.shouldRun, "needs /dev/fuse (set CI=true to fail instead of skipping)"))
struct OperationsTests {
    /// An fstab line of type fuse.netdiskfs mounts with mount(8) through the shipped helper.
    @Test func mountsFromAnFstabLine() async throws {
        let fixture = try await MountFixture.make()
        defer { Task { await fixture.tearDown() } }
        // mount(8) looks for /sbin/mount.fuse.netdiskfs; `scripts/setup` installs it the same way.
        try await shell("install -m 0755 \(Repository.root)/packaging/mount.fuse.netdiskfs /sbin/mount.fuse.netdiskfs")
        let fstab = fixture.path + "/fstab"
        try "netdiskfs \(fixture.mountpoint) fuse.netdiskfs noauto,_netdev,x-systemd.automount,emulator_url=\(fixture.emulator.baseURL),cache_dir=\(fixture.path)/cache,max_memory=32M,dir_cache_ttl=5 0 0\n"
            .write(toFile: fstab, atomically: true, encoding: .utf8)
        var environment = fixture.environment
        environment["NETDISKFS_BIN"] = Binary.path
        try await shell("mount -T \(fstab) \(fixture.mountpoint)", environment: environment)
        #expect(isMounted(fixture.mountpoint))
        try await shell("head -c 5000000 /dev/urandom > \(fixture.local("f")) && cp \(fixture.local("f")) \(fixture.mounted("f")) && cmp \(fixture.local("f")) \(fixture.mounted("f"))")
        try await shell("umount \(fixture.mountpoint)")
        #expect(!isMounted(fixture.mountpoint))
        #expect(try await fixture.cloudFiles()[fixture.remote("f")]?.size == 5_000_000)
    }

    /// Type=notify: READY=1 once the mount is live, STOPPING=1 when it is asked to stop.
    @Test func tellsSystemdWhenReadyAndStopping() async throws {
        let fixture = try await MountFixture.make()
        defer { Task { await fixture.tearDown() } }
        let socketPath = fixture.path + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var environment = fixture.environment
        environment["NOTIFY_SOCKET"] = socketPath
        let daemon = try Spawned.start([Binary.path, "mount", "-f", "--endpoint", fixture.emulator.baseURL,
                                        "--cache-dir", fixture.path + "/cache", fixture.mountpoint],
                                       environment: environment, output: fixture.path + "/mount.stderr")
        let receive = { () async throws -> [String] in
            try await onThread { () -> [String] in
                var messages: [String] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                // Every datagram until the one asked for, or the timeout.
                while true {
                    let n = recv(fd, &buffer, buffer.count, 0)
                    guard n > 0 else { return messages }
                    messages.append(String(decoding: buffer[0..<n], as: UTF8.self))
                    if messages.last!.contains("READY=1") || messages.last!.contains("STOPPING=1") { return messages }
                }
            }
        }
        let ready = try await receive()
        #expect(ready.last?.contains("READY=1") == true, "\(ready)")
        #expect(isMounted(fixture.mountpoint), "READY=1 came once the mount was live")
        kill(daemon.pid, SIGTERM)
        let stopping = try await receive()
        #expect(stopping.last?.contains("STOPPING=1") == true, "\(stopping)")
        let status = try await onThread { daemon.wait() }
        #expect(status == 0)
    }

    /// The shipped unit passes `systemd-analyze verify`, with no warnings.
    @Test func theSystemdUnitVerifies() async throws {
        let directory = NSTemporaryDirectory() + "unit-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // An instance of the template, with the binary this test built (CI has not installed one).
        let unit = try String(contentsOfFile: Repository.root + "/packaging/systemd/netdiskfs@.service", encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/bin/netdiskfs", with: Binary.path)
        let path = directory + "/netdiskfs@root-baidu.service"
        try unit.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await shell("systemd-analyze verify \(path)", check: false)
        #expect(result.status == 0 && result.stderr.isEmpty && result.stdout.isEmpty, "\(result.stdout)\(result.stderr)")
    }

    /// getfattr shows an upload's progress, and `status --watch` draws it.
    @Test func progressShowsInExtendedAttributesAndStatusWatch() async throws {
        var options = EmulatorOptions()
        options.faults = "superfile2:delay=300ms"
        try await withMount(emulatorOptions: options) { m in
            try await shell("head -c 62914560 /dev/urandom > \(m.local("slow"))")
            let copy = try Spawned.start(["/bin/cp", m.local("slow"), m.mounted("slow")])
            var seen = ""
            for _ in 0..<100 where !seen.contains("state=streaming") {
                try await Task.sleep(for: .milliseconds(100))
                seen = try await shell("getfattr --only-values -n user.netdiskfs.upload \(m.mounted("slow"))", check: false).stdout
            }
            #expect(seen.contains("state=streaming") && seen.contains("bytes_acknowledged="), "\(seen)")
            let uploads = try await shell("getfattr --only-values -n user.netdiskfs.uploads \(m.mountpoint)").stdout
            #expect(uploads == "1", "mount-wide counter: \(uploads)")
            let watch = try await shell("timeout 2.5 \(Binary.path) status --watch", environment: m.environment, check: false).stdout
            #expect(watch.contains("] ") && watch.contains("%") && watch.contains("ETA") && watch.contains("/slow"), "\(watch)")
            #expect(try await onThread { copy.wait() } == 0)
            let done = try await shell("getfattr --only-values -n user.netdiskfs.upload \(m.mounted("slow"))").stdout
            #expect(done == "state=committed bytes_written=62914560 bytes_acknowledged=62914560", "\(done)")
        }
    }
}
