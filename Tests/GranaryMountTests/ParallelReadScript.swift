/// Reader threads read files of the mount with O_DIRECT (so every read
/// reaches the mount, not the page cache) while another thread rewrites,
/// truncates and recreates them, and the test flushes and evicts: a reply
/// must never carry bytes of a slab slot or cache file another chunk took
/// over, nor fail.
/// Every file holds one byte value of its own; any other byte but zero is
/// a leak. (Zeros are not: when a direct read comes back short because of
/// a concurrent truncate, the kernel reads the rest through the page cache
/// and may zero-fill it against a size that changed meanwhile, as it does
/// on any FUSE file system.)
enum ParallelReadScript {
    static let source = #"""
import os, sys, threading, random, time, mmap
root, seconds = sys.argv[1], float(sys.argv[2])
# Small files live in slab slots, large ones in cache files of their own.
specs = [(f"s{i}", 1 + i, 20_000 + i * 3_001) for i in range(40)]
specs += [(f"b{i}", 100 + i, 9 * 1024 * 1024 + i * 4096) for i in range(3)]
def write(name, val, size):
    with open(os.path.join(root, name), "wb") as f: f.write(bytes([val]) * size)
for s in specs: write(*s)
deadline = time.time() + seconds
errors, counts = [], [0, 0]
def reader(seed):
    r = random.Random(seed)
    buf = mmap.mmap(-1, 1 << 20)  # O_DIRECT wants an aligned buffer
    while time.time() < deadline and not errors:
        name, val, size = r.choice(specs)
        try: fd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_DIRECT)
        except FileNotFoundError: continue
        try:
            n = os.preadv(fd, [buf], r.randrange(0, size) & ~4095)
        finally: os.close(fd)
        data = buf[:n]
        stray = data.translate(None, bytes([0, val]))
        if stray:
            errors.append(f"{name} (byte {val}) read {len(stray)} stray bytes, e.g. {stray[:8].hex()}")
        counts[0] += 1; counts[1] += n
def mutator():
    r = random.Random(99)
    while time.time() < deadline and not errors:
        name, val, size = r.choice(specs)
        p = os.path.join(root, name)
        op = r.randrange(3)
        if op == 0: write(name, val, size)               # truncate to 0, write again
        elif op == 1: os.unlink(p); write(name, val, size)  # a new inode
        else:
            with open(p, "r+b") as f: f.truncate(size // 2); f.seek(size // 2); f.write(bytes([val]) * (size - size // 2))
def guarded(body, *args):
    try: body(*args)
    except Exception as e: errors.append(f"{body.__name__}: {e!r}")
threads = [threading.Thread(target=guarded, args=(reader, i)) for i in range(4)]
threads.append(threading.Thread(target=guarded, args=(mutator,)))
for t in threads: t.start()
for t in threads: t.join()
if errors: print("\n".join(errors[:10])); sys.exit(1)
if counts[0] < 100: print(f"only {counts[0]} reads"); sys.exit(1)
print(f"{counts[0]} reads, {counts[1] >> 20} MiB")
"""#
}
