/// Punch hole and zero range on files in the mount and, the same calls, on
/// a local copy of each: sizes and bytes must match. `apply` runs the calls
/// on the files named; `compare` only compares.
enum FallocateScript {
    static let source = #"""
import os, sys, errno, ctypes, ctypes.util
mnt, ref, phase, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
KEEP, PUNCH, ZERO, COLLAPSE, INSERT = 0x01, 0x02, 0x10, 0x08, 0x20
M = 1 << 20
failures = []
def falloc(fd, mode, off, ln):
    return 0 if libc.fallocate(fd, mode, off, ln) == 0 else ctypes.get_errno()
def compare(name, when):
    x, y = open(os.path.join(mnt, name), "rb").read(), open(os.path.join(ref, name), "rb").read()
    if x != y:
        k = next((j for j in range(min(len(x), len(y))) if x[j] != y[j]), min(len(x), len(y)))
        failures.append(f"{name} {when}: {len(x)} bytes, expected {len(y)}, first difference at {k}")
if phase == "apply":
    for name in names:
        fa, fb = (os.open(os.path.join(d, name), os.O_RDWR) for d in (mnt, ref))
        size = os.fstat(fb).st_size
        calls = [(PUNCH | KEEP, 4 * M, 4 * M),            # a whole 4 MiB chunk
                 (PUNCH | KEEP, 100, 5000),               # inside one chunk
                 (PUNCH | KEEP, 4 * M - 10, 20),          # across a chunk boundary
                 (PUNCH | KEEP, 9 * M, 5 * M),            # a partial and a whole chunk
                 (PUNCH | KEEP, size - 100, 1000),        # past the end: the size stays
                 (ZERO | KEEP, M, M),
                 (ZERO | KEEP, size + M, M),              # wholly past the end: nothing
                 (ZERO, size - 3 * M, 5 * M)]             # grows the file
        for i, (mode, off, ln) in enumerate(calls):
            a, b = falloc(fa, mode, off, ln), falloc(fb, mode, off, ln)
            if a != 0 or b != 0:
                failures.append(f"{name} call {i} (mode {mode:#x} at {off}+{ln}): {errno.errorcode.get(a, a)} on the mount, {errno.errorcode.get(b, b)} locally")
            sa, sb = os.fstat(fa).st_size, os.fstat(fb).st_size
            if sa != sb: failures.append(f"{name} call {i}: size {sa}, expected {sb}")
            os.lseek(fa, off, 0); os.lseek(fb, off, 0)
            if os.read(fa, ln) != os.read(fb, ln): failures.append(f"{name} call {i}: the range reads back wrong")
        for mode, what in [(PUNCH, "punch hole without KEEP_SIZE"), (COLLAPSE, "collapse range"), (INSERT, "insert range")]:
            r = falloc(fa, mode, 0, 4096)
            if r != errno.EOPNOTSUPP: failures.append(f"{what}: {errno.errorcode.get(r, r)}, expected EOPNOTSUPP")
        os.fsync(fa); os.close(fa); os.close(fb)
for name in names: compare(name, phase)
if failures: print("\n".join(failures)); sys.exit(1)
print("OK")
"""#
}
