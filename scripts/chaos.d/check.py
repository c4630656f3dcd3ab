#!/usr/bin/env python3
"""Judges one scenario of scripts/chaos from what its run left in DIR:

  manifest   start<TAB>ID<TAB>EXPECT      an operation began; EXPECT: ok, ENOSPC, EINVAL, ENAMETOOLONG,
                                          any, or alternatives joined by |
             op<TAB>ID<TAB>RC<TAB>SECONDS<TAB>MESSAGE   it ended (RC 0: success)
             file<TAB>ID<TAB>REL<TAB>SRC   operation ID writes SRC (a local file) to REL under the mount root
  poll.json  poller.py: every size seen per remote path
  probe.json prober.py: ls probes that failed or took > 2 s
  rss        VmHWM samples of the daemon(s), kB, one per line
  alive      "1", or "0 <why>"
  fails      scenario-specific failures, one per line;  notes: remarks, one per line
  tier, seconds, hang (present when the scenario hit its hard timeout), url

A write that succeeded whose file is missing at the end is LOST; a committed file whose content MD5 (the
emulator's true content MD5) differs from its source is CORRUPTED; a path seen at any size other than its
source's full size is PARTIAL. Paths the workload never wrote are STRAY.

usage: check.py DIR NAME ROOT MAX_RSS_MIB   → prints one JSON object, also written to DIR/row.json
"""
import errno
import hashlib
import json
import os
import sys
import urllib.request

d, name, root, max_rss = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/"), float(sys.argv[4])


def read(path, default=""):
    try:
        with open(os.path.join(d, path), errors="replace") as f:
            return f.read()
    except OSError:
        return default


def lines(path):
    return [l for l in read(path).splitlines() if l.strip()]


def load(path, default):
    try:
        return json.loads(read(path)) if read(path) else default
    except ValueError:
        return default


md5_cache = {}


def file_md5(path):
    if path not in md5_cache:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        md5_cache[path] = (h.hexdigest(), os.path.getsize(path))
    return md5_cache[path]


MESSAGES = {"ENOSPC": "No space left on device", "EINVAL": "Invalid argument",
            "ENAMETOOLONG": "File name too long"}


def errno_name(msg, rc):
    """The errno a program's last stderr line names (longest matching strerror text wins)."""
    if rc in (124, 137) or "killed by the" in msg:
        return "TIMEOUT"
    best = None
    for code, name in errno.errorcode.items():
        text = os.strerror(code)
        if text in msg and (best is None or len(text) > len(best[0])):
            best = (text, name)
    return best[1] if best else f"exit {rc}"


def short(name):
    return name if len(name) <= 60 else f"{name[:24]}…({len(name)} bytes)…{name[-12:]}"


expects, results, files = {}, {}, {}
for line in lines("manifest"):
    parts = line.split("\t")
    if parts[0] == "start" and len(parts) >= 3:
        expects[parts[1]] = parts[2]
    elif parts[0] == "op" and len(parts) >= 4:
        results[parts[1]] = {"rc": int(parts[2]), "secs": float(parts[3]), "msg": parts[4] if len(parts) > 4 else ""}
    elif parts[0] == "file" and len(parts) >= 4:
        files[root + "/" + parts[2]] = {"id": parts[1], "rel": short(parts[2]), "src": parts[3]}

hang = os.path.exists(os.path.join(d, "hang"))
fails = lines("fails")
notes = lines("notes")
details = []

# What the writing programs saw.
op_failures = []
groups = {}   # (what the program saw, what was expected) -> ids
for ident, expect in expects.items():
    allowed = expect.split("|")
    r = results.get(ident)
    if r is None:
        groups.setdefault(("never finished", expect), []).append(ident)
        details.append(f"{ident}: never finished (expected {expect})")
        continue
    rc, msg, secs = r["rc"], r["msg"], r["secs"]
    if "any" in allowed:
        continue
    if rc == 0:
        if "ok" not in allowed:
            groups.setdefault(("success", expect), []).append(ident)
            details.append(f"{ident}: succeeded in {secs} s, expected {expect}")
        continue
    if rc in (124, 137) and not msg.strip():
        msg = f"killed by the timeout after {secs} s"
    if any(e in MESSAGES and MESSAGES[e] in msg for e in allowed):
        continue
    groups.setdefault((errno_name(msg, rc), expect), []).append(ident)
    if len(msg) > 160:
        msg = msg[:70] + "…" + msg[-70:]
    details.append(f"{ident}: exit {rc} after {secs} s: {msg} (expected {expect})")

# The cloud's final state.
final, final_source = None, "emulator"
try:
    url = read("url").strip()
    with urllib.request.urlopen(url + "/__emulator/files", timeout=20) as r:
        final = {f["path"]: f for f in json.load(r)["files"] if not f.get("isdir")}
