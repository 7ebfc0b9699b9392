import Foundation
import GranaryTestSupport
import Testing

/// What fsync reaches, and writes over content that is not cached. Part of
/// MountTests, so that no two mounts run at once.
extension MountTests {
    /// `strace` on the mount shows an fsync on the mount reaching the chunk's
    /// cache file, meta.db's WAL and the cache directory.
    @Test(.timeLimit(.minutes(1)))
    func fsyncReachesCacheFileDatabaseAndDirectory() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        guard let pid = m.child?.pid else { Issue.record("no mount process"); return }
        let trace = m.dir.path + "/strace.out"
        let strace = try ChildProcess("/usr/bin/strace", ["-f", "-y", "-p", "\(pid)", "-e", "trace=fsync,fdatasync", "-o", trace], name: "strace")
        Thread.sleep(forTimeInterval: 1.0)
        expectOK(Shell.run("dd if=/dev/urandom of='\(m.path("x"))' bs=64k count=4 conv=fsync status=none"), "dd conv=fsync")
        Thread.sleep(forTimeInterval: 0.5)
        strace.signal(SIGINT)
        _ = try? strace.waitForExit(timeout: 10)
        let text = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
        var targets = Set<String>()
        // `-y` names each descriptor's file (`fsync(12</path>)`): the cache
        // file is closed once the file is, before /proc could be asked.
        for line in text.split(separator: "\n") {
            guard let open = line.range(of: "fsync("), let from = line[open.upperBound...].firstIndex(of: "<"),
                  let to = line[from...].firstIndex(of: ">") else { continue }
            targets.insert(String(line[line.index(after: from)..<to]))
        }
        #expect(targets.contains { $0.hasPrefix(m.state + "/cache/dirty/") && $0 != m.state + "/cache/dirty" }, "no fsync of a cache file: \(targets) \(text)")
        #expect(targets.contains(m.state + "/meta.db-wal"), "no fsync of meta.db-wal: \(targets)")
        #expect(targets.contains(m.state + "/cache/dirty"), "no fsync of the cache directory: \(targets)")
    }

    /// With segment storage gone and nothing cached, writes into the middle
    /// of a stored file still succeed at once and read back; once storage is
    /// back the old content is merged around them.
    @Test(.timeLimit(.minutes(2)))
    func writesOverUncachedContentNeverWaitForStorage() throws {
        let m = try MountFixture(uploadIdle: 600)
        defer { m.stop() }
        let ref = m.dir.path + "/ref"
        expectOK(Shell.run("head -c 9000000 /dev/urandom > '\(ref)' && cp '\(ref)' '\(m.path("f"))'"), "write")
        expectOK(Shell.run("'\(try GranaryBinary.require())' flush --state '\(m.state)'", timeout: 60), "flush")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache' && mv '\(m.segments)' '\(m.segments).away'"), "wipe cache, hide segments")
        try m.start(uploadIdle: 1)
        let t0 = Date()
        // 64 KiB at a page-aligned offset inside the second chunk.
        let patch = m.dir.path + "/patch"
        expectOK(Shell.run("head -c 65536 /dev/urandom > '\(patch)' && dd if='\(patch)' of='\(m.path("f"))' bs=65536 seek=80 conv=notrunc,fsync status=none && dd if='\(patch)' of='\(ref)' bs=65536 seek=80 conv=notrunc status=none"), "write over uncached chunk")
        #expect(Date().timeIntervalSince(t0) < 3, "the write waited for segment storage")
        // Direct I/O reads exactly the written range (no kernel read-ahead).
        expectOK(Shell.run("dd if='\(m.path("f"))' of='\(m.dir.path)/back' bs=65536 skip=80 count=1 iflag=direct status=none && cmp '\(patch)' '\(m.dir.path)/back'"), "written range reads back without storage")
        expectOK(Shell.run("rm -rf '\(m.segments)' && mv '\(m.segments).away' '\(m.segments)'"), "segments back")
        expectOK(Shell.run("'\(try GranaryBinary.require())' flush --state '\(m.state)'", timeout: 60), "flush merged chunk")
        m.stop()
        expectOK(Shell.run("rm -rf '\(m.state)/cache'"), "wipe cache")
        try m.start()
        expectOK(Shell.run("cmp '\(ref)' '\(m.path("f"))'"), "merged content bit-exact")
    }
}
