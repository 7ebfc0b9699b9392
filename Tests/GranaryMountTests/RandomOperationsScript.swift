/// An fsx-style check: seeded random writes, appends, truncates, mmap
/// writes, hole punches, reads, deletes and fsyncs on a few files in the mount, each
/// mirrored on a local file; every read and, every 50 operations, the whole
/// file must match. Run while the uploader seals the same files.
enum RandomOperationsScript {
    static let source = #"""
import os, sys, random, mmap, ctypes, ctypes.util
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
mnt, ref, seed, ops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
NF, MAXSZ = 6, 600_000
def pair(i): return os.path.join(mnt, f"fx{i}"), os.path.join(ref, f"fx{i}")
for i in range(NF):
    for p in pair(i): open(p, "wb").close()
history = {i: [] for i in range(NF)}
def fail(i, what):
    print(f"seed {seed}: {what}"); print("last operations on the file:", history[i][-12:]); sys.exit(1)
def check(i, n):
    a, b = pair(i)
    x, y = open(a, "rb").read(), open(b, "rb").read()
    if x != y:
        k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
        fail(i, f"file {i} after operation {n}: {len(x)} bytes, expected {len(y)}, first difference at {k}")
for n in range(ops):
    i = rng.randrange(NF)
    a, b = pair(i)
    op = rng.choice(["write", "write", "write", "truncate", "read", "mmap", "delete", "append", "fsync", "punch"])
    size = os.path.getsize(b)
    if op in ("write", "append"):
        off = size if op == "append" else rng.randrange(0, MAXSZ)
        data = bytes([rng.randrange(256)]) * rng.choice([1, 100, 4096, 30000, 140000])
        for p in (a, b):
            with open(p, "r+b") as f: f.seek(off); f.write(data)
    elif op == "truncate":
        t = rng.randrange(0, MAXSZ)
        for p in (a, b): os.truncate(p, t)
    elif op == "read":
        off, ln = rng.randrange(0, max(1, size)), rng.randrange(1, 200000)
        with open(a, "rb") as f: f.seek(off); x = f.read(ln)
        with open(b, "rb") as f: f.seek(off); y = f.read(ln)
        if x != y: fail(i, f"read of {ln} at {off} in file {i} (operation {n}) returned {len(x)} bytes, expected {len(y)}")
    elif op == "mmap" and size > 0:
        off = rng.randrange(0, size); ln = min(rng.randrange(1, 9000), size - off); v = rng.randrange(256)
        for p in (a, b):
            with open(p, "r+b") as f:
                m = mmap.mmap(f.fileno(), size); m[off:off + ln] = bytes([v]) * ln; m.flush(); m.close()
    elif op == "punch" and size > 0:
        off, ln = rng.randrange(0, size), rng.randrange(1, 200000)
        mode = rng.choice([0x03, 0x11, 0x10])  # punch hole, zero range (keeping the size or not)
        for p in (a, b):
            fd = os.open(p, os.O_RDWR)
            if libc.fallocate(fd, mode, off, ln) != 0: fail(i, f"fallocate {mode:#x} at {off}+{ln}: errno {ctypes.get_errno()}")
            os.close(fd)
    elif op == "delete":
        for p in (a, b): os.unlink(p); open(p, "wb").close()
    elif op == "fsync":
        fd = os.open(a, os.O_RDWR); os.fsync(fd); os.close(fd)
    history[i].append((n, op, size))
    if n % 50 == 0: check(i, n)
for i in range(NF): check(i, "end")
print("OK")
"""#
}
