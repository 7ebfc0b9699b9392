/// Several processes at once run random namespace and data operations
/// (create, write, append, mkdir, rmdir, unlink, rename, RENAME_EXCHANGE,
/// link, symlink, truncate, xattrs, chmod, utime, fsync, reads) over one
/// small tree, so that they collide. Only the errors such races cause
/// (ENOENT, EEXIST, ENOTEMPTY, ...) are expected; anything else fails.
/// `check` then walks the tree: link counts must match the names found and
/// directories' the subdirectories, and it writes a listing (sizes, modes,
/// checksums, xattrs) to compare across a restart.
enum NamespaceStressScript {
    static let stress = #"""
import os, sys, random, errno, time, ctypes
from multiprocessing import Process
libc = ctypes.CDLL(None, use_errno=True)
root, seconds, nproc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
OK = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.EXDEV, errno.ENODATA}
def rp(rng, depth=3):
    parts = [f"d{rng.randrange(4)}" for _ in range(rng.randrange(depth))]
    return os.path.join(root, *parts, f"n{rng.randrange(12)}")
def worker(seed):
    rng = random.Random(seed); end = time.time() + seconds; n = 0; bad = []
    while time.time() < end:
        op = rng.choice(["create","write","append","mkdir","rmdir","unlink","rename","rename","link","symlink","truncate","setxattr","listdir","stat","fsync","read","chmod","utime","exchange"])
        a, b = rp(rng), rp(rng)
        try:
            if op == "create": os.close(os.open(a, os.O_CREAT|os.O_WRONLY|(os.O_EXCL if rng.random()<.5 else 0), 0o644))
            elif op in ("write","append"):
                fd = os.open(a, os.O_WRONLY|os.O_CREAT|(os.O_APPEND if op=="append" else 0), 0o644)
                try: os.pwrite(fd, os.urandom(rng.choice([1,100,5000,70000,300000])), rng.randrange(0, 9_000_000)) if op=="write" else os.write(fd, b"x"*rng.randrange(1,5000))
                finally: os.close(fd)
            elif op == "mkdir": os.makedirs(os.path.dirname(a), exist_ok=True); os.mkdir(a)
            elif op == "rmdir": os.rmdir(a)
            elif op == "unlink": os.unlink(a)
            elif op == "rename": os.rename(a, b)
            elif op == "link": os.link(a, b)
            elif op == "symlink": os.symlink(a, b)
            elif op == "truncate": os.truncate(a, rng.randrange(0, 6_000_000))
            elif op == "setxattr": os.setxattr(a, "user.k%d" % rng.randrange(3), os.urandom(rng.randrange(1,200)), follow_symlinks=False)
            elif op == "listdir": os.listdir(os.path.dirname(a))
            elif op == "stat": os.lstat(a)
            elif op == "fsync":
                fd = os.open(a, os.O_RDONLY)
                try: os.fsync(fd)
                finally: os.close(fd)
            elif op == "read":
                with open(a, "rb") as f: f.read()
            elif op == "chmod": os.chmod(a, rng.choice([0o600,0o644,0o755]))
            elif op == "utime": os.utime(a, None)
            elif op == "exchange":
                r = libc.renameat2(-100, a.encode(), -100, b.encode(), 2)
                if r != 0:
                    e = ctypes.get_errno()
                    if e not in OK: bad.append((op, a, b, errno.errorcode.get(e, e)))
        except OSError as e:
            if e.errno not in OK and not (e.errno == errno.EPERM and op in ("link", "setxattr")) and not (e.errno == errno.ELOOP): bad.append((op, a, b, errno.errorcode.get(e.errno, e.errno), str(e)))
        n += 1
    print(f"worker {seed}: {n} ops, {len(bad)} unexpected", bad[:5], flush=True)
    sys.exit(1 if bad else 0)
ps = [Process(target=worker, args=(s,)) for s in range(nproc)]
[p.start() for p in ps]; [p.join() for p in ps]
sys.exit(1 if any(p.exitcode for p in ps) else 0)
"""#

    static let check = #"""
import os, sys, hashlib, json
root = sys.argv[1]; names = {}; dirs = {}; out = {}; bad = []
for dp, dn, fn in os.walk(root):
    st = os.lstat(dp)
    sub = sum(1 for d in dn if not os.path.islink(os.path.join(dp, d)))
    if st.st_nlink != 2 + sub: bad.append(f"dir {dp}: nlink {st.st_nlink}, expected {2+sub}")
    for n in fn + [d for d in dn if os.path.islink(os.path.join(dp, d))]:
        p = os.path.join(dp, n); s = os.lstat(p)
        names.setdefault(s.st_ino, []).append(p)
        if os.path.islink(p): out[os.path.relpath(p, root)] = "->" + os.readlink(p)
        else:
            h = hashlib.md5(open(p, "rb").read()).hexdigest()
            out[os.path.relpath(p, root)] = f"{s.st_size} {oct(s.st_mode)} {h} " + ",".join(sorted(f"{k}={os.getxattr(p,k).hex()}" for k in os.listxattr(p)))
for ino, ps in names.items():
    s = os.lstat(ps[0])
    if not os.path.islink(ps[0]) and s.st_nlink != len(ps): bad.append(f"ino {ino}: nlink {s.st_nlink}, names {ps}")
json.dump(out, open(sys.argv[2], "w"), sort_keys=True, indent=0)
print(len(out), "entries;", len(bad), "problems"); print("\n".join(bad[:20]))
sys.exit(1 if bad else 0)
"""#
}
