/// POSIX conformance checks run by Python 3 against the mount, as root and
/// as other users: ACLs, umask, atime, and the permission rules a
/// conformance suite (pjdfstest) exercises. Each script prints OK or the
/// list of what failed.
enum ConformanceScripts {
    static let prelude = PosixScripts.prelude + "\n" + #"""
import struct
def as_user_in(fn, uid, gid, groups):
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(groups); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
            r = fn()
            os._exit(0 if r is None else r)
        except OSError as e:
            os._exit(100 + (e.errno or 0) % 100)
        except BaseException:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
def mode(path): return stat.S_IMODE(os.lstat(path).st_mode)
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 1, 2, 4, 8, 0x10, 0x20
ANY = 0xffffffff
def acl(*entries):
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, perm, i) for t, perm, i in entries)
def acl_entries(blob):
    return [struct.unpack_from("<HHI", blob, 4 + 8 * k) for k in range((len(blob) - 4) // 8)]
ACCESS, DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
def reads(path): return lambda: (open(path, "rb").read(), None)[1]
def appends(path): return lambda: (open(path, "ab").close(), None)[1]
"""#

    /// Access and default ACLs through the kernel's enforcement, the mode
    /// kept in step both ways, and the umask where no default ACL applies.
    static let acls = prelude + "\n" + #"""
os.chmod(M, 0o755)
open(p("f"), "w").write("secret"); os.chmod(p("f"), 0o600)
check(as_user(reads(p("f"))) == 100 + errno.EACCES, "0600 file unreadable by another user before an ACL")
os.setxattr(p("f"), ACCESS, acl((USER_OBJ, 6, ANY), (USER, 4, 65534), (GROUP_OBJ, 0, ANY), (MASK, 4, ANY), (OTHER, 0, ANY)))
check(mode(p("f")) == 0o640, f"group bits follow the ACL mask: {oct(mode(p('f')))}")
check(as_user(reads(p("f"))) == 0, "the ACL lets the named user read")
check(as_user(appends(p("f"))) == 100 + errno.EACCES, "the ACL does not let the named user write")
check(as_user(reads(p("f")), uid=65533, gid=65533) == 100 + errno.EACCES, "other users still cannot read")
os.chmod(p("f"), 0o600)
entries = {t: perm for t, perm, _ in acl_entries(os.getxattr(p("f"), ACCESS))}
check(entries.get(MASK) == 0 and entries.get(USER_OBJ) == 6, f"chmod rewrites the ACL mask: {entries}")
check(as_user(reads(p("f"))) == 100 + errno.EACCES, "chmod 0600 masks the named user out")
os.chmod(p("f"), 0o640)
check(as_user(reads(p("f"))) == 0, "chmod 0640 lets the named user back in")
# Setting an ACL outside the file's group drops set-group-ID, inside keeps it.
open(p("sg"), "w").close(); os.chown(p("sg"), 65534, 65533); os.chmod(p("sg"), 0o2770)
sg_acl = acl((USER_OBJ, 7, ANY), (USER, 5, 65532), (GROUP_OBJ, 7, ANY), (MASK, 7, ANY), (OTHER, 0, ANY))
check(as_user_in(lambda: os.setxattr(p("sg"), ACCESS, sg_acl), 65534, 65534, [65533]) == 0 and mode(p("sg")) == 0o2770, "ACL by a group member keeps setgid")
check(as_user(lambda: os.setxattr(p("sg"), ACCESS, sg_acl)) == 0 and mode(p("sg")) == 0o770, f"ACL by a non-member drops setgid: {oct(mode(p('sg')))}")
# An ACL the mode says in full is not kept; the mode takes its bits.
open(p("g"), "w").close()
os.setxattr(p("g"), ACCESS, acl((USER_OBJ, 7, ANY), (GROUP_OBJ, 5, ANY), (OTHER, 4, ANY)))
check(mode(p("g")) == 0o754, f"a minimal ACL sets the mode: {oct(mode(p('g')))}")
expect_errno(errno.ENODATA, lambda: os.getxattr(p("g"), ACCESS), "a minimal ACL is not stored")
expect_errno(errno.EINVAL, lambda: os.setxattr(p("g"), ACCESS, b"\x02\x00\x00\x00\x01"), "malformed ACL")
expect_errno(errno.EOPNOTSUPP, lambda: os.setxattr(p("g"), "system.other", b"x"), "other system.* names")
# Default ACL: new entries inherit it, and the umask does not apply.
os.mkdir(p("d"), 0o755)
os.setxattr(p("d"), DEFAULT, acl((USER_OBJ, 7, ANY), (USER, 6, 65534), (GROUP_OBJ, 5, ANY), (MASK, 7, ANY), (OTHER, 0, ANY)))
old = os.umask(0o077)
os.close(os.open(p("d", "new"), os.O_CREAT | os.O_WRONLY, 0o666))
os.mkdir(p("d", "sub"), 0o777)
os.umask(old)
check(mode(p("d", "new")) == 0o660, f"file under a default ACL: {oct(mode(p('d', 'new')))}")
check((USER, 6, 65534) in acl_entries(os.getxattr(p("d", "new"), ACCESS)), "file inherits the named-user entry")
check(as_user(appends(p("d", "new"))) == 0, "inherited ACL lets the named user write")
check(mode(p("d", "sub")) == 0o770, f"directory under a default ACL: {oct(mode(p('d', 'sub')))}")
check(os.getxattr(p("d", "sub"), DEFAULT) == os.getxattr(p("d"), DEFAULT), "subdirectory inherits the default ACL")
expect_errno(errno.EACCES, lambda: os.setxattr(p("f"), DEFAULT, os.getxattr(p("d"), DEFAULT)), "default ACL on a file")
# Without a default ACL the umask applies.
old = os.umask(0o027)
open(p("plain"), "w").close(); os.mkdir(p("plaindir"), 0o777)
os.mknod(p("fifo"), 0o666 | stat.S_IFIFO)
os.umask(old)
check(mode(p("plain")) == 0o640 and mode(p("plaindir")) == 0o750 and mode(p("fifo")) == 0o640,
      f"umask: {oct(mode(p('plain')))} {oct(mode(p('plaindir')))} {oct(mode(p('fifo')))}")
os.symlink("plain", p("link")); check(mode(p("link")) == 0o777, "symlinks ignore the umask")
check(sorted(n for n in os.listxattr(p("d", "sub")) if n.startswith("system.")) == [ACCESS, DEFAULT], "listxattr shows both ACLs")
finish()
"""#

    /// After a restart: ACLs and the modes they set are still there and enforced.
    static let aclsAfterRestart = prelude + "\n" + #"""
check(mode(p("f")) == 0o640 and (USER, 4, 65534) in acl_entries(os.getxattr(p("f"), ACCESS)), "access ACL persisted")
check(as_user(reads(p("f"))) == 0, "persisted ACL still lets the named user read")
check(os.getxattr(p("d", "sub"), DEFAULT) == os.getxattr(p("d"), DEFAULT), "default ACL persisted")
finish()
"""#

    /// atime moves on reads and listings (relatime: once after each change).
    static let atime = prelude + "\n" + #"""
def settled(fn, what):
    # The kernel refetches attributes after a read; allow it a moment.
    for _ in range(40):
        if fn(): return
        time.sleep(0.05)
    failures.append(what)
def read_uncached(path):
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.read(fd, 1 << 16); os.close(fd)
open(p("a"), "w").write("data" * 1000)
os.utime(p("a"), ns=(1_000_000_000, 2_000_000_000))
time.sleep(0.05)  # the read's atime must come after utime's ctime, even with a coarse clock
read_uncached(p("a"))
settled(lambda: os.stat(p("a")).st_atime_ns > 2_000_000_000, "reading a file updates its atime")
first = os.stat(p("a")).st_atime_ns
read_uncached(p("a"))
time.sleep(0.2)
check(os.stat(p("a")).st_atime_ns == first, "relatime: a second read does not move atime again")
os.mkdir(p("dir")); open(p("dir", "x"), "w").close()
os.utime(p("dir"), ns=(1_000_000_000, 2_000_000_000))
os.listdir(p("dir"))
settled(lambda: os.stat(p("dir")).st_atime_ns > 2_000_000_000, "listing a directory updates its atime")
finish()
"""#

    /// The rules pjdfstest checks most: sticky directories, chown and chmod
    /// by owners, utimensat permissions, set-id clearing, name limits,
    /// special files, link counts, big sparse files.
    static let rules = prelude + "\n" + #"""
os.chmod(M, 0o755)
# Sticky directory: only the file's or the directory's owner may remove or rename over.
os.mkdir(p("s")); os.chmod(p("s"), 0o1777)
open(p("s", "root"), "w").close()
check(as_user(lambda: os.rename(p("s", "root"), p("s", "mine"))) in (100 + errno.EPERM, 100 + errno.EACCES), "sticky: rename another user's file")
check(as_user(lambda: (open(p("s", "mine"), "w").close(), os.rename(p("s", "mine"), p("s", "root")))[0]) in (100 + errno.EPERM, 100 + errno.EACCES),
      "sticky: rename over another user's file")
check(as_user(lambda: os.rename(p("s", "mine"), p("s", "mine2"))) == 0, "sticky: rename own file")
os.mkdir(p("s", "rootdir"))
check(as_user(lambda: os.rmdir(p("s", "rootdir"))) in (100 + errno.EPERM, 100 + errno.EACCES), "sticky: rmdir another user's directory")
os.chown(p("s"), 65534, 65534)
check(as_user(lambda: os.unlink(p("s", "root"))) == 0, "sticky: the directory's owner removes anything")
# Moving a directory to another parent needs write access to it (its .. changes).
os.mkdir(p("a1")); os.mkdir(p("a2")); os.chmod(p("a1"), 0o777); os.chmod(p("a2"), 0o777)
os.mkdir(p("a1", "sub"), 0o755)
check(as_user(lambda: os.rename(p("a1", "sub"), p("a2", "sub"))) == 100 + errno.EACCES, "moving another user's directory across parents")
check(as_user(lambda: os.rename(p("a1", "sub"), p("a1", "sub2"))) == 0, "renaming it within its parent")
# chown by the owner: only to a group the owner is in; set-id bits drop.
open(p("c"), "w").close(); os.chown(p("c"), 65534, 65533); os.chmod(p("c"), 0o6755)
check(as_user_in(lambda: os.chown(p("c"), -1, 65532), 65534, 65534, [65532]) == 0, "owner chgrp to a supplementary group")
st = os.stat(p("c")); check(st.st_gid == 65532 and st.st_mode & 0o6000 == 0, f"chgrp by owner drops set-id bits: {oct(st.st_mode)}")
check(as_user_in(lambda: os.chown(p("c"), -1, 65531), 65534, 65534, [65532]) == 100 + errno.EPERM, "owner chgrp to a foreign group")
check(as_user(lambda: os.chown(p("c"), 65533, -1)) == 100 + errno.EPERM, "owner gives the file away")
check(as_user(lambda: os.chown(p("c"), -1, -1)) == 0, "chown -1 -1 by anyone")
# chmod by an owner outside the file's group drops setgid.
os.chown(p("c"), 65534, 65533)
check(as_user(lambda: os.chmod(p("c"), 0o2755)) == 0 and mode(p("c")) == 0o755, "setgid dropped by chmod outside the group")
check(as_user_in(lambda: os.chmod(p("c"), 0o2755), 65534, 65534, [65533]) == 0 and mode(p("c")) == 0o2755, "setgid kept inside the group")
# Sticky bit on a regular file by its owner is allowed on Linux.
check(as_user(lambda: os.chmod(p("c"), 0o1644)) == 0 and mode(p("c")) == 0o1644, "owner sets the sticky bit on a file")
# utimensat: explicit times need ownership; "now" needs write access.
UTIME_NOW = (1 << 30) - 1
class TS(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
def utimens(path, a, m):
    arr = (TS * 2)(a, m)
    if libc.utimensat(-100, path.encode(), arr, 0) != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
open(p("t"), "w").close(); os.chmod(p("t"), 0o644)
check(as_user(lambda: utimens(p("t"), TS(0, UTIME_NOW), TS(0, UTIME_NOW))) == 100 + errno.EACCES, "UTIME_NOW without write access")
os.chmod(p("t"), 0o666)
check(as_user(lambda: utimens(p("t"), TS(0, UTIME_NOW), TS(0, UTIME_NOW))) == 0, "UTIME_NOW with write access")
check(as_user(lambda: utimens(p("t"), TS(5, 0), TS(6, 0))) == 100 + errno.EPERM, "explicit times by a non-owner with write access")
os.chown(p("t"), 65534, 65534); os.chmod(p("t"), 0o444)
check(as_user(lambda: utimens(p("t"), TS(5, 7), TS(2**32, 0))) == 0, "explicit times by the owner")
st = os.stat(p("t")); check(st.st_atime_ns == 5_000_000_007 and st.st_mtime_ns == 2**32 * 10**9, "times past 2038 and nanoseconds kept")
# Failed calls leave ctime alone.
before = os.stat(p("t")).st_ctime_ns
as_user(lambda: os.chmod(p("t"), 0o777), uid=65533, gid=65533)
check(os.stat(p("t")).st_ctime_ns == before, "failed chmod keeps ctime")
# Names: NAME_MAX on every call that creates a name.
long = "n" * 256
for what, fn in [("mkdir", lambda: os.mkdir(p(long))), ("rename", lambda: os.rename(p("t"), p(long))),
                 ("link", lambda: os.link(p("t"), p(long))), ("symlink", lambda: os.symlink("t", p(long))),
                 ("mknod", lambda: os.mkfifo(p(long))), ("lookup", lambda: os.stat(p(long)))]:
    expect_errno(errno.ENAMETOOLONG, fn, f"256-byte name: {what}")
os.rename(p("t"), p("n" * 255)); os.rename(p("n" * 255), p("t"))
# Special files: sockets, devices, fifos keep their type through rename and link.
import socket
s = socket.socket(socket.AF_UNIX); s.bind(p("sock")); s.close()
os.mknod(p("blk"), 0o600 | stat.S_IFBLK, os.makedev(8, 1))
check(stat.S_ISSOCK(os.lstat(p("sock")).st_mode) and os.lstat(p("blk")).st_rdev == os.makedev(8, 1), "socket and block device")
os.link(p("sock"), p("sock2")); os.rename(p("sock2"), p("sock3"))
check(os.lstat(p("sock3")).st_nlink == 2 and stat.S_ISSOCK(os.lstat(p("sock3")).st_mode), "hard-linked socket")
expect_errno(errno.ENXIO, lambda: os.open(p("sock"), os.O_RDONLY), "opening a socket")
# Renaming over a multiply linked file drops one link and moves its ctime.
open(p("x"), "w").close(); open(p("y"), "w").close(); os.link(p("y"), p("y2"))
c = os.stat(p("y2")).st_ctime_ns; time.sleep(0.02); os.rename(p("x"), p("y"))
check(os.stat(p("y2")).st_nlink == 1 and os.stat(p("y2")).st_ctime_ns > c, "rename over a hard link")
# '..' follows a moved directory; parents' link counts follow too.
os.mkdir(p("m1")); os.mkdir(p("m2")); os.mkdir(p("m1", "k"))
os.rename(p("m1", "k"), p("m2", "k"))
check(os.stat(p("m2", "k", "..")).st_ino == os.stat(p("m2")).st_ino, "'..' of a moved directory")
check(os.stat(p("m1")).st_nlink == 2 and os.stat(p("m2")).st_nlink == 3, "parent link counts after a move")
try:
    os.rename(p("m2", "k", "."), p("z")); failures.append("rename of '.' succeeded")
except OSError as e:
    check(e.errno in (errno.EINVAL, errno.EBUSY), f"rename of '.': {errno.errorcode.get(e.errno)}")
expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(p("m2", "k", "..")), "rmdir of '..'")
# Created with mode 0000, still writable through the creating descriptor.
os.chmod(M, 0o777)
check(as_user(lambda: (os.ftruncate(os.open(p("zero"), os.O_CREAT | os.O_RDWR, 0), 0), None)[1]) == 0, "O_CREAT mode 0 then ftruncate")
check(mode(p("zero")) == 0, "mode 0000 kept")
# Beyond 2 GiB: sparse write and read back.
fd = os.open(p("big"), os.O_CREAT | os.O_RDWR, 0o644)
os.pwrite(fd, b"a", (2 << 30) + 1); check(os.pread(fd, 1, (2 << 30) + 1) == b"a" and os.fstat(fd).st_size == (2 << 30) + 2, "write past 2 GiB")
os.close(fd); os.unlink(p("big"))
finish()
"""#
}
