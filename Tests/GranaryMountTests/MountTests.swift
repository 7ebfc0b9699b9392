import Foundation
import GranaryTestSupport
import Testing

/// Through a real mount: a `granary mount --local-segments` child process on
/// /dev/fuse, driven by Python's POSIX calls and ordinary tools.
@Suite(.serialized)
struct MountTests {
    func expectOK(_ r: Shell.Result, _ what: String) {
        #expect(r.status == 0, "\(what) failed (\(r.status)):\n\(r.output.suffix(4000))")
    }

    @Test(.timeLimit(.minutes(2)))
    func filesReadWriteTruncateUnlinkSpecial() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(PosixScripts.files, args: [m.mountpoint]), "file operations")
    }

    @Test(.timeLimit(.minutes(2)))
    func directoriesLinksRenameReaddirXattrs() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(PosixScripts.directories, args: [m.mountpoint]), "directory operations")
    }

    @Test(.timeLimit(.minutes(2)))
    func timestampsAfterEachOperation() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(PosixScripts.times, args: [m.mountpoint]), "timestamps")
    }

    @Test(.timeLimit(.minutes(2)))
    func permissionsAsAnotherUser() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(PosixScripts.permissions, args: [m.mountpoint]), "permissions")
    }

    /// Seeded random operations mirrored on local files, with the uploader
    /// sealing the same files, flushes forcing it and a 1 MiB cache evicting
    /// what was uploaded (a chunk ending in a hole once came back short from
    /// its cached copy after upload, and the kernel took the short read for
    /// the file's end).
    @Test(.timeLimit(.minutes(4)))
    func randomOperationsMatchALocalFile() throws {
        let m = try MountFixture(uploadIdle: 0.5, extraArguments: ["--cache-size", "1M"])  // evicts all the time
        defer { m.stop() }
        let flush = "'\(try GranaryBinary.require())' flush --state '\(m.state)' >/dev/null 2>&1"
        let stop = StopFlag()
        let flusher = Thread {
            while !stop.isSet {
                Shell.run(flush, timeout: 30)
                usleep(200_000)
            }
        }
        flusher.start()
        defer { stop.set() }
        for seed in 1...3 {
            let ref = m.dir.sub("ref\(seed)")
            expectOK(Shell.run("mkdir -p '\(m.path("fsx\(seed)"))'"), "mkdir")
            expectOK(Shell.python(RandomOperationsScript.source, args: [m.path("fsx\(seed)"), ref, "\(seed)", "2500"], timeout: 180),
                     "random operations, seed \(seed)")
        }
    }

    /// Parallel O_DIRECT reads while files are rewritten, truncated,
    /// recreated, uploaded and evicted from a cache smaller than one chunk
    /// return only bytes of their own file, and never EIO (a chunk fetched
    /// for a read was once evicted by another fetch before the read could
    /// open it).
    @Test(.timeLimit(.minutes(3)))
    func parallelReadsDuringRewritesReturnOnlyTheirOwnBytes() throws {
        let m = try MountFixture(uploadIdle: 0.2, extraArguments: ["--cache-size", "1M"])
        defer { m.stop() }
        let flush = "'\(try GranaryBinary.require())' flush --state '\(m.state)' >/dev/null 2>&1"
        let stop = StopFlag()
        let flusher = Thread {
            while !stop.isSet {
                Shell.run(flush, timeout: 30)
                usleep(100_000)
            }
        }
        flusher.start()
        defer { stop.set() }
        expectOK(Shell.python(ParallelReadScript.source, args: [m.mountpoint, "20"], timeout: 120), "parallel reads")
    }

    /// A generated tree with odd names, links, modes and times.
    func makeTree(_ root: String) -> Shell.Result {
        Shell.run("""
            set -e; mkdir -p '\(root)'; cd '\(root)'
            for d in a b/c "d with space" e/f/g; do mkdir -p "$d"; done
            i=0; for d in a b/c "d with space" e/f/g .; do
              for n in 1 2 3 4 5; do i=$((i+1)); head -c $((i * 7919 % 300000 + 1)) /dev/urandom > "$d/file$n.bin"; done
            done
            head -c 5000000 /dev/urandom > big.bin
            printf 'x' > 'ünïcødé'; ln -s a/file1.bin link; ln a/file2.bin hardlink
            chmod 0640 a/file3.bin; chmod 0755 b/c/file1.bin; touch -d '2001-02-03 04:05:06' b/c/file2.bin
            setfattr -n user.note -v hello a/file1.bin
            """)
    }

    @Test(.timeLimit(.minutes(3)))
    func cpRsyncTar() throws {
        let m = try MountFixture()
        defer { m.stop() }
        let src = m.dir.path + "/src"
        expectOK(makeTree(src), "make tree")
        expectOK(Shell.run("cp -a '\(src)' '\(m.path("cp"))' && diff -r '\(src)' '\(m.path("cp"))' && getfattr -n user.note '\(m.path("cp/a/file1.bin"))' | grep -q hello"), "cp -a + diff -r")
        expectOK(Shell.run("[ \"$(stat -c %h '\(m.path("cp/hardlink"))')\" = 1 ] || true; [ \"$(stat -c %Y '\(m.path("cp/b/c/file2.bin"))')\" = \"$(stat -c %Y '\(src)/b/c/file2.bin')\" ]"), "cp -a keeps times")
        expectOK(Shell.run("rsync -a '\(src)/' '\(m.path("rs"))/' && diff -r '\(src)' '\(m.path("rs"))'"), "rsync -a")
        let second = Shell.run("rsync -a --itemize-changes '\(src)/' '\(m.path("rs"))/'")
        expectOK(second, "second rsync")
        #expect(second.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "second rsync copied something:\n\(second.output)")
        expectOK(Shell.run("tar -C '\(src)' -cf '\(m.path("t.tar"))' . && mkdir '\(m.path("untar"))' && tar -C '\(m.path("untar"))' -xpf '\(m.path("t.tar"))' && diff -r '\(src)' '\(m.path("untar"))'"), "tar into the mount")
        expectOK(Shell.run("mkdir '\(m.dir.path)/out' && tar -C '\(m.path("untar"))' -cf - . | tar -C '\(m.dir.path)/out' -xpf - && diff -r '\(src)' '\(m.dir.path)/out'"), "tar out of the mount")
    }

    @Test(.timeLimit(.minutes(3)))
    func resticBackupCheckRestore() throws {
        let m = try MountFixture()
        defer { m.stop() }
        let src = m.dir.path + "/src"
        expectOK(makeTree(src), "make tree")
        let env = "export RESTIC_PASSWORD=granary RESTIC_REPOSITORY='\(m.path("restic"))' RESTIC_CACHE_DIR='\(m.dir.path)/rcache';"
        expectOK(Shell.run(env + "restic init -q && restic backup -q '\(src)' && restic check -q --read-data && restic restore latest -q --target '\(m.dir.path)/restored' && diff -r '\(src)' '\(m.dir.path)/restored\(src)'", timeout: 160), "restic")
    }

    @Test(.timeLimit(.minutes(3)))
    func borgCreateCheck() throws {
        let m = try MountFixture()
        defer { m.stop() }
        let src = m.dir.path + "/src"
        expectOK(makeTree(src), "make tree")
        let env = "export BORG_PASSPHRASE=granary BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR='\(m.dir.path)/borgbase';"
        expectOK(Shell.run(env + "borg init -e repokey '\(m.path("borg"))' && borg create '\(m.path("borg"))::one' '\(src)' && borg check --verify-data '\(m.path("borg"))' && mkdir '\(m.dir.path)/bx' && cd '\(m.dir.path)/bx' && borg extract '\(m.path("borg"))::one' && diff -r '\(src)' '\(m.dir.path)/bx\(src)'", timeout: 160), "borg")
    }

    @Test(.timeLimit(.minutes(3)))
    func fioRandomWritesVerify() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.run("fio --name=v --directory='\(m.mountpoint)' --rw=randwrite --bsrange=4k-1m --size=48m --verify=crc32c --do_verify=1 --verify_fatal=1 --ioengine=psync --numjobs=2 --group_reporting --verify_state_save=0", timeout: 160), "fio verify")
    }

    /// Written and fsynced files survive SIGKILL of the mount; the restart
    /// clears the stale mount and uploads what was left dirty.
    @Test(.timeLimit(.minutes(3)))
    func sigkillMidWriteKeepsFsyncedFiles() throws {
        let m = try MountFixture(uploadIdle: 600)  // nothing uploads before the crash
        defer { m.stop() }
        expectOK(Shell.run("""
            set -e; cd '\(m.mountpoint)'
            for i in 1 2 3 4 5; do head -c $((i * 1500000)) /dev/urandom > '\(m.dir.path)'/ref$i; dd if='\(m.dir.path)'/ref$i of=f$i bs=256k conv=fsync status=none; done
            mkdir -p dir/sub; dd if='\(m.dir.path)'/ref1 of=dir/sub/g bs=64k conv=fsync status=none; sync dir
            # small files (slab slots), some deleted and their slots reused, one grown out of its slot
            for i in $(seq 1 20); do head -c $((i * 6000)) /dev/urandom > '\(m.dir.path)'/refs$i; dd if='\(m.dir.path)'/refs$i of=s$i bs=4k conv=fsync status=none; done
            rm s1 s2 s3; sync .
            for i in 21 22 23; do head -c 3000 /dev/urandom > '\(m.dir.path)'/refs$i; dd if='\(m.dir.path)'/refs$i of=s$i conv=fsync status=none; done
            head -c 300000 /dev/urandom > '\(m.dir.path)'/refgrow
            dd if='\(m.dir.path)'/refgrow of=grow bs=50000 count=1 conv=fsync status=none
            dd if='\(m.dir.path)'/refgrow of=grow bs=64k conv=notrunc,fsync status=none
            """), "fsynced writes")
        // Keep writing (unsynced) while the mount dies.
        let writer = Shell.self
        let bg = Thread { writer.run("dd if=/dev/urandom of='\(m.path("unsynced"))' bs=1M count=500 status=none", timeout: 30) }
        bg.start()
        Thread.sleep(forTimeInterval: 0.5)
        m.crash()
        try m.start(uploadIdle: 1)
        for i in 1...5 { expectOK(Shell.run("cmp '\(m.dir.path)/ref\(i)' '\(m.path("f\(i)"))'"), "f\(i) after SIGKILL") }
        expectOK(Shell.run("cmp '\(m.dir.path)/ref1' '\(m.path("dir/sub/g"))'"), "nested file after SIGKILL")
        let smallFiles = (4...23).map { ("refs\($0)", "s\($0)") } + [("refgrow", "grow")]
        for (ref, name) in smallFiles { expectOK(Shell.run("cmp '\(m.dir.path)/\(ref)' '\(m.path(name))'"), "small file \(name) after SIGKILL") }
        expectOK(Shell.run("test ! -e '\(m.path("s1"))'"), "a deleted small file stays deleted")
        // The recovered dirty data uploads: flush, wipe the cache, read back.
        expectOK(Shell.run("'\(try GranaryBinary.require())' flush --state '\(m.state)'", timeout: 60), "flush after restart")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache'"), "wipe cache")
        try m.start()
        for i in 1...5 { expectOK(Shell.run("cmp '\(m.dir.path)/ref\(i)' '\(m.path("f\(i)"))'"), "f\(i) from segments") }
        for (ref, name) in smallFiles { expectOK(Shell.run("cmp '\(m.dir.path)/\(ref)' '\(m.path(name))'"), "small file \(name) from segments") }
    }

    /// chmod, chown, utimens, xattrs, links, renames and removals commit to
    /// meta.db in groups a few milliseconds later; an fsync of a file or a
    /// folder commits every change before it, so a crash then loses none.
    /// A file renamed over another goes to meta.db with its bytes (ext4's
    /// auto_da_alloc), and a file's size never runs ahead of its bytes there.
    @Test(.timeLimit(.minutes(2)))
    func attributeAndNameChangesSurviveSIGKILLAfterFsync() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        let change = #"""
