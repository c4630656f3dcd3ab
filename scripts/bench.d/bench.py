#!/usr/bin/python3
"""Driver of scripts/bench (issue 11): netdiskfs beside rclone mount, nullfs, openssl md5 and curl.

Every measured run starts its own daemons (emulator + mount, or rclone serve + mount, or nullfs) and
stops them after, so the peak RSS (VmHWM) is that run's. Runs are interleaved: every system once,
then every system again, BENCH_RUNS times. Each figure is the median of the runs, min and max shown
for throughput. Throughput counts until the bytes are committed on the server:
  - netdiskfs: close() returns after the commit; the emulator's /__emulator/files is checked too;
  - rclone --vfs-cache-mode off: close() returns after the WebDAV PUT; the served directory is checked;
  - rclone --vfs-cache-mode writes: uploads after close (5 s write-back delay by default): timed until
    the served directory holds every file at full size.
CPU is utime+stime from /proc/PID/stat before and after (rclone: mount + serve), disk bytes are
write_bytes from /proc/PID/io of the mount process, API calls come from /__emulator/stats.
"""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.chdir(ROOT)

GiB = 1 << 30
MiB = 1 << 20
QUICK = os.environ.get("BENCH_QUICK", "0") not in ("", "0")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
TIERS = [int(t) for t in os.environ.get("BENCH_TIERS", "0 1 2").replace(",", " ").split()]
ONLY = [w for w in os.environ.get("BENCH_ONLY", "").replace(" ", ",").split(",") if w]
BENCH_DIR = os.environ.get("BENCH_DIR", "/tmp")
KEEP_LOGS = os.environ.get("BENCH_KEEP_LOGS", "0") not in ("", "0")
OUT = os.path.join(ROOT, "bench")
SCALE = 16 if QUICK else 1
SIZE_1G = GiB // SCALE
SIZE_4G = 4 * GiB // SCALE
TAR_FILES = 200 if QUICK else 2000
DELAYS = [0, 30, 100]
TIER_NAME = {0: "normal", 1: "VIP", 2: "SVIP"}
TIER_MAX = {0: 4_000_000_000, 1: 10_000_000_000, 2: 20_000_000_000}   # decimal GB, as the emulator
REMOTE_ROOT = "/apps/netdiskfs"
RCLONE = shutil.which("rclone") or "/usr/bin/rclone"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEADER = bytes(range(256)) * 16          # the muxer's 4 KiB header patch

WORKLOADS = {
    "cp-1g": "cp of a 1 GiB file into the mount",
    "cp-4g": "cp of a 4 GiB file into the mount",
    "cat-4g": "cat of a 4 GiB file from the mount",
    "tar": f"tar -x of {TAR_FILES} files of 16 KiB to 1 MiB",
    "muxer": "the muxer pattern: write 1 GiB sequentially, then pwrite 4 KiB at offset 0, close",
    "cp-cat": "cp of 1 GiB into the mount while another 1 GiB file is cat'ed from it",
    "cp-delay": "cp of 1 GiB at 0, 30 and 100 ms of emulator delay per call",
    "cat-delay": "cat of 1 GiB at 0, 30 and 100 ms of emulator delay per call",
}
if QUICK:
    WORKLOADS = {k: v.replace("4 GiB", "256 MiB").replace("1 GiB", "64 MiB") for k, v in WORKLOADS.items()}


WORK_DIR = None


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchFailure(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Processes and mounts: everything started is registered, and cleaned up on any exit (Ctrl-C too).

LIVE_PROCS = []      # Popen objects of daemons and running workload programs
LIVE_MOUNTS = []     # mountpoints


def spawn(args, logfile=None, env=None, daemon=True, stdout=None):
    out = open(logfile, "ab") if logfile else subprocess.DEVNULL
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout if stdout is not None else out,
                         stderr=out, env=env, start_new_session=daemon)
    if logfile:
        out.close()
    LIVE_PROCS.append(p)
    return p


def stop_proc(p, timeout=30, sig=signal.SIGTERM):
    if p is None:
        return
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        except ProcessLookupError:
            pass
    if p in LIVE_PROCS and p.poll() is not None:
        LIVE_PROCS.remove(p)


def is_mounted(path):
    return subprocess.run(["mountpoint", "-q", path]).returncode == 0


def wait_mounted(path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if proc.poll() is not None:
            raise BenchFailure(f"the daemon for {path} exited ({proc.returncode}) before mounting")
        if time.monotonic() > deadline:
            raise BenchFailure(f"{path} did not mount within {timeout} s")
        time.sleep(0.05)
    LIVE_MOUNTS.append(path)


def unmount(path, proc, timeout=60):
    """fusermount3 -u (the daemon then exits), lazily if busy; the daemon is killed if it lingers."""
    if is_mounted(path):
        if subprocess.run(["fusermount3", "-u", path], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", path], stderr=subprocess.DEVNULL)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        stop_proc(proc, timeout=10)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], stderr=subprocess.DEVNULL)
    if path in LIVE_MOUNTS:
        LIVE_MOUNTS.remove(path)


def cleanup_all():
    for path in list(LIVE_MOUNTS):
        subprocess.run(["fusermount3", "-u", "-z", path], stderr=subprocess.DEVNULL)
    for p in list(LIVE_PROCS):
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for p in list(LIVE_PROCS):
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
    for path in list(LIVE_MOUNTS):
        subprocess.run(["fusermount3", "-u", "-z", path], stderr=subprocess.DEVNULL)
    LIVE_MOUNTS.clear()
    LIVE_PROCS.clear()


def on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------------------
# /proc readings

def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK        # utime, stime (fields 14, 15)


def proc_status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def proc_write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def http_json(url, data=None, timeout=30):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def md5_file(path, limit=None):
    h = hashlib.md5()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            b = f.read(8 * MiB if left is None else min(8 * MiB, left))
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h.hexdigest()


def copy_prefix(src, dst, size):
    with open(src, "rb") as f, open(dst, "wb") as g:
        left = size
        while left:
            b = f.read(min(8 * MiB, left))
            if not b:
                raise BenchFailure(f"{src} is shorter than {size}")
            g.write(b)
            left -= len(b)


def warm(directory):
    """Reads every file under directory into the page cache (the emulator writes with O_DIRECT)."""
    for dirpath, _, names in os.walk(directory):
        for n in names:
            try:
                with open(os.path.join(dirpath, n), "rb") as f:
                    while f.read(8 * MiB):
                        pass
            except OSError:
                pass


def stderr_summary(errfile):
    errfile.seek(0)
    lines = [l.strip() for l in errfile.read().decode(errors="replace").splitlines() if l.strip()]
    if lines and lines[0].startswith("Traceback"):
        lines = lines[-1:]            # a Python program: its exception
    return " | ".join(lines[:3])[:300] or "(no message)"


class SpoolSampler(threading.Thread):
    """The peak disk use (allocated blocks) of the files under some directories, sampled every 100 ms."""

    def __init__(self, dirs):
        super().__init__(daemon=True)
        self.dirs, self.peak, self.done = dirs, 0, threading.Event()

    def sample(self):
        total = 0
        for d in self.dirs:
            for dirpath, _, names in os.walk(d):
                for n in names:
                    try:
                        st = os.lstat(os.path.join(dirpath, n))
                        total += st.st_blocks * 512
                    except OSError:
                        pass
        self.peak = max(self.peak, total)

    def run(self):
        while not self.done.wait(0.1):
            self.sample()

    def stop(self):
        self.done.set()
        self.join()
        self.sample()
        return self.peak


def run_timed(args, timeout, stdout=subprocess.DEVNULL, cwd=None, name=None):
    """Runs a workload program; returns (seconds, rusage). Raises BenchFailure on failure or timeout."""
    errfile = tempfile.TemporaryFile()
    start = time.monotonic()
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=errfile, cwd=cwd)
    LIVE_PROCS.append(p)
    deadline = start + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            end = time.monotonic()
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            p.kill()
            raise BenchFailure(f"{name or os.path.basename(args[0])} timed out after {timeout:.0f} s")
        time.sleep(0.005)
    LIVE_PROCS.remove(p)
    if p.returncode != 0:
        errfile.seek(0)
        raise BenchFailure(f"{name or os.path.basename(args[0])} exited {p.returncode}: {stderr_summary(errfile)}")
    return end - start, ru


class Async:
    """A workload program running in the background (for cp and cat at once)."""

    def __init__(self, args, stdout=subprocess.DEVNULL):
        self.errfile = tempfile.TemporaryFile()
        self.args = args
        self.start = time.monotonic()
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=self.errfile)
        LIVE_PROCS.append(self.p)
        self.end = None

    def poll(self):
        if self.end is None and self.p.poll() is not None:
            self.end = time.monotonic()
            LIVE_PROCS.remove(self.p)
            if self.p.returncode != 0:
                self.errfile.seek(0)
                raise BenchFailure(f"{os.path.basename(self.args[0])} exited {self.p.returncode}: {stderr_summary(self.errfile)}")
        return self.end is not None


