#!/usr/bin/env python3
"""Samples the emulator's /__emulator/files every ~100 ms and records, for each file path, every size
(and content MD5) it was seen with, so scripts/chaos can tell whether a partial file was ever visible.
The hidden staging directory (.netdiskfs-staging) is left out. Writes OUT (JSON) every second and on
SIGTERM/SIGINT.

usage: poller.py URL OUT [INTERVAL_S]
"""
import json
import os
import signal
import sys
import time
import urllib.request

url, out = sys.argv[1], sys.argv[2]
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1

seen = {}          # path -> {"sizes": [...], "md5s": [...], "first": t, "last": t}
staging = {}       # staging path -> last size (for the report: what was left in staging)
last = {}          # path -> [size, md5] in the latest successful sample
samples = 0
errors = 0
last_ok = None
longest_gap = 0.0
started = time.time()


def dump():
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"samples": samples, "errors": errors, "longest_gap_s": round(longest_gap, 2),
                   "seconds": round(time.time() - started, 1), "seen": seen, "staging": staging, "last": last}, f)
    os.replace(tmp, out)


def stop(*_):
    dump()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

last_dump = 0.0
while True:
    t0 = time.time()
    try:
        with urllib.request.urlopen(url + "/__emulator/files", timeout=2) as r:
            data = json.load(r)
        samples += 1
        if last_ok is not None:
            longest_gap = max(longest_gap, t0 - last_ok)
        last_ok = t0
        current_staging = {}
        current = {}
        for f in data.get("files", []):
            if f.get("isdir"):
                continue
            path = f["path"]
            if "/.netdiskfs-staging/" in path or path.endswith("/.netdiskfs-staging"):
                current_staging[path] = f.get("size")
                continue
            current[path] = [f.get("size"), f.get("md5")]
            s = seen.setdefault(path, {"sizes": [], "md5s": [], "first": round(t0 - started, 2)})
            s["last"] = round(t0 - started, 2)
            if f.get("size") not in s["sizes"]:
                s["sizes"].append(f.get("size"))
            md5 = f.get("md5")
            if md5 not in s["md5s"] and len(s["md5s"]) < 8:
                s["md5s"].append(md5)
        staging = current_staging
        last = current
    except Exception:
        errors += 1
    now = time.time()
    if now - last_dump > 1.0:
        dump()
        last_dump = now
    time.sleep(max(0.0, interval - (time.time() - t0)))