import os, sys
root = sys.argv[1]
p = lambda *a: os.path.join(root, *a)
with open(p("f"), "wb") as f: f.write(b"data")
os.chmod(p("f"), 0o640); os.chown(p("f"), 1234, 5678); os.utime(p("f"), ns=(1_000_000_001, 2_000_000_002))
os.setxattr(p("f"), "user.k", b"v"); os.setxattr(p("f"), "user.gone", b"x"); os.removexattr(p("f"), "user.gone")
os.link(p("f"), p("g")); os.rename(p("g"), p("h"))
open(p("tmp"), "w").close(); os.unlink(p("tmp"))
os.mkdir(p("d")); os.rmdir(p("d")); os.mkdir(p("e"))
with open(p("r1"), "wb") as f: f.write(b"new")
with open(p("r2"), "wb") as f: f.write(b"old")
os.rename(p("r1"), p("r2"))
open(p("x1"), "w").close(); os.mkdir(p("x2")); os.rename(p("x1"), p("x2", "x1"))
with open(p("z"), "wb") as f: f.write(b"abc")
os.chmod(p("z"), 0o600)
fd = os.open(p("f"), os.O_RDONLY); os.fsync(fd); os.close(fd)
"""#
        expectOK(Shell.python(change, args: [m.mountpoint]), "changes, then fsync")
        m.crash()
        try m.start()
        let check = #"""