def op_timeout(nbytes):
    return 300 + nbytes / 2e6          # never slower than 2 MB/s, or it is a hang


# ---------------------------------------------------------------------------------------------------
# Source data, made once per bench run

class Sources:
    def __init__(self, work):
        self.dir = os.path.join(work, "src")
        os.makedirs(self.dir, exist_ok=True)
        self.files = {}      # name -> (path, size, md5)
        self.tar = None

    def random_file(self, name, size):
        if name in self.files:
            return self.files[name]
        path = os.path.join(self.dir, name)
        log(f"making {name}: {size} pseudo-random bytes")
        gen = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pbkdf2", "-pass", f"pass:netdiskfs-bench-{name}"],
                               stdin=open("/dev/zero", "rb"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        h = hashlib.md5()
        with open(path, "wb") as f:
            left = size
            while left:
                b = gen.stdout.read(min(8 * MiB, left))
                if not b:
                    raise BenchFailure("openssl enc ended early")
                f.write(b)
                h.update(b)
                left -= len(b)
        gen.kill()
        gen.wait()
        self.files[name] = (path, size, h.hexdigest())
        return self.files[name]

    def src1g(self):
        return self.random_file("src-1g.bin", SIZE_1G)

    def src4g(self):
        return self.random_file("src-4g.bin", SIZE_4G)

    def src4g_for_tier(self, tier):
        """The 4 GiB source, or for a tier whose file limit is below it, a prefix at the limit."""
        path, size, md5 = self.src4g()
        if size <= TIER_MAX[tier]:
            return path, size, md5
        name = f"src-4g-tier{tier}.bin"
        if name not in self.files:
            p = os.path.join(self.dir, name)
            copy_prefix(path, p, TIER_MAX[tier])
            self.files[name] = (p, TIER_MAX[tier], md5_file(p))
        return self.files[name]

    def drop(self, name):
        if name in self.files:
            os.unlink(self.files.pop(name)[0])

    def muxer_md5(self):
        path, size, _ = self.src1g()
        h = hashlib.md5(HEADER)
        with open(path, "rb") as f:
            f.seek(len(HEADER))
            while True:
                b = f.read(8 * MiB)
                if not b:
                    break
                h.update(b)
        return h.hexdigest()

    def patched_head(self, n):
        """The MD5 of the muxer's output's first n bytes (its patched header, then the source)."""
        cache = self.__dict__.setdefault("_heads", {})
        if n not in cache:
            with open(self.src1g()[0], "rb") as f:
                f.seek(len(HEADER))
                cache[n] = hashlib.md5((HEADER + f.read(n - len(HEADER)))[:n]).hexdigest()
        return cache[n]

    def tarball(self):
        """TAR_FILES files of 16 KiB to 1 MiB under photos/, archived without directory entries
        (tar -x makes the directories), so the same archive extracts flat into nullfs."""
        if self.tar:
            return self.tar
        log(f"making {TAR_FILES} files of 16 KiB to 1 MiB")
        root = os.path.join(self.dir, "tree")
        rnd = random.Random(7)
        files = {}
        for i in range(TAR_FILES):
            rel = f"photos/{i // 100:03d}/img{i:05d}.jpg"
            os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
            data = rnd.randbytes(rnd.randint(16 << 10, 1 << 20))
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)
            files[rel] = (len(data), hashlib.md5(data).hexdigest())
        listing = os.path.join(self.dir, "tree.list")
        with open(listing, "w") as f:
            f.write("\n".join(sorted(files)) + "\n")
        archive = os.path.join(self.dir, "files.tar")
        subprocess.run(["tar", "-cf", archive, "-C", root, "--no-recursion", "-T", listing], check=True)
        self.tar = {"archive": archive, "root": root, "files": files, "bytes": sum(s for s, _ in files.values())}
        return self.tar


# ---------------------------------------------------------------------------------------------------
# Targets: one per measured run. prepare() places the files a workload reads, start() mounts,
# then the workload runs against .mnt; stop() tears everything down.

class Target:
    kind = "mount"
    calls_supported = False

    def __init__(self, rundir, label):
        self.rundir = rundir
        self.label = label
        self.mnt = os.path.join(rundir, "mnt")
        self.logs = os.path.join(rundir, "logs")
        os.makedirs(self.mnt)
        os.makedirs(self.logs)
        self.daemon = None

    def path(self, rel):
        return os.path.join(self.mnt, rel)

    def read_path(self, rel, size):
        return self.path(rel)

    def cpu_pids(self):
        return [self.daemon.pid]

    def spool_dirs(self):
        """Where the mount keeps local copies of file data (sampled for the spool figure)."""
        return []

    def reset_calls(self):
        pass

    def calls(self):
        return None

    def committed(self, expect):
        """expect: {rel: (size, head)}: head None, or for a patched file a function n -> the MD5 of the
        first n bytes it must start with (the server may hold the unpatched version first)."""
        return True

    def verify(self, expect):
        pass

    def tar_args(self):
        return []

    def stop(self):
        if self.daemon is not None:
            unmount(self.mnt, self.daemon)

    def log_problems(self):
        return []