except Exception as e:  # noqa: BLE001 - any failure: fall back to the poller's last sample
    poll_last = load("poll.json", {}).get("last", {})
    final = {p: {"path": p, "size": v[0], "md5": v[1]} for p, v in poll_last.items()}
    final_source = "poller's last sample"
    fails.append(f"emulator unreachable at the end ({e.__class__.__name__}); judged on the poller's last sample")

poll = load("poll.json", {"seen": {}, "samples": 0})
seen = poll.get("seen", {})
lost = corrupted = partial = 0
despite_error = 0
for path, f in files.items():
    src_md5, src_size = file_md5(f["src"])
    r = results.get(f["id"])
    ok = r is not None and r["rc"] == 0
    got = final.get(path)
    if ok and got is None:
        lost += 1
        details.append(f"LOST {f['rel']}: the write succeeded, nothing at {path}")
    elif got is not None and (got.get("md5") != src_md5 or got.get("size") != src_size):
        corrupted += 1
        details.append(f"CORRUPTED {f['rel']}: {got.get('size')} bytes md5 {got.get('md5')}, source {src_size} bytes md5 {src_md5}")
    elif got is not None and not ok:
        despite_error += 1
        details.append(f"{f['rel']}: committed whole although the writer {'never finished' if r is None else 'saw an error'}")
    sizes = set(seen.get(path, {}).get("sizes", []))
    if got is not None:
        sizes.add(got.get("size"))
    wrong = sorted(s for s in sizes if s != src_size)
    if wrong:
        partial += 1
        details.append(f"PARTIAL {f['rel']}: seen at {wrong} bytes (full size {src_size})")

stray = sorted(p for p in set(seen) | set(final) if p not in files)
for p in stray[:10]:
    details.append(f"STRAY {p}: seen at sizes {seen.get(p, {}).get('sizes') or [final.get(p, {}).get('size')]}, never written by the workload")

probe = load("probe.json", {"probes": 0, "bad": 0, "worst_s": 0, "events": []})
for ev in probe.get("events", [])[:5]:
    details.append(f"ls probe at +{ev[0]} s took {ev[1]} s, exit {ev[2]} {ev[3]}".rstrip())
rss_kb = max([int(x) for x in lines("rss") if x.strip().isdigit()] or [0])
rss_mib = rss_kb / 1024
alive = read("alive").strip() or "0 not checked"

reasons = []
if hang:
    reasons.append("hit the scenario's hard timeout")
for (saw, expect), ids in groups.items():
    which = ", ".join(ids[:3]) + (f" +{len(ids) - 3}" if len(ids) > 3 else "")
    reasons.append(f"{len(ids)} op(s) {'saw ' + saw if saw not in ('success', 'never finished') else saw} ({which}), expected {expect.replace('|', ' or ')}")
if lost:
    reasons.append(f"{lost} lost")
if corrupted:
    reasons.append(f"{corrupted} corrupted")
if partial:
    reasons.append(f"{partial} partially visible")
if stray:
    reasons.append(f"{len(stray)} stray file(s) ({stray[0].rsplit('/', 1)[-1][:40]}…)")
if despite_error:
    reasons.append(f"{despite_error} committed although the writer saw an error")
if probe.get("bad"):
    reasons.append(f"ls > 2 s or failed {probe['bad']}× (worst {probe.get('worst_s')} s)")
if not alive.startswith("1"):
    reasons.append("daemon not alive at the end: " + alive[1:].strip())
if rss_kb == 0:
    reasons.append("peak RSS unknown")
elif rss_mib > max_rss:
    reasons.append(f"peak RSS {rss_mib:.0f} MiB > {max_rss:.0f} MiB")
if not files and not expects:
    reasons.append("the workload wrote nothing")
if poll.get("samples", 0) < 3:
    reasons.append(f"poller took only {poll.get('samples', 0)} samples")
reasons.extend(fails)

timed_out = any(saw == "TIMEOUT" or saw == "never finished" for saw, _ in groups)
if hang or timed_out:
    result = "HANG"
elif reasons:
    result = "FAIL"
else:
    result = "PASS"
row = {
    "scenario": name, "tier": read("tier").strip() or "?", "files": len(files), "lost": lost, "corrupted": corrupted,
    "partial": partial, "ls_bad": probe.get("bad", 0), "ls_probes": probe.get("probes", 0),
    "rss_mib": round(rss_mib, 1), "seconds": read("seconds").strip() or "?", "result": result,
    "reason": "; ".join(reasons), "notes": notes, "details": details, "final_source": final_source,
    "poll_samples": poll.get("samples", 0), "leftover_staging": len(poll.get("staging", {})),
}
with open(os.path.join(d, "row.json"), "w") as f:
    json.dump(row, f)
print(json.dumps(row))
