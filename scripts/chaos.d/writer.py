#!/usr/bin/env python3
"""Writers for scripts/chaos that cp cannot be: out-of-order writers, and a maker of small random files.

  writer.py mkfiles DIR COUNT MIN_BYTES MAX_BYTES SEED
      COUNT random files (distinct content) of MIN..MAX bytes under DIR/dNN/fNNNN.

  writer.py reverse MANIFEST ID SRC DEST BLOCK
      Copies SRC to DEST (a new file, opened O_WRONLY|O_CREAT without O_TRUNC) writing BLOCK-byte blocks
      from the last to the first, so the mount must take the cached (out-of-order) path.

  writer.py append MANIFEST ID SRC DEST
      Appends SRC to the existing DEST (O_WRONLY|O_APPEND: the cached path).

  writer.py reorder MANIFEST SLICE ID:SRC:DEST ...
      Opens every DEST, then for each file in turn writes its second slice [SLICE, 2*SLICE) (in 1 MiB
      writes, as cp does), then for each file its first slice [0, SLICE), then the rest of each file in
      order, then closes them in order: every file writes inside its reorder window ahead of an
      unfinished head, all at once.

Each writer appends `op<TAB>ID<TAB>RC<TAB>SECONDS<TAB>MESSAGE` lines to MANIFEST (one per file; RC 0 on
success, else the errno number, MESSAGE "<stage>: <strerror>").
"""
import os
import random
import sys
import time

CHUNK = 1 << 20


def record(manifest, ident, rc, seconds, msg):
    line = f"op\t{ident}\t{rc}\t{seconds:.1f}\t{msg}\n".encode()
    fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def mkfiles(root, count, lo, hi, seed):
    rng = random.Random(seed)
    for i in range(count):
        d = os.path.join(root, f"d{i // 50:02d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:04d}.bin"), "wb") as f:
            f.write(os.urandom(rng.randint(lo, hi)))


def pwrite_all(fd, data, offset):
    view = memoryview(data)
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:done + CHUNK], offset + done)
        done += n


def reverse(manifest, ident, src, dest, block):
    t0 = time.monotonic()
    stage = "open"
    try:
        size = os.path.getsize(src)
        # No O_TRUNC: an open for writing without it takes the cached path from the start
        # (doc/SEMANTICS.md); the blocks then land in reverse order.
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            stage = "write"
            with open(src, "rb") as s:
                offsets = list(range(0, size, block))
                for off in reversed(offsets):
                    s.seek(off)
                    pwrite_all(fd, s.read(block), off)
        finally:
            if stage == "write":
                stage = "close"
            os.close(fd)
        record(manifest, ident, 0, time.monotonic() - t0, "")
        return 0
    except OSError as e:
        record(manifest, ident, e.errno or 1, time.monotonic() - t0, f"{stage}: {os.strerror(e.errno or 5)}")
        return 1


def append(manifest, ident, src, dest):
    t0 = time.monotonic()
    stage = "open"
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_APPEND)
        try:
            stage = "write"
            with open(src, "rb") as s:
                for block in iter(lambda: s.read(CHUNK), b""):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view):]
        finally:
            if stage == "write":
                stage = "close"
            os.close(fd)
        record(manifest, ident, 0, time.monotonic() - t0, "")
        return 0
    except OSError as e:
        record(manifest, ident, e.errno or 1, time.monotonic() - t0, f"{stage}: {os.strerror(e.errno or 5)}")
        return 1


def reorder(manifest, slice_size, specs):
    t0 = time.monotonic()
    files = []
    for spec in specs:
        ident, src, dest = spec.split(":", 2)
        files.append({"id": ident, "src": open(src, "rb").read(), "dest": dest, "fd": None, "err": None})

    def step(f, stage, fn):
        if f["err"]:
            return
        try:
            fn()
        except OSError as e:
            f["err"] = (e.errno or 5, f"{stage}: {os.strerror(e.errno or 5)}")
            record(manifest, f["id"], f["err"][0], time.monotonic() - t0, f["err"][1])

    for f in files:
        def o(f=f):
            f["fd"] = os.open(f["dest"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        step(f, "open", o)
    for f in files:   # second slice first, for every file, while every head is unfinished
        step(f, "write of the second slice", lambda f=f: pwrite_all(f["fd"], f["src"][slice_size:2 * slice_size], slice_size))
    for f in files:   # then each head
        step(f, "write of the first slice", lambda f=f: pwrite_all(f["fd"], f["src"][:slice_size], 0))
    for f in files:   # then the rest in order
        step(f, "write of the rest", lambda f=f: pwrite_all(f["fd"], f["src"][2 * slice_size:], 2 * slice_size))
    failed = 0
    for f in files:
        if f["fd"] is None:
            failed += 1
            continue
        try:
            os.close(f["fd"])
            if not f["err"]:
                record(manifest, f["id"], 0, time.monotonic() - t0, "")
        except OSError as e:
            if not f["err"]:
                record(manifest, f["id"], e.errno or 5, time.monotonic() - t0, f"close: {os.strerror(e.errno or 5)}")
            f["err"] = True
        failed += 1 if f["err"] else 0
    return 1 if failed else 0


def main():
    mode = sys.argv[1]
    a = sys.argv[2:]
    if mode == "mkfiles":
        mkfiles(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]))
        return 0
    if mode == "reverse":
        return reverse(a[0], a[1], a[2], a[3], int(a[4]))
    if mode == "append":
        return append(a[0], a[1], a[2], a[3])
    if mode == "reorder":
        return reorder(a[0], int(a[1]), a[2:])
    print(f"writer.py: unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