import os, sys
root = sys.argv[1]
p = lambda *a: os.path.join(root, *a)
bad = []
def check(c, what):
    if not c: bad.append(what)
st = os.stat(p("f"))
check(st.st_mode & 0o7777 == 0o640, f"mode {oct(st.st_mode)}")
check((st.st_uid, st.st_gid) == (1234, 5678), f"owner {st.st_uid}:{st.st_gid}")
check(st.st_mtime_ns == 2_000_000_002 and st.st_atime_ns == 1_000_000_001, "times")
check(os.listxattr(p("f")) == ["user.k"] and os.getxattr(p("f"), "user.k") == b"v", f"xattrs {os.listxattr(p('f'))}")
check(st.st_nlink == 2 and os.stat(p("h")).st_ino == st.st_ino, "hard link renamed")
check(sorted(os.listdir(root)) == ["e", "f", "h", "r2", "x2", "z"], f"names {sorted(os.listdir(root))}")
# Not fsynced: its bytes may be lost, but never read back as zeros.
check(open(p("z"), "rb").read() in (b"", b"abc") and os.stat(p("z")).st_mode & 0o777 == 0o600, f"z: {open(p('z'), 'rb').read()!r}")
check(open(p("r2"), "rb").read() == b"new", f"rename over a file: {open(p('r2'), 'rb').read()!r} {os.stat(p('r2'))}")
check(os.listdir(p("x2")) == ["x1"], "rename into a folder")
check(open(p("f"), "rb").read() == b"data", "content")
if bad: print("; ".join(bad)); sys.exit(1)
"""#
        expectOK(Shell.python(check, args: [m.mountpoint]), "after SIGKILL")
    }

    /// A deleted file's rows go with the next group commit and its dirty
    /// bytes only after it: killed right after a burst of deletes, the mount
    /// brings every file back whole or not at all; once the deletes commit
    /// (fsync of the folder), the bytes are freed.
    @Test(.timeLimit(.minutes(3)))
    func deletedFilesComeBackWholeOrNotAtAllAfterSIGKILL() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        // Small files (slab slots) and larger ones (files of their own),
        // fsynced, then deleted; the mount is killed by the same script.
        let script = #"""
