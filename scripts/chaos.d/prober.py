#!/usr/bin/env python3
"""Runs `timeout 2 ls MNT` every ~0.5 s and counts the answers that failed or took longer than 2 s.
While the file PAUSE exists (a scenario that kills the daemon on purpose), it does not probe.
Writes OUT (JSON) every probe and on SIGTERM/SIGINT.

usage: prober.py MNT OUT PAUSE_FILE
"""
import json
import os
import signal
import subprocess
import sys
import time

mnt, out, pause = sys.argv[1], sys.argv[2], sys.argv[3]
LIMIT = 2.0
probes = 0
bad = 0            # failed (non-zero exit, including timeout's 124) or slower than LIMIT
worst = 0.0
events = []        # the first bad probes: [t, seconds, rc, stderr]
started = time.time()


def dump():
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"probes": probes, "bad": bad, "worst_s": round(worst, 2), "events": events[:20]}, f)
    os.replace(tmp, out)


def stop(*_):
    dump()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
dump()
while True:
    if os.path.exists(pause):
        time.sleep(0.1)
        continue
    t0 = time.monotonic()
    r = subprocess.run(["timeout", "-k", "1", str(int(LIMIT)), "ls", mnt],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if os.path.exists(pause):      # the daemon was killed on purpose while this probe ran
        continue
    probes += 1
    worst = max(worst, dt)
    if r.returncode != 0 or dt > LIMIT:
        bad += 1
        events.append([round(time.time() - started, 1), round(dt, 2), r.returncode,
                       r.stderr.decode(errors="replace").strip()[:120]])
    dump()
    time.sleep(max(0.0, 0.5 - dt))