class NetdiskfsTarget(Target):
    calls_supported = True

    def __init__(self, rundir, label, binary, tier, delay_ms):
        super().__init__(rundir, label)
        self.bin, self.tier, self.delay = binary, tier, delay_ms
        self.emu = None
        self.url = None
        home = os.path.join(rundir, "home")
        self.env = dict(os.environ, XDG_CONFIG_HOME=f"{home}/config", XDG_STATE_HOME=f"{home}/state",
                        XDG_CACHE_HOME=f"{home}/cache", XDG_DATA_HOME=f"{home}/data")
        self.start_emulator()

    def start_emulator(self):
        data = os.path.join(self.rundir, "emulator")
        out = os.path.join(self.logs, "emulator.out")
        with open(out, "wb") as o:
            self.emu = spawn([self.bin, "emulator", "--vip-type", str(self.tier), "--data", data],
                             logfile=os.path.join(self.logs, "emulator.log"), stdout=o)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(r"listening on (http://\S+)", open(out).read())
            if m:
                self.url = m.group(1)
                return
            if self.emu.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchFailure("the emulator did not start: " + open(os.path.join(self.logs, "emulator.log")).read()[-500:])

    def prepare(self, reads):
        """reads: {rel: (source path, size)}: uploaded with `netdiskfs put -` of the source's first size bytes."""
        if reads:
            cfg = os.path.join(self.rundir, "put-config")
            subprocess.run([self.bin, "login", "--endpoint", self.url, "--config-dir", cfg, "--no-qr"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                           env=self.env, timeout=60)
            for rel, (src, size) in reads.items():
                with open(src, "rb") as f:
                    feeder = subprocess.Popen(["head", "-c", str(size)], stdin=f, stdout=subprocess.PIPE)
                    r = subprocess.run([self.bin, "put", "--endpoint", self.url, "--config-dir", cfg, "--quiet",
                                        "-", f"{REMOTE_ROOT}/{rel}"], stdin=feeder.stdout, env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=op_timeout(size) * 2)
                    feeder.stdout.close()
                    feeder.wait()
                if r.returncode != 0:
                    raise BenchFailure(f"put of {rel} failed: {r.stderr.decode(errors='replace')[-300:]}")
            warm(os.path.join(self.rundir, "emulator"))
        if self.delay:
            http_json(f"{self.url}/__emulator/faults", data=f"*:delay={self.delay}ms".encode())

    def start(self):
        self.daemon = spawn([self.bin, "mount", "-f", "--emulator-url", self.url, "--cache-dir",
                             os.path.join(self.rundir, "cache"), self.mnt],
                            logfile=os.path.join(self.logs, "mount.log"), env=self.env)
        wait_mounted(self.mnt, self.daemon)
        # A writable mount learns how the account streams with a probe upload in the background:
        # let it finish so it is not measured (as Tests/MountTests/MountHarness.swift does).
        state = os.path.join(self.env["XDG_STATE_HOME"], "netdiskfs")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.daemon.poll() is None:
            names = os.listdir(state) if os.path.isdir(state) else []
            if any(n.startswith("streaming-") for n in names):
                break
            if "could not learn how this account streams" in open(os.path.join(self.logs, "mount.log"), errors="replace").read():
                break
            time.sleep(0.05)

    def spool_dirs(self):
        return [os.path.join(self.rundir, "cache"), self.env["XDG_CACHE_HOME"]]

    def reset_calls(self):
        http_json(f"{self.url}/__emulator/stats/reset", data=b"")

    def calls(self):
        return sum(http_json(f"{self.url}/__emulator/stats")["calls"].values())

    def remote_files(self):
        return {f["path"]: f for f in http_json(f"{self.url}/__emulator/files", timeout=300)["files"] if not f["isdir"]}

    def committed(self, expect):
        # Read from the emulator's SQLite directly: no API call (none counted, no fault delay) and no
        # content MD5 (which /__emulator/files computes for a new multi-part file, seconds for 4 GiB).
        db = sqlite3.connect(f"file:{os.path.join(self.rundir, 'emulator', 'metadata.sqlite')}?mode=ro", uri=True, timeout=10)
        try:
            rows = {p: (size, blocks, part) for p, size, blocks, part in
                    db.execute("SELECT path, size, blocks, part_size FROM files WHERE isdir = 0")}
        except sqlite3.Error:
            return False
        finally:
            db.close()
        for rel, (size, head) in expect.items():
            f = rows.get(f"{REMOTE_ROOT}/{rel}")
            if f is None or f[0] != size:
                return False
            if head is not None:           # a patched file: its first part must be the patched one
                first = f[1].split(",")[0]
                if first != head(min(size, f[2] or size)):
                    return False
        return True

    def verify(self, expect):
        files = self.remote_files()
        for rel, (size, md5) in expect.items():
            f = files.get(f"{REMOTE_ROOT}/{rel}")
            if f is None:
                raise BenchFailure(f"{rel} is not in the cloud")
            if f["size"] != size or f["md5"] != md5:
                raise BenchFailure(f"{rel} in the cloud differs: size {f['size']} md5 {f['md5']}, expected {size} {md5}")

    def stop(self):
        try:
            super().stop()
        finally:
            stop_proc(self.emu)

    def log_problems(self):
        return problem_lines(os.path.join(self.logs, "mount.log"), r"error|warn|fail|fatal|crash", r"^\s*$")


class RcloneTarget(Target):
    def __init__(self, rundir, label, mode):
        super().__init__(rundir, label)
        self.mode = mode      # "owncloud" | "other" | "writes"
        self.served = os.path.join(rundir, "served")
        os.makedirs(self.served)
        self.serve = None

    def prepare(self, reads):
        for rel, (src, size) in reads.items():
            dst = os.path.join(self.served, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            copy_prefix(src, dst, size)

    def start(self):
        port = free_port()
        conf = os.path.join(self.rundir, "rclone.conf")
        vendor = "owncloud" if self.mode == "owncloud" else "other"
        with open(conf, "w") as f:
            f.write(f"[dav]\ntype = webdav\nurl = http://127.0.0.1:{port}\nvendor = {vendor}\n")
        tmp = os.path.join(self.rundir, "rclone-tmp")
        os.makedirs(tmp)
        env = dict(os.environ, RCLONE_CONFIG=conf, TMPDIR=tmp)
        self.serve = spawn([RCLONE, "serve", "webdav", self.served, "--addr", f"127.0.0.1:{port}", "--ignore-checksum"],
                           logfile=os.path.join(self.logs, "serve.log"), env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.serve.poll() is not None or time.monotonic() > deadline:
                    raise BenchFailure("rclone serve webdav did not start: " + open(os.path.join(self.logs, "serve.log")).read()[-300:])
                time.sleep(0.05)
        mode = "writes" if self.mode == "writes" else "off"
        extra = ["--ignore-checksum"] if self.mode == "owncloud" else []
        self.daemon = spawn([RCLONE, "mount", "dav:", self.mnt, "--vfs-cache-mode", mode,
                             "--cache-dir", os.path.join(self.rundir, "rclone-cache")] + extra,
                            logfile=os.path.join(self.logs, "mount.log"), env=env)
        wait_mounted(self.mnt, self.daemon)

    def cpu_pids(self):
        return [self.daemon.pid, self.serve.pid]

    def spool_dirs(self):
        return [os.path.join(self.rundir, "rclone-cache"), os.path.join(self.rundir, "rclone-tmp")]

    def committed(self, expect):
        for rel, (size, head) in expect.items():
            p = os.path.join(self.served, rel)
            try:
                if os.stat(p).st_size != size:
                    return False
            except FileNotFoundError:
                return False
            if head is not None and md5_file(p, len(HEADER)) != head(len(HEADER)):
                return False
        return True

    def verify(self, expect):
        for rel, (size, md5) in expect.items():
            p = os.path.join(self.served, rel)
            if not os.path.exists(p):
                raise BenchFailure(f"{rel} is not on the server")
            got = md5_file(p)
            if os.path.getsize(p) != size or got != md5:
                raise BenchFailure(f"{rel} on the server differs: size {os.path.getsize(p)} md5 {got}")

    def stop(self):
        try:
            super().stop()
        finally:
            stop_proc(self.serve)

    def log_problems(self):
        out = []
        for name in ("mount.log", "serve.log"):
            out += [f"{name.split('.')[0]}: {l}" for l in problem_lines(os.path.join(self.logs, name), r"ERROR|CRITICAL|panic", None)]
        return out


class NullTarget(Target):
    def __init__(self, rundir, label):
        super().__init__(rundir, label)

    def prepare(self, reads):
        pass

    def read_path(self, rel, size):
        return self.path(f"zero-{size}")

    def start(self):
        self.daemon = spawn([os.path.join(ROOT, "scripts", "nullfs"), "-f", "-o", "max_threads=16", self.mnt],
                            logfile=os.path.join(self.logs, "nullfs.log"))
        wait_mounted(self.mnt, self.daemon)

    def tar_args(self):
        # nullfs has no directories, and every name exists as an empty file: extract flat, over them.
        return ["--transform", "s,/,_,g", "--overwrite"]


def problem_lines(path, pattern, ignore):
    try:
        text = open(path, errors="replace").read()
    except FileNotFoundError:
        return []
    rx = re.compile(pattern, re.I if pattern.islower() else 0)
    return [l.strip() for l in text.splitlines() if rx.search(l) and not (ignore and re.search(ignore, l))]


# ---------------------------------------------------------------------------------------------------
# Systems

class System:
    key = ""
    name = ""
    role = ""         # "netdiskfs", "alternative", "ceiling", "floor"

    def __repr__(self):
        return self.key


class NetdiskfsSystem(System):
    role = "netdiskfs"

    def __init__(self, binary, tier, delay=0, show_delay=False):
        self.bin, self.tier, self.delay = binary, tier, delay
        self.key = f"netdiskfs-{TIER_NAME[tier]}" + (f"-{delay}ms" if show_delay else "")
        self.name = f"netdiskfs, {TIER_NAME[tier]} account" + (f", {delay} ms per call" if show_delay else "")

    def target(self, rundir):
        return NetdiskfsTarget(rundir, self.name, self.bin, self.tier, self.delay)


class RcloneSystem(System):
    role = "alternative"
    NAMES = {"owncloud": "rclone mount, cache off, vendor owncloud (streams)",
             "other": "rclone mount, cache off, vendor other (spools)",
             "writes": "rclone mount, --vfs-cache-mode writes"}

    def __init__(self, mode):
        self.mode = mode
        self.key = f"rclone-{mode}"
        self.name = self.NAMES[mode]

    def target(self, rundir):
        return RcloneTarget(rundir, self.name, self.mode)


class NullSystem(System):
    role = "ceiling"
    key = "nullfs"
    name = "scripts/nullfs (FUSE ceiling)"

    def target(self, rundir):
        return NullTarget(rundir, self.name)


class Md5System(System):
    role = "floor"
    key = "openssl-md5"
    name = "openssl md5 (hash floor)"


class CurlSystem(System):
    role = "alternative"

    def __init__(self, binary, tier):
        self.bin, self.tier = binary, tier
        self.key = "curl"
        self.name = f"curl of the dlink ({TIER_NAME[tier]} account)"


# ---------------------------------------------------------------------------------------------------
# Measured runs

def wait_committed(target, expect, deadline):
    """Polls until the server holds every expected file; returns the monotonic time it was seen."""
    while True:
        if target.committed(expect):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchFailure("the files were not committed on the server in time")
        time.sleep(0.1)


def measure_mount_run(system, workload, ctx):
    """One run of a mount system: fresh daemons, the workload, its figures."""
    rundir = tempfile.mkdtemp(prefix=f"{system.key}-{workload}.", dir=ctx.work)
    target = None
    result = {}
    try:
        target = system.target(rundir)
        spec = WORKLOAD_SPECS[workload](ctx, system)
        target.prepare(spec.get("reads", {}))
        os.sync()
        target.start()
        target.reset_calls()
        pids = target.cpu_pids()
        cpu0 = [proc_cpu(p) for p in pids]
        disk0 = proc_write_bytes(target.daemon.pid)
        sampler = SpoolSampler(target.spool_dirs())
        sampler.start()
        try:
            figures = spec["run"](target)
        finally:
            spool = sampler.stop()
        cpu = [proc_cpu(p) - c for p, c in zip(pids, cpu0)]
        result.update(figures)
        result["cpu"] = sum(cpu)
        result["cpu_mount"] = cpu[0]
        result["rss_kib"] = proc_status_kib(target.daemon.pid, "VmHWM")
        if isinstance(target, RcloneTarget):
            result["serve_rss_kib"] = proc_status_kib(target.serve.pid, "VmHWM")
        result["disk"] = proc_write_bytes(target.daemon.pid) - disk0
        if target.spool_dirs():
            result["spool"] = spool
        calls = target.calls()
        if calls is not None:
            result["calls"] = calls
        if spec.get("expect"):
            target.verify(spec["expect"])
    except BenchFailure as e:
        result = {"error": str(e)}
    except (OSError, ValueError, KeyError, sqlite3.Error, subprocess.SubprocessError) as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    finally:
        if target is not None:
            try:
                target.stop()
            except Exception as e:       # noqa: BLE001 - teardown must go on
                log(f"teardown of {system.key}: {e}")
            problems = target.log_problems()
            if problems:
                result["log_problems"] = len(problems)
                result["log_sample"] = list(dict.fromkeys(problems))[:3]
            if KEEP_LOGS:
                dst = os.path.join(ctx.keep, f"{workload}-{system.key}-run{ctx.run}")
                shutil.copytree(target.logs, dst, dirs_exist_ok=True)
        shutil.rmtree(rundir, ignore_errors=True)
    return result


def measure_md5_run(system, workload, ctx):
    if workload == "tar":
        t = ctx.src.tarball()
        files = sorted(os.path.join(t["root"], rel) for rel in t["files"])
        nbytes, nfiles = t["bytes"], len(files)
        listing = os.path.join(ctx.work, "md5.list")
        with open(listing, "wb") as f:
            f.write(b"\0".join(x.encode() for x in files))
        args = ["sh", "-c", f'xargs -0 openssl md5 < "{listing}" > /dev/null']
    else:
        path, nbytes, _ = ctx.src.src4g() if workload in ("cp-4g", "cat-4g") else ctx.src.src1g()
        args, nfiles = ["openssl", "md5", path], 1
    try:
        seconds, ru = run_timed(args, op_timeout(nbytes))
    except BenchFailure as e:
        return {"error": str(e)}
    return {"seconds": seconds, "bytes": nbytes, "files": nfiles, "cpu": ru.ru_utime + ru.ru_stime,
            "rss_kib": ru.ru_maxrss, "disk": ru.ru_oublock * 512}


def measure_curl_run(system, workload, ctx):
    rundir = tempfile.mkdtemp(prefix=f"curl-{workload}.", dir=ctx.work)
    target = None
    try:
        target = NetdiskfsTarget(rundir, system.name, system.bin, system.tier, 0)
        src, size, _ = ctx.src.src4g_for_tier(system.tier)
        target.prepare({"read.bin": (src, size)})
        os.sync()
        url = target.url
        target.reset_calls()
        token = http_json(f"{url}/__emulator/token", data=b"")["access_token"]
        db = sqlite3.connect(f"file:{os.path.join(rundir, 'emulator', 'metadata.sqlite')}?mode=ro", uri=True, timeout=10)
        fsid = db.execute("SELECT fs_id FROM files WHERE path = ?", (f"{REMOTE_ROOT}/read.bin",)).fetchone()[0]
        db.close()
        metas = http_json(f"{url}/rest/2.0/xpan/multimedia?method=filemetas&fsids=%5B{fsid}%5D&dlink=1&access_token={token}")
        dlink = metas["list"][0]["dlink"]
        seconds, ru = run_timed(["curl", "-sSf", "-L", "-H", "User-Agent: pan.baidu.com", "-o", "/dev/null",
                                 f"{dlink}&access_token={token}"], op_timeout(size))
        return {"seconds": seconds, "bytes": size, "files": 1, "cpu": ru.ru_utime + ru.ru_stime,
                "rss_kib": ru.ru_maxrss, "disk": ru.ru_oublock * 512, "calls": target.calls()}
    except BenchFailure as e:
        return {"error": str(e)}
    except (OSError, ValueError, KeyError, IndexError, TypeError, sqlite3.Error, subprocess.SubprocessError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        if target is not None:
            target.stop()
        shutil.rmtree(rundir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# Workloads: each returns {"reads": files to place first, "run": fn(target) -> figures, "expect": files to verify}

def cp_spec(src):
    path, size, md5 = src
    expect = {"cp.bin": (size, None)}

    def run(t):
        deadline = time.monotonic() + op_timeout(size)
        start = time.monotonic()
        run_timed(["cp", path, t.path("cp.bin")], op_timeout(size))
        end = wait_committed(t, expect, deadline)
        return {"seconds": end - start, "bytes": size, "files": 1}
    return {"run": run, "expect": {"cp.bin": (size, md5)}}


def cat_spec(src, size):
    def run(t):
        seconds, _ = run_timed(["cat", t.read_path("read.bin", size)], op_timeout(size))
        return {"seconds": seconds, "bytes": size, "files": 1}
    return {"reads": {"read.bin": (src, size)}, "run": run}


def spec_cp_1g(ctx, system):
    return cp_spec(ctx.src.src1g())


def spec_cp_4g(ctx, system):
    tier = getattr(system, "tier", 1)
    return cp_spec(ctx.src.src4g_for_tier(tier))


def spec_cat_4g(ctx, system):
    tier = getattr(system, "tier", 1)
    path, size, _ = ctx.src.src4g_for_tier(tier)
    return cat_spec(path, size)


def spec_tar(ctx, system):
    t = ctx.src.tarball()
    expect = {rel: (size, None) for rel, (size, _) in t["files"].items()}

    def run(target):
        deadline = time.monotonic() + op_timeout(t["bytes"])
        start = time.monotonic()
        run_timed(["tar", "-xf", t["archive"], "-C", target.mnt] + target.tar_args(), op_timeout(t["bytes"]))
        end = wait_committed(target, expect, deadline)
        return {"seconds": end - start, "bytes": t["bytes"], "files": len(t["files"])}
    return {"run": run, "expect": {rel: v for rel, v in t["files"].items()}}


MUXER = r"""
import os, sys
src, dst, header = sys.argv[1], sys.argv[2], bytes(range(256)) * 16
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
with open(src, "rb", buffering=0) as f:
    while True:
        b = f.read(256 << 10)
        if not b:
            break
        v = memoryview(b)
        while v:
            v = v[os.write(fd, v):]
os.pwrite(fd, header, 0)
os.close(fd)
"""


def spec_muxer(ctx, system):
    path, size, _ = ctx.src.src1g()
    if ctx.muxer_md5 is None:
        ctx.muxer_md5 = ctx.src.muxer_md5()
    md5 = ctx.muxer_md5
    expect = {"muxed.mp4": (size, ctx.src.patched_head)}

    def run(t):
        deadline = time.monotonic() + op_timeout(size)
        start = time.monotonic()
        run_timed([sys.executable, "-c", MUXER, path, t.path("muxed.mp4")], op_timeout(size), name="the muxer")
        end = wait_committed(t, expect, deadline)
        return {"seconds": end - start, "bytes": size, "files": 1}
    return {"run": run, "expect": {"muxed.mp4": (size, md5)}}


def spec_cp_cat(ctx, system):
    cpath, csize, cmd5 = ctx.src.src1g()
    rpath = ctx.src.src4g()[0]
    rsize = SIZE_1G
    expect = {"cp.bin": (csize, None)}

    def run(t):
        deadline = time.monotonic() + op_timeout(csize + rsize)
        start = time.monotonic()
        cp = Async(["cp", cpath, t.path("cp.bin")])
        cat = Async(["cat", t.read_path("read.bin", rsize)])
        cp_end = None
        while True:
            cp_done, cat_done = cp.poll(), cat.poll()
            if cp_done and cp_end is None:
                cp_end = wait_committed(t, expect, deadline)
            if cp_done and cat_done:
                break
            if time.monotonic() > deadline:
                for a in (cp, cat):
                    if a.end is None:
                        a.p.kill()
                raise BenchFailure("cp and cat timed out")
            time.sleep(0.02)
        end = max(cp_end, cat.end)
        return {"seconds": end - start, "bytes": csize + rsize, "files": 2,
                "cp_seconds": cp_end - start, "cp_bytes": csize, "cat_seconds": cat.end - start, "cat_bytes": rsize}
    return {"reads": {"read.bin": (rpath, rsize)}, "run": run, "expect": {"cp.bin": (csize, cmd5)}}


def spec_cp_delay(ctx, system):
    return cp_spec(ctx.src.src1g())


def spec_cat_delay(ctx, system):
    return cat_spec(ctx.src.src4g()[0], SIZE_1G)


WORKLOAD_SPECS = {"cp-1g": spec_cp_1g, "cp-4g": spec_cp_4g, "cat-4g": spec_cat_4g, "tar": spec_tar,
                  "muxer": spec_muxer, "cp-cat": spec_cp_cat, "cp-delay": spec_cp_delay, "cat-delay": spec_cat_delay}


def systems_for(workload, binary):
    nd = [NetdiskfsSystem(binary, t) for t in TIERS]
    rc = [RcloneSystem(m) for m in ("owncloud", "other", "writes")]
    if workload in ("cp-delay", "cat-delay"):
        return [NetdiskfsSystem(binary, t, d, show_delay=True) for t in TIERS for d in DELAYS]
    systems = nd + rc + [NullSystem()]
    if workload in ("cp-1g", "cp-4g", "cat-4g", "tar"):
        systems.append(Md5System())
    if workload == "cat-4g":
        systems.append(CurlSystem(binary, 1 if 1 in TIERS else TIERS[0]))
    return systems


def measure(system, workload, ctx):
    if isinstance(system, Md5System):
        return measure_md5_run(system, workload, ctx)
    if isinstance(system, CurlSystem):
        return measure_curl_run(system, workload, ctx)
    return measure_mount_run(system, workload, ctx)


# ---------------------------------------------------------------------------------------------------
# Figures and reports

def med(values):
    return statistics.median(values) if values else None


def summarize(runs):
    ok = [r for r in runs if "error" not in r]
    s = {"runs": len(runs), "ok": len(ok), "errors": [r["error"] for r in runs if "error" in r]}
    if not ok:
        return s
    mbps = [r["bytes"] / r["seconds"] / 1e6 for r in ok]
    s.update(mbps=med(mbps), mbps_min=min(mbps), mbps_max=max(mbps),
             cpu_per_gib=med([r["cpu"] / (r["bytes"] / GiB) for r in ok]),
             rss_mib=med([r["rss_kib"] / 1024 for r in ok]),
             disk=med([r["disk"] for r in ok]),
             files_per_s=med([r["files"] / r["seconds"] for r in ok]))
    if all("spool" in r for r in ok):
        s["spool"] = med([r["spool"] for r in ok])
    if all("cpu_mount" in r for r in ok) and any(r["cpu_mount"] != r["cpu"] for r in ok):
        s["cpu_mount_per_gib"] = med([r["cpu_mount"] / (r["bytes"] / GiB) for r in ok])
    if all("serve_rss_kib" in r for r in ok):
        s["serve_rss_mib"] = med([r["serve_rss_kib"] / 1024 for r in ok])
    if all("calls" in r for r in ok):
        s["calls_per_file"] = med([r["calls"] / r["files"] for r in ok])
    for part in ("cp", "cat"):
        if all(f"{part}_seconds" in r for r in ok):
            v = [r[f"{part}_bytes"] / r[f"{part}_seconds"] / 1e6 for r in ok]
            s[f"{part}_mbps"], s[f"{part}_min"], s[f"{part}_max"] = med(v), min(v), max(v)
    return s


def fmt_bytes(n):
    if n is None:
        return ""
    if n < 1024:
        return f"{n:.0f} B"
    if n < MiB:
        return f"{n / 1024:.1f} KiB"
    if n < GiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n / GiB:.2f} GiB"


def fmt_range(m, lo, hi):
    return f"{m:.1f} ({lo:.1f}–{hi:.1f})"


def table(workload, entry):
    rows = entry["systems"]
    cols = ["system", "MB/s median (min–max)"]
    extra_cp_cat = workload == "cp-cat"
    delay = workload in ("cp-delay", "cat-delay")
    if extra_cp_cat:
        cols += ["cp MB/s", "cat MB/s"]
    if workload == "tar":
        cols += ["files/s"]
    if delay:
        cols += ["vs 0 ms"]
    cols += ["CPU s/GiB", "peak RSS MiB", "local disk bytes", "API calls/file"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    zero_ms = {}
    if delay:
        for r in rows:
            if r["key"].endswith("-0ms") and "mbps" in r["summary"]:
                zero_ms[r["key"].rsplit("-", 1)[0]] = r["summary"]["mbps"]
    for r in rows:
        s = r["summary"]
        name = r["name"]
        if r.get("size_note"):
            name += f" ({r['size_note']})"
        if s["ok"] < s["runs"]:
            name += f" — {s['runs'] - s['ok']} of {s['runs']} runs failed"
        if "mbps" not in s:
            err = s["errors"][0] if s["errors"] else "not run"
            cells = [name, f"failed: {err}".replace("|", "/")] + [""] * (len(cols) - 2)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = [name, fmt_range(s["mbps"], s["mbps_min"], s["mbps_max"])]
        if extra_cp_cat:
            cells += [fmt_range(s["cp_mbps"], s["cp_min"], s["cp_max"]), fmt_range(s["cat_mbps"], s["cat_min"], s["cat_max"])]
        if workload == "tar":
            cells += [f"{s['files_per_s']:.1f}"]
        if delay:
            base = zero_ms.get(r["key"].rsplit("-", 1)[0])
            cells += [f"{s['mbps'] / base:.2f}" if base else ""]
        cpu = f"{s['cpu_per_gib']:.2f}"
        if "cpu_mount_per_gib" in s:
            cpu += f" ({s['cpu_mount_per_gib']:.2f} mount)"
        rss = f"{s['rss_mib']:.0f}"
        if "serve_rss_mib" in s:
            rss += f" (serve {s['serve_rss_mib']:.0f})"
        calls = f"{s['calls_per_file']:.2f}" if "calls_per_file" in s else ""
        disk = fmt_bytes(s["disk"]) + (f" (spool {fmt_bytes(s['spool'])})" if "spool" in s else "")
        cells += [cpu, rss, disk, calls]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_goals(results):
    """The measurable 'Done when' items of issue 11, judged from the figures."""
    out = []

    def nd_rows(w):
        return [r for r in results.get(w, {}).get("systems", []) if r["key"].startswith("netdiskfs")]
    for w in ("cp-4g", "cat-4g", "cp-cat"):
        for r in nd_rows(w):
            s = r["summary"]
            if "rss_mib" in s:
                out.append((f"{w}: {r['name']}: peak RSS {s['rss_mib']:.0f} MiB ≤ 96 MiB", s["rss_mib"] <= 96))
    for w in ("cp-1g", "cp-4g"):
        for r in nd_rows(w):
            s = r["summary"]
            if "disk" in s:
                spool = f", spool files peaked at {fmt_bytes(s['spool'])}" if "spool" in s else ""
                out.append((f"{w}: {r['name']}: {fmt_bytes(s['disk'])} written to local disk{spool} (goal 0)", s["disk"] == 0))
    for w in ("cp-delay", "cat-delay"):
        rows = {r["key"]: r["summary"] for r in nd_rows(w)}
        for key, s in rows.items():
            if key.endswith("-100ms") and "mbps" in s:
                base = rows.get(key[:-len("100ms")] + "0ms", {}).get("mbps")
                if base:
                    out.append((f"{w}: {key[:-6]}: 100 ms reaches {s['mbps'] / base:.2f} × the 0 ms throughput (goal ≥ 0.8)",
                                s["mbps"] / base >= 0.8))
    return out


def behind(results):
    """Every figure where a netdiskfs row is worse than an alternative (rclone or curl) in the same table."""
    metrics = [("MB/s", "mbps", True, lambda v: f"{v:.1f}"), ("CPU s/GiB", "cpu_per_gib", False, lambda v: f"{v:.2f}"),
               ("peak RSS MiB", "rss_mib", False, lambda v: f"{v:.0f}"), ("local disk", "disk", False, fmt_bytes)]
    out = []
    for w, entry in results.items():
        rows = entry["systems"]
        alts = [r for r in rows if r.get("role") == "alternative" and "mbps" in r["summary"]]
        for r in rows:
            s = r["summary"]
            if not r["key"].startswith("netdiskfs") or "mbps" not in s:
                continue
            for label, key, higher_better, fmt in metrics:
                better = [a for a in alts if fmt(a["summary"][key]) != fmt(s[key])         # no ties as printed
                          and (a["summary"][key] > s[key] if higher_better else a["summary"][key] < s[key])]
                if better:
                    out.append(f"{w}, {r['name']}: {label} {fmt(s[key])}, behind "
                               + "; ".join(f"{a['name']} {fmt(a['summary'][key])}" for a in better))
    return out


def render(doc):
    h = doc["header"]
    lines = [f"# netdiskfs beside rclone: {'QUICK SMOKE RUN (sizes ÷ 16, not figures to quote)' if h['quick'] else 'benchmark results'}",
             "",
             f"- Date: {h['date']}",
             f"- Machine: {h['machine']}",
             f"- netdiskfs: commit {h['commit']}, binary {h['binary']}",
             f"- rclone: {h['rclone']}",
             f"- Command: `{h['command']}`",
             f"- Runs: {h['runs']} interleaved runs of every system (each run starts its own daemons); "
             f"figures are medians, MB/s with min–max. Load average before/after: {h['load_before']} / {h['load_after']}.",
             f"- Took {h['elapsed_min']:.1f} min for {', '.join(h.get('workloads_run', []))}.",
             "",
             "How it is measured: throughput counts until the bytes are committed on the server (netdiskfs: close() "
             "returns after the commit, confirmed in the emulator's file list; rclone cache off: the WebDAV PUT ends at "
             "close; rclone `writes`: it uploads after close, 5 s later by default, timed until the served directory holds "
             "every file at full size). MB/s = 10^6 bytes/s. CPU s/GiB is the mount process's utime+stime (rclone: mount + "
             "`serve webdav`, the mount's own share in brackets); peak RSS is the mount process's VmHWM (rclone's serve "
             "process in brackets); local disk bytes is write_bytes of the mount process from /proc/PID/io, everything it "
             "wrote, its log, status file and SQLite files included, and in brackets the peak disk use of the files in its "
             "cache/spool directories (netdiskfs --cache-dir and XDG cache; rclone --cache-dir and TMPDIR), sampled every "
             "100 ms; API calls per "
             "file are all emulator calls during the run divided by the files. netdiskfs runs `netdiskfs mount` with its "
             "defaults against `netdiskfs emulator --vip-type 0|1|2` on loopback; rclone (Debian's) mounts `rclone serve "
             "webdav --ignore-checksum` of a local directory on loopback. Every committed file is checked bit-exact after "
             "the run. The normal tier's file limit is 4 GB (decimal): its \"4 GiB\" rows use a file of exactly 4,000,000,000 bytes.",
             ""]
    for w in WORKLOADS:
        if w not in doc["results"]:
            continue
        e = doc["results"][w]
        lines += [f"## {w}: {e['title']}", ""]
        if e["date"] != h["date"] or e["commit"] != h["commit"]:
            lines += [f"Measured {e['date']}, commit {e['commit']}, {e['runs']} runs, by `{e.get('command', '')}`.", ""]
        lines += [table(w, e), "", f"![{w}]({w}.png)", ""]
    goals = check_goals(doc["results"])
    if goals:
        lines += ["## Goals of issue 11, judged from these figures", ""]
        lines += [f"- {'met' if ok else '**not met**'}: {text}" for text, ok in goals]
        lines.append("")
    b = behind(doc["results"])
    lines += ["## Where netdiskfs is behind an alternative", ""]
    lines += [f"- {x}" for x in b] if b else ["- nowhere in these figures"]
    lines.append("")
    notes = []
    for w, e in doc["results"].items():
        for r in e["systems"]:
            for i, run in enumerate(r["runs"]):
                if "error" in run:
                    notes.append(f"{w}, {r['name']}, run {i + 1}: failed: {run['error']}")
                if run.get("log_problems"):
                    sample = " / ".join(x[:200] for x in run["log_sample"])
                    notes.append(f"{w}, {r['name']}, run {i + 1}: {run['log_problems']} log lines with errors or warnings, e.g. `{sample}`")
    if notes:
        lines += ["## Failures and log lines", ""] + [f"- {n}".replace("\n", " ") for n in notes] + [""]
    return "\n".join(lines)


def plot(doc):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"netdiskfs": "#1f77b4", "alternative": "#ff7f0e", "ceiling": "#7f7f7f", "floor": "#2ca02c"}
    for png in os.listdir(OUT):
        if png.endswith(".png") and png[:-4] in WORKLOADS:
            os.unlink(os.path.join(OUT, png))
    for w in WORKLOADS:
        e = doc["results"].get(w)
        if not e:
            continue
        rows = [r for r in e["systems"] if "mbps" in r["summary"]]
        if not rows:
            continue
        names = [r["name"] for r in rows][::-1]
        rows = rows[::-1]
        fig, axes = plt.subplots(1, 3, figsize=(16, 0.45 * len(rows) + 1.8), sharey=True)
        c = [colors.get(r.get("role"), "#1f77b4") for r in rows]
        y = range(len(rows))
        mb = [r["summary"]["mbps"] for r in rows]
        err = [[m - r["summary"]["mbps_min"] for m, r in zip(mb, rows)], [r["summary"]["mbps_max"] - m for m, r in zip(mb, rows)]]
        bars = axes[0].barh(y, mb, xerr=err, color=c, capsize=3)
        axes[0].bar_label(bars, labels=[f"{v:.0f}" for v in mb], padding=6, fontsize=7)
        axes[0].set_xlabel("MB/s until committed (median, min–max)")
        bars = axes[1].barh(y, [r["summary"]["rss_mib"] for r in rows], color=c)
        axes[1].bar_label(bars, fmt="%.0f", padding=3, fontsize=7)
        axes[1].set_xlabel("peak RSS of the mount process, MiB")
        if w in ("cp-4g", "cat-4g", "cp-cat"):
            axes[1].axvline(96, color="red", linestyle="--", linewidth=1)
        bars = axes[2].barh(y, [r["summary"]["cpu_per_gib"] for r in rows], color=c)
        axes[2].bar_label(bars, fmt="%.2f", padding=3, fontsize=7)
        axes[2].set_xlabel("CPU s/GiB (rclone: mount + serve)")
        axes[0].set_yticks(list(y))
        axes[0].set_yticklabels(names, fontsize=8)
        for ax in axes:
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"{w}: {e['title']} ({e['runs']} runs{', QUICK' if doc['header']['quick'] else ''})", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(OUT, f"{w}.png"), dpi=90)
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------

def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def machine():
    cpu = sh("sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1")
    ram = int(sh("awk '/^MemTotal/ { print $2 }' /proc/meminfo") or 0) / 1024 / 1024
    os_name = sh(". /etc/os-release && echo $PRETTY_NAME")
    return f"{os.cpu_count()} CPUs ({cpu}), {ram:.1f} GiB RAM, Linux {os.uname().release}, {os_name}"


def netdiskfs_binary():
    b = os.environ.get("NETDISKFS_BIN")
    if b:
        return os.path.abspath(b)
    env = dict(os.environ)
    if not shutil.which("swift"):
        env["PATH"] = "/opt/swift/usr/bin:" + env["PATH"]
    log("building netdiskfs (swift build -c release --product netdiskfs)")
    subprocess.run(["swift", "build", "-c", "release", "--product", "netdiskfs"], check=True, env=env, stdout=sys.stderr)
    path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()
    return os.path.join(path, "netdiskfs")


class Ctx:
    pass


def main():
    unknown = [w for w in ONLY if w not in WORKLOADS]
    if unknown:
        sys.exit(f"bench: unknown workload(s) {', '.join(unknown)}; known: {' '.join(WORKLOADS)}")
    if any(t not in TIER_NAME for t in TIERS) or not TIERS:
        sys.exit("bench: BENCH_TIERS takes 0, 1 and 2")
    if RUNS < 1:
        sys.exit("bench: BENCH_RUNS must be at least 1")
    for tool in ("fusermount3", "openssl", "curl", "tar", "cc", "pkg-config"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (scripts/setup --deps)")
    if not os.path.exists(RCLONE):
        sys.exit("bench: rclone not found (apt-get install rclone, or scripts/setup --deps)")
    selected = ONLY or list(WORKLOADS)
    selected = [w for w in WORKLOADS if w in selected]

    # Scratch space: the sources, plus at most two copies of the largest file at once (rclone's served
    # copy and its spool or cache file).
    need = (SIZE_1G + SIZE_4G + 2 * SIZE_4G + (TAR_FILES * 1.1 * MiB if "tar" in selected else 0)
            + (TIER_MAX[0] if 0 in TIERS and SIZE_4G > TIER_MAX[0] and "cp-4g" in selected else 0))
    st = os.statvfs(BENCH_DIR)
    if st.f_bavail * st.f_frsize < need:
        sys.exit(f"bench: {BENCH_DIR} has {st.f_bavail * st.f_frsize / 1e9:.1f} GB free, the run needs about "
                 f"{need / 1e9:.1f} GB (set BENCH_DIR)")

    binary = netdiskfs_binary()
    nullfs = os.path.join(ROOT, "scripts", "nullfs")
    if not os.path.exists(nullfs) or os.path.getmtime(nullfs) < os.path.getmtime(nullfs + ".c"):
        flags = sh("pkg-config --cflags --libs fuse3").split()
        subprocess.run(["cc", "-O2", "-o", nullfs, nullfs + ".c"] + flags, check=True)

    commit = sh("git rev-parse --short HEAD") or "unknown"
    if sh("git status --porcelain -- Sources Package.swift Package.resolved"):
        commit += " (with uncommitted changes under Sources/)"
    started = time.monotonic()
    header = {
        "date": sh("date -u"), "machine": machine(), "commit": commit,
        "binary": f"{'NETDISKFS_BIN=' + os.environ['NETDISKFS_BIN'] if os.environ.get('NETDISKFS_BIN') else 'release build'}, "
                  f"version {sh(binary + ' --version')}",
        "rclone": sh(f"{RCLONE} version | head -1"),
        "command": " ".join([f"{k}={os.environ[k]}" for k in ("BENCH_RUNS", "BENCH_QUICK", "BENCH_TIERS", "BENCH_ONLY", "BENCH_DIR", "NETDISKFS_BIN")
                             if os.environ.get(k)] + [os.environ.get("BENCH_COMMAND_LINE", "scripts/bench")]),
        "runs": RUNS, "quick": QUICK, "tiers": TIERS, "load_before": sh("cut -d' ' -f1-3 /proc/loadavg"),
    }

    global WORK_DIR
    ctx = Ctx()
    ctx.work = WORK_DIR = tempfile.mkdtemp(prefix="netdiskfs-bench.", dir=BENCH_DIR)
    ctx.keep = os.path.join(BENCH_DIR, "netdiskfs-bench-logs." + time.strftime("%Y%m%d-%H%M%S")) if KEEP_LOGS else None
    ctx.src = Sources(ctx.work)
    ctx.muxer_md5 = None
    log(f"scratch dir {ctx.work}; workloads {' '.join(selected)}; {RUNS} run(s); tiers {' '.join(map(str, TIERS))}"
        + ("; QUICK" if QUICK else ""))

    results = {}
    for w in selected:
        wstart = time.monotonic()
        systems = systems_for(w, binary)
        runs = {s.key: [] for s in systems}
        for run in range(RUNS):
            ctx.run = run + 1
            for s in systems:
                r = measure(s, w, ctx)
                runs[s.key].append(r)
                if "error" in r:
                    log(f"[{w} {run + 1}/{RUNS}] {s.name}: FAILED: {r['error']}")
                else:
                    extra = f", {r['calls']} calls" if "calls" in r else ""
                    log(f"[{w} {run + 1}/{RUNS}] {s.name}: {r['bytes'] / r['seconds'] / 1e6:.1f} MB/s ({r['seconds']:.2f} s), "
                        f"CPU {r['cpu']:.2f} s, RSS {r['rss_kib'] / 1024:.0f} MiB, disk {fmt_bytes(r['disk'])}{extra}"
                        + (f", {r['log_problems']} log problem lines" if r.get("log_problems") else ""))
        rows = []
        for s in systems:
            row = {"key": s.key, "name": s.name, "role": s.role, "runs": runs[s.key], "summary": summarize(runs[s.key])}
            tier = getattr(s, "tier", None)
            if w in ("cp-4g", "cat-4g") and tier is not None and SIZE_4G > TIER_MAX[tier]:
                row["size_note"] = f"{TIER_MAX[tier]:,} bytes, the tier's limit"
            rows.append(row)
        results[w] = {"title": WORKLOADS[w], "date": header["date"], "commit": commit, "runs": RUNS, "command": header["command"],
                      "seconds": time.monotonic() - wstart, "systems": rows}
        log(f"{w} took {time.monotonic() - wstart:.0f} s")
        if w in ("cp-4g", "cat-4g"):
            for t in TIERS:
                ctx.src.drop(f"src-4g-tier{t}.bin")

    header["load_after"] = sh("cut -d' ' -f1-3 /proc/loadavg")
    header["elapsed_min"] = (time.monotonic() - started) / 60
    header["workload_seconds"] = {w: results[w]["seconds"] for w in results}
    header["workloads_run"] = list(results)

    # Merge with earlier results when only some workloads were run (same mode: quick or full).
    os.makedirs(OUT, exist_ok=True)
    raw = os.path.join(OUT, "results.json")
    merged = results
    if ONLY and os.path.exists(raw):
        try:
            old = json.load(open(raw))
            if old["header"].get("quick") == QUICK:
                merged = {**old["results"], **results}
        except (ValueError, KeyError):
            pass
    doc = {"header": header, "results": {w: merged[w] for w in WORKLOADS if w in merged}}
    with open(raw, "w") as f:
        json.dump(doc, f, indent=1)
    text = render(doc)
    with open(os.path.join(OUT, "RESULTS.md"), "w") as f:
        f.write(text + "\n")
    plot(doc)
    print(text)
    log(f"wrote {OUT}/RESULTS.md, results.json and *.png in {header['elapsed_min']:.1f} min")
    if ctx.keep:
        log(f"logs kept in {ctx.keep}")
    return ctx


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    code = 0
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup_all()
        if WORK_DIR:
            shutil.rmtree(WORK_DIR, ignore_errors=True)
    sys.exit(code)