import os, sys, signal
root, pid = sys.argv[1], int(sys.argv[2])
def body(i): return bytes([i % 251]) * (1000 + (i * 7919) % (300 << 10))
for i in range(120):
    # Unbuffered: Python keeps a write under 8 KiB in its own buffer until
    # close, after the fsync, and such a file rightly comes back empty.
    with open(os.path.join(root, f"f{i}"), "wb", buffering=0) as f: f.write(body(i)); os.fsync(f.fileno())
fd = os.open(root, os.O_RDONLY); os.fsync(fd); os.close(fd)
for i in range(120): os.unlink(os.path.join(root, f"f{i}"))
os.kill(pid, signal.SIGKILL)
"""#
        let pid = try #require(m.child?.pid)
        expectOK(Shell.python(script, args: [m.mountpoint, String(pid)]), "write, fsync, delete, kill")
        m.crash()
        try m.start(uploadIdle: 600)
        let check = #"""
import os, sys
root = sys.argv[1]
def body(i): return bytes([i % 251]) * (1000 + (i * 7919) % (300 << 10))
bad = [n for n in os.listdir(root) if open(os.path.join(root, n), "rb").read() != body(int(n[1:]))]
if bad: print("came back damaged:", bad); sys.exit(1)
print(len(os.listdir(root)), "came back")
"""#
        expectOK(Shell.python(check, args: [m.mountpoint]), "after SIGKILL")
        // Delete what came back; the folder's fsync commits the deletes,
        // after which no dirty byte of them is kept.
        expectOK(Shell.run("rm -f '\(m.mountpoint)'/f* && python3 -c 'import os; fd = os.open(\"\(m.mountpoint)\", os.O_RDONLY); os.fsync(fd)'"), "delete the rest")
        let bin = try GranaryBinary.require()
        var dirty = Int.max, files: [String] = []
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            dirty = statusField(Shell.run("'\(bin)' status --state '\(m.state)' --json").output, "dirtyBytes") ?? Int.max
            files = ((try? FileManager.default.contentsOfDirectory(atPath: m.state + "/cache/dirty")) ?? []).filter { $0 != "slab" }
            if dirty == 0 && files.isEmpty { break }
            usleep(100_000)
        }
        #expect(dirty == 0 && files.isEmpty, "after the deletes: \(dirty) dirty bytes, cache files \(files)")
    }

    /// Overwriting a file (O_TRUNC) hands its old chunk files to a thread
    /// that deletes them: the new content is there at once, the old files
    /// go soon after, and a crash before they go leaves nothing behind
    /// once the mount is back.
    @Test(.timeLimit(.minutes(3)))
    func overwrittenChunkFilesAreDeletedInTheBackground() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        let dirty = m.state + "/cache/dirty"
        func leftovers() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: dirty)) ?? []).filter { $0.hasPrefix(".gone-") }
        }
        let overwrite = #"""
