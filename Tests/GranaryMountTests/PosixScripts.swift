/// POSIX checks run by Python 3 against the mount: exact errno values,
/// link counts, timestamps and permissions as another user.
enum PosixScripts {
    static let prelude = #"""
import os, sys, errno, stat, time, ctypes, ctypes.util
M = sys.argv[1]
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
failures = []
def check(cond, what):
    if not cond: failures.append(what)
def expect_errno(code, fn, what):
    try:
        fn()
        failures.append(f"{what}: succeeded, expected {errno.errorcode[code]}")
    except OSError as e:
        if e.errno != code:
            failures.append(f"{what}: {errno.errorcode.get(e.errno, e.errno)}, expected {errno.errorcode[code]}")
def p(*parts): return os.path.join(M, *parts)
def as_user(fn, uid=65534, gid=65534):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([]); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
            r = fn()
            os._exit(0 if r is None else r)
        except OSError as e:
            os._exit(100 + (e.errno or 0) % 100)
        except BaseException as e:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
def finish():
    if failures:
        print("FAILURES:\n" + "\n".join(failures)); sys.exit(1)
    print("OK")
"""#

    static let files = prelude + "\n" + #"""
# create, O_EXCL, O_APPEND, O_TRUNC, holes, random offsets
fd = os.open(p("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.write(fd, b"hello"); os.close(fd)
expect_errno(errno.EEXIST, lambda: os.open(p("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY), "O_EXCL on existing file")
fd = os.open(p("f"), os.O_WRONLY | os.O_APPEND); os.write(fd, b" world"); os.close(fd)
check(open(p("f"), "rb").read() == b"hello world", "append")
fd = os.open(p("f"), os.O_WRONLY | os.O_TRUNC); os.close(fd)
check(os.stat(p("f")).st_size == 0, "O_TRUNC")
expect_errno(errno.ENOENT, lambda: os.open(p("missing"), os.O_RDONLY), "open missing")
expect_errno(errno.ENOENT, lambda: os.stat(p("nodir", "x")), "stat below missing dir")
with open(p("holes"), "wb") as f:
    f.seek(10 << 20); f.write(b"end")
    f.seek(4096); f.write(b"x" * 100)
data = open(p("holes"), "rb").read()
check(len(data) == (10 << 20) + 3 and data[:4096] == bytes(4096) and data[4096:4196] == b"x" * 100 and data[-3:] == b"end" and data[5000:(10 << 20)] == bytes((10 << 20) - 5000), "holes read as zeros")
# write-only descriptors bypass the kernel's page cache (direct I/O): what
# they write is seen by a descriptor that cached the page and by a mapping
import mmap
open(p("coherent"), "wb").write(b"A" * 8192)
rd = os.open(p("coherent"), os.O_RDWR)
check(os.pread(rd, 4, 0) == b"AAAA", "read before a write-only write")
wo = os.open(p("coherent"), os.O_WRONLY); os.pwrite(wo, b"BBBB", 0); os.close(wo)
check(os.pread(rd, 4, 0) == b"BBBB", "a cached descriptor sees a write-only descriptor's write")
mp = mmap.mmap(rd, 8192)
wo = os.open(p("coherent"), os.O_WRONLY); os.pwrite(wo, b"CCCC", 4096); os.close(wo)
check(mp[4096:4100] == b"CCCC", "a mapping sees a write-only descriptor's write")
mp[0:4] = b"DDDD"; mp.flush(); mp.close(); os.close(rd)
check(open(p("coherent"), "rb").read(4) == b"DDDD", "a mapping's write reads back")
# small files: cut and extended, grown past their first home, and new ones
# where deleted ones were never show old bytes
open(p("small"), "wb").write(b"s" * 60000); os.truncate(p("small"), 10); os.truncate(p("small"), 50000)
check(open(p("small"), "rb").read() == b"s" * 10 + bytes(49990), "small file cut then extended reads zeros")
with open(p("small"), "r+b") as f: f.seek(200000); f.write(b"tail")
data = open(p("small"), "rb").read()
check(len(data) == 200004 and data[:10] == b"s" * 10 and data[10:200000] == bytes(199990) and data[200000:] == b"tail", "small file grown past 128 KiB")
for i in range(40): open(p(f"old{i}"), "wb").write(bytes([65 + i % 26]) * 100000)
for i in range(40): os.unlink(p(f"old{i}"))
time.sleep(1.5)  # the uploader's passes hand freed space back
for i in range(40):
    with open(p(f"new{i}"), "wb") as f: f.seek(99999); f.write(b"!")
check(all(open(p(f"new{i}"), "rb").read() == bytes(99999) + b"!" for i in range(40)), "new small files never show a deleted file's bytes")
import random
random.seed(7)
ref = bytearray(9 << 20)
with open(p("rand"), "w+b") as f:
    for _ in range(300):
        off = random.randrange(0, len(ref) - 70000); n = random.randrange(1, 70000)
        b = os.urandom(n); ref[off:off+n] = b; f.seek(off); f.write(b)
    f.truncate(len(ref))
check(open(p("rand"), "rb").read() == bytes(ref), "random writes read back")
# truncate / ftruncate
with open(p("t"), "wb") as f: f.write(b"a" * 10000)
os.truncate(p("t"), 100); check(os.stat(p("t")).st_size == 100, "truncate down")
os.truncate(p("t"), 5000); d = open(p("t"), "rb").read(); check(d == b"a" * 100 + bytes(4900), "truncate up reads zeros")
fd = os.open(p("t"), os.O_RDWR); os.ftruncate(fd, 7); os.close(fd); check(open(p("t"),"rb").read() == b"a"*7, "ftruncate")
expect_errno(errno.EISDIR, lambda: os.truncate(M, 0), "truncate a directory")
# fallocate: mode 0 grows the size, KEEP_SIZE does not
fd = os.open(p("fa"), os.O_CREAT | os.O_RDWR, 0o644)
os.posix_fallocate(fd, 0, 100000); check(os.fstat(fd).st_size == 100000, "fallocate mode 0")
r = libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(1 << 20)); check(r == 0 and os.fstat(fd).st_size == 100000, "fallocate KEEP_SIZE")
os.close(fd)
# names
check(os.open(p("n" * 255), os.O_CREAT | os.O_WRONLY, 0o644) >= 0, "255-byte name")
expect_errno(errno.ENAMETOOLONG, lambda: os.open(p("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644), "256-byte name")
expect_errno(errno.ENOTDIR, lambda: os.open(p("f", "x"), os.O_CREAT | os.O_WRONLY, 0o644), "file as directory")
expect_errno(errno.EISDIR, lambda: os.open(M, os.O_WRONLY), "open dir for writing")
# unlink of an open file stays usable until the last close
fd = os.open(p("open-unlinked"), os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b"still here"); os.unlink(p("open-unlinked"))
expect_errno(errno.ENOENT, lambda: os.stat(p("open-unlinked")), "unlinked name gone")
os.write(fd, b"!"); os.lseek(fd, 0, 0); check(os.read(fd, 100) == b"still here!", "open unlinked file readable")
check(os.fstat(fd).st_nlink == 0, "unlinked nlink 0")
os.close(fd)
# fsync and fdatasync on files and directories
fd = os.open(p("f"), os.O_RDWR); os.fsync(fd); os.fdatasync(fd); os.close(fd)
fd = os.open(M, os.O_RDONLY); os.fsync(fd); os.close(fd)
# special files
os.mkfifo(p("fifo"), 0o600); check(stat.S_ISFIFO(os.stat(p("fifo")).st_mode), "mkfifo")
os.mknod(p("chr"), 0o600 | stat.S_IFCHR, os.makedev(1, 3)); st = os.stat(p("chr"))
check(stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3), "mknod char device")
os.statvfs(M)
finish()
"""#

    static let directories = prelude + "\n" + #"""
os.mkdir(p("d")); expect_errno(errno.EEXIST, lambda: os.mkdir(p("d")), "mkdir existing")
base = os.stat(M).st_nlink
os.mkdir(p("d2")); check(os.stat(M).st_nlink == base + 1, "mkdir raises parent nlink")
check(os.stat(p("d2")).st_nlink == 2, "new dir nlink 2")
open(p("d", "x"), "w").close()
expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(p("d")), "rmdir non-empty")
expect_errno(errno.ENOTDIR, lambda: os.rmdir(p("d", "x")), "rmdir a file")
expect_errno(errno.EISDIR, lambda: os.unlink(p("d")), "unlink a directory")
expect_errno(errno.ENOENT, lambda: os.rmdir(p("nope")), "rmdir missing")
os.rmdir(p("d2")); check(os.stat(M).st_nlink == base, "rmdir lowers parent nlink")
# hard links
os.link(p("d", "x"), p("x2")); check(os.stat(p("x2")).st_nlink == 2, "link nlink 2")
os.link(p("x2"), p("x3")); check(os.stat(p("d", "x")).st_nlink == 3, "link nlink 3")
os.unlink(p("x3")); check(os.stat(p("x2")).st_nlink == 2, "unlink drops nlink")
expect_errno(errno.EPERM, lambda: os.link(p("d"), p("dlink")), "link a directory")
expect_errno(errno.EEXIST, lambda: os.link(p("x2"), p("d", "x")), "link over existing")
# symlinks
os.symlink("d/x", p("s")); check(os.readlink(p("s")) == "d/x", "readlink")
check(stat.S_ISLNK(os.lstat(p("s")).st_mode) and os.stat(p("s")).st_ino == os.stat(p("d","x")).st_ino, "symlink resolves")
expect_errno(errno.EEXIST, lambda: os.symlink("y", p("s")), "symlink over existing")
# rename
open(p("a"), "w").write("A"); open(p("b"), "w").write("B")
os.rename(p("a"), p("b")); check(open(p("b")).read() == "A" and not os.path.exists(p("a")), "rename replaces a file")
os.mkdir(p("e1")); os.mkdir(p("e2")); os.rename(p("e1"), p("e2")); check(not os.path.exists(p("e1")) and os.path.isdir(p("e2")), "rename replaces an empty dir")
os.mkdir(p("full")); open(p("full", "f"), "w").close(); os.mkdir(p("mv"))
expect_errno(errno.ENOTEMPTY, lambda: os.rename(p("mv"), p("full")), "rename over non-empty dir")
expect_errno(errno.ENOTDIR, lambda: os.rename(p("mv"), p("b")), "rename dir over file")
expect_errno(errno.EISDIR, lambda: os.rename(p("b"), p("mv")), "rename file over dir")
os.mkdir(p("mv", "sub"))
expect_errno(errno.EINVAL, lambda: os.rename(p("mv"), p("mv", "sub", "inner")), "rename dir into its own subtree")
os.rename(p("mv"), p("d", "moved")); check(os.path.isdir(p("d", "moved", "sub")), "rename dir across parents")
check(os.stat(p("d")).st_nlink == 3, "moved dir counted in new parent")
def renameat2(a, b, flags):
    r = libc.renameat2(-100, a.encode(), -100, b.encode(), flags)
    if r != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
open(p("c"), "w").write("C")
expect_errno(errno.EEXIST, lambda: renameat2(p("c"), p("b"), 1), "RENAME_NOREPLACE")
renameat2(p("c"), p("b"), 2); check(open(p("b")).read() == "C" and open(p("c")).read() == "A", "RENAME_EXCHANGE")
x = os.stat(p("x2")).st_ino; os.link(p("x2"), p("x4")); os.rename(p("x2"), p("x4"))
check(os.path.exists(p("x2")) and os.stat(p("x4")).st_ino == x, "rename between links of one file does nothing")
# readdir: every entry exactly once, also while the directory changes
os.mkdir(p("many"))
for i in range(600): open(p("many", f"f{i:04}"), "w").close()
names = sorted(os.listdir(p("many"))); check(names == [f"f{i:04}" for i in range(600)], "readdir lists all")
seen = []
with os.scandir(p("many")) as it:
    for n, e in enumerate(it):
        seen.append(e.name)
        if n == 10:
            for i in range(300, 310): os.unlink(p("many", f"f{i:04}"))
            open(p("many", "new"), "w").close()
check(len(seen) == len(set(seen)), "no entry twice while the directory changes")
check(all(f"f{i:04}" in seen for i in list(range(0, 300)) + list(range(310, 600))), "untouched entries all listed")
# xattrs
os.setxattr(p("b"), "user.k", b"v1"); check(os.getxattr(p("b"), "user.k") == b"v1", "getxattr")
expect_errno(errno.EEXIST, lambda: os.setxattr(p("b"), "user.k", b"v", os.XATTR_CREATE), "XATTR_CREATE existing")
expect_errno(errno.ENODATA, lambda: os.setxattr(p("b"), "user.z", b"v", os.XATTR_REPLACE), "XATTR_REPLACE missing")
os.setxattr(p("b"), "trusted.t", b"tv"); check(sorted(os.listxattr(p("b"))) == ["trusted.t", "user.k"], "listxattr")
os.removexattr(p("b"), "user.k"); expect_errno(errno.ENODATA, lambda: os.getxattr(p("b"), "user.k"), "removed xattr")
expect_errno(errno.ENODATA, lambda: os.removexattr(p("b"), "user.k"), "remove missing xattr")
# A file's xattr names stay listable: past 64 KiB of names (XATTR_LIST_MAX)
# a new name is refused with ENOSPC, and the list still comes back whole.
open(p("many-x"), "w").close()
added = 0
try:
    for i in range(10000):
        os.setxattr(p("many-x"), f"user.a-rather-long-attribute-name-{i:05}", b"v"); added += 1
except OSError as e:
    check(e.errno == errno.ENOSPC, f"setxattr past the list limit: {e}")
check(0 < added < 10000, f"xattr names refused past the list limit (added {added})")
names = os.listxattr(p("many-x"))
check(len(names) == added and sum(len(n) + 1 for n in names) <= 65536, "listxattr returns every name")
os.setxattr(p("many-x"), "user.a-rather-long-attribute-name-00000", b"replaced")
check(os.getxattr(p("many-x"), "user.a-rather-long-attribute-name-00000") == b"replaced", "an existing name can still be replaced")
os.removexattr(p("many-x"), "user.a-rather-long-attribute-name-00001")
os.setxattr(p("many-x"), "user.x", b"fits"); check(os.getxattr(p("many-x"), "user.x") == b"fits", "room again after a remove")
big = bytes(65536)
try:
    for i in range(40): os.setxattr(p("b"), f"user.big{i}", big)
    check(False, "values past 1 MiB per file accepted")
except OSError as e:
    check(e.errno == errno.ENOSPC, f"values past 1 MiB per file: {e}")
for n in [n for n in os.listxattr(p("b")) if n.startswith("user.big")]: os.removexattr(p("b"), n)
finish()
"""#

    static let times = prelude + "\n" + #"""
open(p("t"), "w").close()
os.utime(p("t"), ns=(1_000_000_123, 2_000_000_456)); st = os.stat(p("t"))
check(st.st_atime_ns == 1_000_000_123 and st.st_mtime_ns == 2_000_000_456, "utimensat explicit times")
UTIME_NOW = (1 << 30) - 1; UTIME_OMIT = (1 << 30) - 2
class TS(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
def utimens(path, a, m):
    arr = (TS * 2)(a, m)
    if libc.utimensat(-100, path.encode(), arr, 0) != 0: raise OSError(ctypes.get_errno(), "utimensat")
utimens(p("t"), TS(5, 0), TS(0, UTIME_NOW)); st = os.stat(p("t"))
check(st.st_atime_ns == 5_000_000_000, "explicit atime with UTIME_NOW mtime")
check(abs(st.st_mtime - time.time()) < 5, "UTIME_NOW sets mtime to now")
utimens(p("t"), TS(0, UTIME_OMIT), TS(7, 0)); st = os.stat(p("t"))
check(st.st_atime_ns == 5_000_000_000 and st.st_mtime_ns == 7_000_000_000, "UTIME_OMIT keeps atime")
def changes(what, fn, path, fields):
    before = os.stat(path); time.sleep(0.05); fn(); after = os.stat(path)
    for f in fields:
        if not getattr(after, f) > getattr(before, f): failures.append(f"{what}: {f} not updated")
changes("chmod", lambda: os.chmod(p("t"), 0o600), p("t"), ["st_ctime_ns"])
changes("chown", lambda: os.chown(p("t"), 1, 1), p("t"), ["st_ctime_ns"])
changes("link", lambda: os.link(p("t"), p("t2")), p("t"), ["st_ctime_ns"])
changes("unlink other link", lambda: os.unlink(p("t2")), p("t"), ["st_ctime_ns"])
changes("write", lambda: open(p("t"), "a").write("x"), p("t"), ["st_mtime_ns", "st_ctime_ns"])
changes("truncate", lambda: os.truncate(p("t"), 0), p("t"), ["st_mtime_ns", "st_ctime_ns"])
changes("setxattr", lambda: os.setxattr(p("t"), "user.a", b"1"), p("t"), ["st_ctime_ns"])
changes("create in dir", lambda: open(p("new"), "w").close(), M, ["st_mtime_ns", "st_ctime_ns"])
changes("unlink in dir", lambda: os.unlink(p("new")), M, ["st_mtime_ns", "st_ctime_ns"])
changes("mkdir in dir", lambda: os.mkdir(p("dd")), M, ["st_mtime_ns", "st_ctime_ns"])
changes("rename in dir", lambda: os.rename(p("dd"), p("de")), M, ["st_mtime_ns", "st_ctime_ns"])
changes("rename moves ctime", lambda: os.rename(p("t"), p("t3")), p("de"), [])
changes("rmdir in dir", lambda: os.rmdir(p("de")), M, ["st_mtime_ns", "st_ctime_ns"])
finish()
"""#

    static let permissions = prelude + "\n" + #"""
os.chmod(M, 0o755)
open(p("secret"), "w").write("s"); os.chmod(p("secret"), 0o600)
check(as_user(lambda: os.open(p("secret"), os.O_RDONLY) and None) == 100 + errno.EACCES, "other user reading a 0600 file: EACCES")
check(as_user(lambda: open(p("nobody-file"), "w").close()) == 100 + errno.EACCES, "other user creating in a 0755 root dir: EACCES")
check(as_user(lambda: os.chmod(p("secret"), 0o777)) == 100 + errno.EPERM, "other user chmod: EPERM")
check(as_user(lambda: os.chown(p("secret"), 65534, 65534)) == 100 + errno.EPERM, "other user chown: EPERM")
check(as_user(lambda: os.utime(p("secret"), (1, 1))) == 100 + errno.EPERM, "other user setting times: EPERM")
os.mkdir(p("shared")); os.chmod(p("shared"), 0o1777)
open(p("shared", "roots"), "w").close()
check(as_user(lambda: os.unlink(p("shared", "roots"))) == 100 + errno.EPERM, "sticky dir: other user cannot delete root's file")
check(as_user(lambda: open(p("shared", "mine"), "w").close()) == 0, "other user creates in 1777 dir")
st = os.stat(p("shared", "mine")); check(st.st_uid == 65534 and st.st_gid == 65534, "new file owned by its creator")
check(as_user(lambda: os.unlink(p("shared", "mine"))) == 0, "owner deletes own file in sticky dir")
# setgid directory: new entries take its group, subdirectories keep the bit
os.mkdir(p("sg")); os.chown(p("sg"), 0, 4242); os.chmod(p("sg"), 0o2777)
check(as_user(lambda: (open(p("sg", "f"), "w").close(), os.mkdir(p("sg", "sub")))[0]) == 0, "create in setgid dir")
check(os.stat(p("sg", "f")).st_gid == 4242, "setgid dir: file inherits group")
check(os.stat(p("sg", "sub")).st_gid == 4242 and os.stat(p("sg", "sub")).st_mode & stat.S_ISGID, "setgid dir: subdir inherits group and bit")
# suid/sgid cleared on write by another user and on chown
open(p("suid"), "w").write("x"); os.chmod(p("suid"), 0o6777)
check(as_user(lambda: open(p("suid"), "a").write("y") and None) == 0, "other user writes a 0777 file")
check(os.stat(p("suid")).st_mode & 0o6000 == 0, "write by another user clears suid/sgid")
os.chmod(p("suid"), 0o6777)
def write_rw():
    with open(p("suid"), "r+b") as f: f.write(b"w")
check(as_user(write_rw) == 0, "other user writes a 0777 file through a read-write descriptor")
check(os.stat(p("suid")).st_mode & 0o6000 == 0, "a read-write descriptor's write by another user clears suid/sgid")
os.chmod(p("suid"), 0o4755); os.chown(p("suid"), 1, 1)
check(os.stat(p("suid")).st_mode & stat.S_ISUID == 0, "chown clears suid")
os.chmod(p("suid"), 0o6755); os.chown(p("suid"), -1, -1)
check(os.stat(p("suid")).st_mode & 0o7777 == 0o755, "chown(-1, -1) clears suid and group-executable sgid")
# ... on truncate by another user; root keeps them (CAP_FSETID); setgid
# without group execute marks mandatory locking and stays
os.chown(p("suid"), 0, 0); os.chmod(p("suid"), 0o6777)
check(as_user(lambda: os.truncate(p("suid"), 1)) == 0, "other user truncates a 0777 file")
check(os.stat(p("suid")).st_mode & 0o6000 == 0, "truncate by another user clears suid/sgid")
os.chmod(p("suid"), 0o6777); open(p("suid"), "a").write("z"); os.truncate(p("suid"), 1)
check(os.stat(p("suid")).st_mode & 0o7777 == 0o6777, "root's write and truncate keep suid/sgid")
os.chmod(p("suid"), 0o6766)
check(as_user(lambda: open(p("suid"), "a").write("y") and None) == 0, "other user writes a 0766 file")
check(os.stat(p("suid")).st_mode & 0o7777 == 0o2766, "write clears suid; setgid without group execute stays")
os.setxattr(p("suid"), "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16); os.chmod(p("suid"), 0o777)
check(as_user(lambda: open(p("suid"), "a").write("y") and None) == 0, "other user writes a file with a capability")
check("security.capability" not in os.listxattr(p("suid")), "write by another user removes the file capability")
# access(2) follows the mode bits
check(as_user(lambda: 0 if not os.access(p("secret"), os.R_OK) else 1) == 0, "access() denies other user")
finish()
"""#
}