import os, sys, signal
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = bytes((i * seed + i // 4096) % 256 for i in range(size))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, body); os.fsync(fd); os.close(fd)
if len(sys.argv) > 4: os.kill(int(sys.argv[4]), signal.SIGKILL)
"""#
        let verify = #"""
import sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if open(path, "rb").read() != bytes((i * seed + i // 4096) % 256 for i in range(size)): print("wrong content"); sys.exit(1)
"""#
        let f = m.path("f")
        expectOK(Shell.python(overwrite, args: [f, String(12 << 20), "7"]), "first version (3 chunk files)")
        expectOK(Shell.python(overwrite, args: [f, String(9 << 20), "13"]), "overwrite")
        expectOK(Shell.python(verify, args: [f, String(9 << 20), "13"]), "new content")
        let deadline = Date().addingTimeInterval(10)
        while !leftovers().isEmpty && Date() < deadline { usleep(50_000) }
        #expect(leftovers().isEmpty, "old chunk files not deleted: \(leftovers())")
        let pid = try #require(m.child?.pid)
        expectOK(Shell.python(overwrite, args: [f, String(5 << 20), "29", String(pid)]), "overwrite, then SIGKILL")
        m.crash()
        try m.start(uploadIdle: 600)
        expectOK(Shell.python(verify, args: [f, String(5 << 20), "29"]), "content after SIGKILL")
        #expect(leftovers().isEmpty, "a crash left old chunk files: \(leftovers())")
    }

    /// The uploader slows down while the mount is being read, but a reader
    /// that never stops must not hold uploads back for good: 96 MiB written
    /// beside a reader that reads all the time is uploaded without a flush.
    @Test(.timeLimit(.minutes(3)))
    func uploadsGoOnWhileTheMountIsReadWithoutPause() throws {
        let m = try MountFixture(uploadIdle: 0.2)
        defer { m.stop() }
        let bin = try GranaryBinary.require()
        expectOK(Shell.run("head -c 8000000 /dev/urandom > '\(m.path("read-me"))'"), "file to read")
        let stop = StopFlag()
        let readerPath = m.path("read-me")
        let reader = Thread {
            // O_DIRECT, so every read reaches the mount.
            while !stop.isSet { Shell.run("dd if='\(readerPath)' of=/dev/null bs=1M iflag=direct status=none", timeout: 30) }
        }
        reader.start()
        defer { stop.set() }
        expectOK(Shell.run("head -c 100663296 /dev/urandom > '\(m.path("written"))'"), "write 96 MiB")
        var dirty = Int.max
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            dirty = statusField(Shell.run("'\(bin)' status --state '\(m.state)' --json").output, "dirtyBytes") ?? Int.max
            if dirty == 0 { break }
            usleep(250_000)
        }
        #expect(dirty == 0, "still \(dirty) dirty bytes after 60 s of reads")
    }

    /// After `granary flush`, with the cache wiped, everything reads back
    /// bit-exact from the segment folder; status reports nothing dirty.
    @Test(.timeLimit(.minutes(3)))
    func flushThenColdReadFromSegments() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        let src = m.dir.path + "/src"
        expectOK(makeTree(src), "make tree")
        expectOK(Shell.run("cp -a '\(src)' '\(m.path("tree"))' && head -c 20000000 /dev/urandom > '\(m.dir.path)/big' && cp '\(m.dir.path)/big' '\(m.path("big"))'"), "copy in")
        let bin = try GranaryBinary.require()
        let before = Shell.run("'\(bin)' status --state '\(m.state)' --json")
        expectOK(before, "status")
        #expect((statusField(before.output, "dirtyBytes") ?? 0) > 0, "data should be dirty before flush: \(before.output)")
        expectOK(Shell.run("'\(bin)' flush --state '\(m.state)'", timeout: 60), "flush")
        let after = Shell.run("'\(bin)' status --state '\(m.state)' --json")
        #expect(statusField(after.output, "dirtyBytes") == 0, "dirty after flush: \(after.output)")
        // The requests served so far, each kind with its service times.
        let served = Shell.run("'\(bin)' status --state '\(m.state)'")
        for op in ["create", "write", "mkdir"] {
            #expect(served.output.range(of: "fuse\\.\(op): [1-9][0-9]* requests, mean [0-9.]+ (µs|ms|s), max", options: .regularExpression) != nil,
                    "status should count \(op) requests: \(served.output)")
        }
        #expect(served.output.range(of: "process: [0-9.]+ (KiB|MiB|GiB) resident, [0-9]+ open files, [0-9]+ threads",
                                    options: .regularExpression) != nil, "status should show the mount's memory: \(served.output)")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache' && ls '\(m.segments)' | grep -q ."), "wipe cache, segments exist")
        try m.start()
        expectOK(Shell.run("diff -r '\(src)' '\(m.path("tree"))' && cmp '\(m.dir.path)/big' '\(m.path("big"))'"), "cold read bit-exact")
        let reads = Shell.run("'\(bin)' status --state '\(m.state)'")
        #expect(reads.output.range(of: "fuse\\.read: [1-9][0-9]* requests", options: .regularExpression) != nil,
                "status should count read requests (spliced replies too): \(reads.output)")
        // Segment storage gone: uncached reads fail with EIO after the bounded wait.
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache' '\(m.segments)'/*"), "remove segments")
        try m.start()
        let r = Shell.run("cat '\(m.path("big"))' > /dev/null", timeout: 60)
        #expect(r.status != 0 && r.output.contains("Input/output error"), "read without segments should fail with EIO: \(r.output)")
    }

    /// Punch hole and zero range (what `fallocate --punch-hole`, qemu's
    /// discard and databases use) read as zeros: on dirty chunks, on
    /// uploaded ones whose bytes are not in the cache, and after a flush
    /// with the cache wiped.
    @Test(.timeLimit(.minutes(3)))
    func punchedAndZeroedRangesReadAsZerosBeforeAndAfterUpload() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        let ref = m.dir.sub("ref")
        let bin = try GranaryBinary.require()
        func cycleThroughSegments() throws {
            expectOK(Shell.run("'\(bin)' flush --state '\(m.state)'", timeout: 60), "flush")
            m.stop()
            expectOK(Shell.run("rm -rf '\(m.state)/cache/clean'/* '\(m.state)/cache/slab-clean'"), "wipe the clean cache")
            try m.start(uploadIdle: 600)
        }
        expectOK(Shell.run("""
            head -c 14000000 /dev/urandom > '\(ref)/uploaded' && cp '\(ref)/uploaded' '\(m.path("uploaded"))' \
            && head -c 9000000 /dev/urandom > '\(ref)/small-base' && cp '\(ref)/small-base' '\(m.path("small-base"))'
            """), "write")
        try cycleThroughSegments()
        expectOK(Shell.run("""
            head -c 15000000 /dev/urandom > '\(ref)/dirty' && cp '\(ref)/dirty' '\(m.path("dirty"))'
            """), "write a dirty file")
        expectOK(Shell.python(FallocateScript.source, args: [m.mountpoint, ref, "apply", "uploaded", "dirty", "small-base"]),
                 "punch hole and zero range")
        try cycleThroughSegments()
        expectOK(Shell.python(FallocateScript.source, args: [m.mountpoint, ref, "compare", "uploaded", "dirty", "small-base"]),
                 "read back from segments")
    }

    /// A sparse file's holes take no space: `du` and st_blocks count only
    /// the chunks that hold data, SEEK_DATA/SEEK_HOLE find them (so `cp`
    /// copies a sparse file without reading its holes), and it stays so
    /// after a restart and an upload. fallocate refuses at once to reserve
    /// more than there is room for.
    @Test(.timeLimit(.minutes(2)))
    func sparseFilesTakeOnlyTheirDataAndSeekFindsIt() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        let bin = try GranaryBinary.require()
        let script = #"""
import os, sys, errno, ctypes, ctypes.util
mnt, phase = sys.argv[1], sys.argv[2]
T, C = 1 << 40, 4 << 20
path = os.path.join(mnt, sys.argv[3] if len(sys.argv) > 3 else "sparse")
fails = []
if phase == "write":
    with open(path, "wb") as f:
        f.truncate(T)
        f.seek(T // 2); f.write(b"x" * 100)
        f.seek(T - 10); f.write(b"end")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    fd = os.open(os.path.join(mnt, "reserve"), os.O_RDWR | os.O_CREAT, 0o644)
    if libc.fallocate(fd, 0, 0, 1 << 60) == 0 or ctypes.get_errno() != errno.ENOSPC:
        fails.append(f"fallocate of 1 EiB: {errno.errorcode.get(ctypes.get_errno())}, expected ENOSPC")
    if os.fstat(fd).st_size != 0: fails.append("a refused fallocate grew the file")
    if libc.fallocate(fd, 0, 0, 8 << 20) != 0: fails.append(f"fallocate of 8 MiB: {errno.errorcode.get(ctypes.get_errno())}")
    os.close(fd)
st = os.stat(path)
if st.st_size != T: fails.append(f"size {st.st_size}")
if not 0 < st.st_blocks * 512 <= 2 * C: fails.append(f"st_blocks {st.st_blocks}: {st.st_blocks * 512} bytes for two chunks of data")
fd = os.open(path, os.O_RDONLY)
expect = [(os.SEEK_DATA, 0, T // 2), (os.SEEK_HOLE, T // 2, T // 2 + C), (os.SEEK_DATA, T // 2 + C, T - C),
          (os.SEEK_HOLE, T - C, T), (os.SEEK_HOLE, 5, 5), (os.SEEK_DATA, T // 2 + 7, T // 2 + 7)]
for whence, off, want in expect:
    got = os.lseek(fd, off, whence)
    if got != want: fails.append(f"lseek({off}, {'SEEK_DATA' if whence == os.SEEK_DATA else 'SEEK_HOLE'}) = {got}, expected {want}")
for whence in (os.SEEK_DATA, os.SEEK_HOLE):
    try:
        os.lseek(fd, T, whence); fails.append(f"lseek at the end ({whence}) did not fail")
    except OSError as e:
        if e.errno != errno.ENXIO: fails.append(f"lseek at the end: {e}")
os.lseek(fd, T // 2, 0)
if os.read(fd, 101) != b"x" * 100 + b"\0": fails.append("the data in the middle reads back wrong")
os.lseek(fd, T - 11, 0)
if os.read(fd, 20) != b"\0end" + b"\0" * 7: fails.append("the data at the end reads back wrong")
if phase == "write":
    # Bytes a shared mmap wrote into a hole are only in the kernel's pages
    # until written back: while the mapping's handle is open, all is data.
    import mmap
    mapped = os.path.join(mnt, "mapped")
    w = os.open(mapped, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(w, 64 * C)
    m = mmap.mmap(w, 64 * C)
    m[40 * C + 5] = 7
    r = os.open(mapped, os.O_RDONLY)
    if os.lseek(r, 0, os.SEEK_DATA) != 0 or os.lseek(r, 0, os.SEEK_HOLE) != 64 * C:
        fails.append("a file mapped for writing reported holes")
    m.close(); os.close(w)
    if os.lseek(r, 40 * C, os.SEEK_DATA) != 40 * C: fails.append("the mmap's write was not found once written back")
    os.close(r)
print("\n".join(fails)); sys.exit(1 if fails else 0)
"""#
        expectOK(Shell.python(script, args: [m.mountpoint, "write"]), "sparse file written")
        // du and cp as users run them: cp finds the holes with SEEK_DATA.
        let du = Shell.run("du -k '\(m.path("sparse"))' | cut -f1")
        #expect(du.status == 0 && (Int(du.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max) <= 8192, "du: \(du.output)")
        let cp = Shell.run("cp '\(m.path("sparse"))' '\(m.path("copy"))' && stat -c %b '\(m.path("copy"))'", timeout: 60)
        #expect(cp.status == 0 && (Int(cp.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max) <= 16384,
                "cp of a 1 TiB sparse file should copy only its data: \(cp.output)")
        expectOK(Shell.python(script, args: [m.mountpoint, "check", "copy"]), "the copy")
        expectOK(Shell.run("'\(bin)' flush --state '\(m.state)'", timeout: 60), "flush")
        m.stop()
        try m.start(uploadIdle: 600)
        expectOK(Shell.python(script, args: [m.mountpoint, "check"]), "sparse file after a restart, uploaded")
    }

    /// Six processes collide on one small tree for 40 s while the uploader
    /// seals what they write and flushes run: only the errors such races
    /// cause are allowed, link counts stay true, and the tree lists the
    /// same after a clean restart, after a SIGKILL, and from the segments
    /// alone with the cache wiped.
    @Test(.timeLimit(.minutes(4)))
    func concurrentNamespaceStressKeepsLinkCountsAndSurvivesRestarts() throws {
        let m = try MountFixture(uploadIdle: 0.5)
        defer { m.stop() }
        let bin = try GranaryBinary.require()
        let root = m.path("stress")
        expectOK(Shell.run("mkdir '\(root)'"), "mkdir")
        let stop = StopFlag()
        let flusher = Thread {
            while !stop.isSet {
                Shell.run("'\(bin)' flush --state '\(m.state)' >/dev/null 2>&1", timeout: 30)
                sleep(3)
            }
        }
        flusher.start()
        let stress = Shell.python(NamespaceStressScript.stress, args: [root, "40", "6"], timeout: 150)
        stop.set()
        expectOK(stress, "concurrent operations")
        let listing = { (name: String) in m.dir.sub(name) + ".json" }
        expectOK(Shell.python(NamespaceStressScript.check, args: [root, listing("before")]), "tree after the stress")
        m.stop()
        try m.start()
        expectOK(Shell.python(NamespaceStressScript.check, args: [root, listing("restarted")]), "tree after a restart")
        expectOK(Shell.run("cmp '\(listing("before"))' '\(listing("restarted"))'"), "same tree after a restart")
        // fsync of the tree (syncfs), then a crash.
        expectOK(Shell.run("sync -f '\(root)' && python3 -c \"import os; fd = os.open('\(root)', os.O_RDONLY); os.fsync(fd)\""), "sync")
        m.crash()
        m.forceUnmount()
        try m.start()
        expectOK(Shell.python(NamespaceStressScript.check, args: [root, listing("crashed")]), "tree after a SIGKILL")
        expectOK(Shell.run("cmp '\(listing("before"))' '\(listing("crashed"))'"), "same tree after a SIGKILL")
        expectOK(Shell.run("'\(bin)' flush --state '\(m.state)'", timeout: 60), "flush")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache'"), "wipe the cache")
        try m.start()
        expectOK(Shell.python(NamespaceStressScript.check, args: [root, listing("segments")]), "tree read from the segments")
        expectOK(Shell.run("cmp '\(listing("before"))' '\(listing("segments"))'"), "same tree from the segments")
    }

    /// `cp` inside the mount (copy_file_range) shares the chunks of an
    /// uploaded file: with the segments gone the copy still succeeds, since
    /// it reads nothing. What cannot be shared (dirty chunks, offsets off
    /// a chunk boundary, a partial last chunk over bytes the destination
    /// keeps) the kernel copies itself; every result matches the same
    /// calls on local files, after a restart from the segments alone too,
    /// and a shared chunk outlives the file it came from and a compaction.
    @Test(.timeLimit(.minutes(3)))
    func copiesInsideTheMountShareUploadedChunks() throws {
        let m = try MountFixture(uploadIdle: 0.5)
        defer { m.stop() }
        let bin = try GranaryBinary.require()
        let ref = m.dir.sub("ref")
        let segmentsAway = m.dir.path + "/segments-away"
        expectOK(Shell.run("head -c 21000000 /dev/urandom > '\(ref)/a' && cp '\(ref)/a' '\(m.path("a"))'"), "write a")
        expectOK(Shell.run("'\(bin)' flush --state '\(m.state)'", timeout: 60), "flush")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache/clean' && mv '\(m.segments)' '\(segmentsAway)'"), "wipe the cache, take the segments away")
        try m.start()
        let copy = Shell.run("cp '\(m.path("a"))' '\(m.path("b"))'", timeout: 30)
        #expect(copy.status == 0, "cp of an uploaded file inside the mount should need no segment: \(copy.output)")
        // Into the folder the mount made again at its start (it may hold it open).
        expectOK(Shell.run("cp -a '\(segmentsAway)'/. '\(m.segments)'/ && rm -rf '\(segmentsAway)'"), "segments back")
        expectOK(Shell.run("cp '\(ref)/a' '\(ref)/b' && cmp '\(ref)/b' '\(m.path("b"))'", timeout: 60), "the copy reads back")
        let script = #"""
import os, sys
mnt, ref = sys.argv[1], sys.argv[2]
C = 4 << 20
def both(f):
    for d in (mnt, ref): f(d)
def put(name, data):
    both(lambda d: open(os.path.join(d, name), "wb").write(data))
def cfr(src, dst, off_in, off_out, count):
    def run(d):
        a = os.open(os.path.join(d, src), os.O_RDONLY)
        b = os.open(os.path.join(d, dst), os.O_WRONLY | os.O_CREAT, 0o644)
        left, i, o = count, off_in, off_out
        while left > 0:
            n = os.copy_file_range(a, b, left, i, o)
            if n == 0: break
            left, i, o = left - n, i + n, o + n
        os.close(a); os.close(b)
    both(run)
put("dirty", os.urandom(9 * C + 123))                    # not uploaded yet: the kernel copies it
cfr("dirty", "dirty-copy", 0, 0, 1 << 40)
cfr("a", "unaligned", 1000, 77, 3 * C)                    # off chunk boundaries
put("bigger", os.urandom(7 * C))                          # a partial last chunk over bytes that stay
cfr("a", "bigger", 4 * C, 0, 1 << 40)
cfr("a", "a", 0, 8 * C, C)                                # within one file
cfr("a", "sparse", 0, 300 * C, 2 * C)                     # a hole before
cfr("a", "partial", 0, 0, C + C // 2)                     # ends inside a chunk of a that goes on
both(lambda d: os.truncate(os.path.join(d, "partial"), 3 * C))  # zeros after it, not a's bytes
# A copy by its owner (no CAP_FSETID) into a setuid file clears the bit,
# as any write does, also when the chunks could have been shared.
p = os.path.join(mnt, "suid")
open(p, "wb").write(b"x" * 100)
os.chown(p, 65534, 65534); os.chmod(p, 0o4755)
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
    a = os.open(os.path.join(mnt, "a"), os.O_RDONLY); b = os.open(p, os.O_WRONLY)
    os._exit(0 if os.copy_file_range(a, b, C, 0, 0) > 0 else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "copy_file_range as the file's owner failed"
mode = os.stat(p).st_mode & 0o7777
assert mode == 0o755, "setuid should go with a copy into the file: mode %o" % mode
"""#
        expectOK(Shell.python(script, args: [m.mountpoint, ref]), "copy_file_range calls")
        let names = ["a", "b", "dirty", "dirty-copy", "unaligned", "bigger", "sparse", "partial"]
        func compareAll(_ when: String) {
            for n in names { expectOK(Shell.run("cmp '\(ref)/\(n)' '\(m.path(n))'", timeout: 60), "\(n) \(when)") }
        }
        compareAll("after the copies")
        let blocks = Shell.run("stat -c %b '\(m.path("sparse"))'")
        #expect((Int(blocks.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max) <= 2 * 8192, "sparse copy: \(blocks.output)")
        expectOK(Shell.run("'\(bin)' flush --state '\(m.state)'", timeout: 60), "flush")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache'"), "wipe the cache")
        try m.start()
        compareAll("from the segments")
        // The chunks b shares with a stay live once a is gone.
        expectOK(Shell.run("rm '\(m.path("a"))' '\(ref)/a' && '\(bin)' compact --state '\(m.state)'", timeout: 60), "delete a, compact")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache'"), "wipe the cache")
        try m.start()
        expectOK(Shell.run("cmp '\(ref)/b' '\(m.path("b"))'", timeout: 60), "b after a was deleted and compacted")
    }

    @Test(.timeLimit(.minutes(1)))
    func cliErrors() throws {
        let bin = try GranaryBinary.require()
        let r1 = Shell.run("'\(bin)' mount /tmp/nowhere-\(getpid())")
        #expect(r1.status != 0 && r1.output.contains("--local-segments"), "\(r1.output)")
        let r2 = Shell.run("'\(bin)' mount /tmp/nowhere-\(getpid()) --bootstrap 127.0.0.1:1 --scheme 4/3/7/8")
        #expect(r2.status != 0 && r2.output.contains("--scheme"), "\(r2.output)")
        let r3 = Shell.run("'\(bin)' status --state /tmp/no-state-\(getpid())")
        #expect(r3.status != 0 && r3.output.contains("no mount is running"), "\(r3.output)")
        let r4 = Shell.run("'\(bin)' mount /tmp/nowhere-\(getpid()) --local-segments /tmp/x --cache-size lots")
        #expect(r4.status != 0 && r4.output.contains("not a size"), "\(r4.output)")
    }
}

/// One numeric field of `granary status --json`'s "status" object, parsed
/// rather than matched as text (key order is not part of the format).
private func statusField(_ json: String, _ key: String) -> Int? {
    guard let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
          let status = object["status"] as? [String: Any] else { return nil }
    return (status[key] as? NSNumber)?.intValue
}

/// Set once from the test, read by its helper thread.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
