import Foundation
import GranaryTestSupport
import Testing

/// A network mount comes up while its bootstrap node is not running yet:
/// writes land in the cache, uploads wait for contracts, `granary status`
/// says why; once the seed and farmers start, contracts form (farmers with
/// less free space than the renter's wanted allowance included), `granary
/// flush` completes and the files read back cold. With the farmers gone, a
/// read of uncached data fails with EIO instead of hanging.
@Suite(.serialized) struct LateNetworkTests {
    static let environment = ["GRANARY_POW_BITS": "4"]

    /// A UDP port on 127.0.0.1 nothing listens on (bound, then released).
    static func freeUDPPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw TestSupportError.missing("cannot open a UDP socket") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw TestSupportError.missing("cannot bind a UDP socket on 127.0.0.1") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    @Test(.timeLimit(.minutes(6)))
    func mountStartsBeforeTheNetworkAndUploadsOnceFarmersAppear() throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-late")
        let state = dir.path + "/renter", mnt = dir.sub("mnt")
        let seedAddress = "127.0.0.1:\(try Self.freeUDPPort())"
        let run = NetworkTestProcesses(mountpoint: mnt)
        defer { run.cleanUp() }
        func startMount() throws -> ChildProcess {
            let m = try ChildProcess.granary(["mount", mnt, "--state", state, "--bootstrap", seedAddress,
                                              "--upload-idle", "1", "--read-timeout", "10", "--plain-key"],
                                             name: "granary-mount", environment: Self.environment)
            // No network: the mount must still come up (it used to wait 60 s and fail).
            _ = try m.waitForLine(timeout: 30) { $0.hasPrefix("granary mount ready at") }
            return m
        }
        func status() -> String { Shell.run("'\(bin)' status --state '\(state)'", timeout: 30).output }

        run.mount = try startMount()
        let write = Shell.run("""
            head -c 3000000 /dev/urandom > '\(dir.path)/a.orig' && cp '\(dir.path)/a.orig' '\(mnt)/a' \
            && mkdir '\(mnt)/d' && echo hello > '\(mnt)/d/h' && sync '\(mnt)/a' '\(mnt)/d/h' \
            && cmp '\(dir.path)/a.orig' '\(mnt)/a'
            """, timeout: 60)
        #expect(write.status == 0, "writes and fsync work without the network: \(write.output)")
        let waiting = status()
        #expect(waiting.contains("network.state: joining the network") || waiting.contains("network.state: waiting for contracts"),
                "status says what uploads wait for: \(waiting)")
        #expect(!waiting.contains("dirty (not yet uploaded): 0 B"), "nothing uploaded without farmers: \(waiting)")

        // Now the network: the seed on the address the mount was given, and
        // farmers with 2 GiB each, less than the renter's wanted allowance.
        let seed = try ChildProcess.granary(["seed", "--listen", seedAddress, "--state", dir.sub("seed")], name: "seed",
                                            environment: Self.environment)
        run.network.append(seed)
        _ = try seed.waitForLine(timeout: 30) { $0.contains("listening") }
        for i in 0..<8 {
            run.network.append(try ChildProcess.granary(["farm", "--storage", dir.sub("farmer\(i)"), "--capacity", "2G",
                                                     "--listen", "127.0.0.1:0", "--bootstrap", seedAddress],
                                                    name: "farmer\(i)", environment: Self.environment))
        }
        for f in run.network.dropFirst() { _ = try f.waitForLine(timeout: 60) { $0.contains("listening") } }

        let flush = Shell.run("'\(bin)' flush --state '\(state)'", timeout: 200)
        #expect(flush.status == 0 && flush.output.contains("durable"), "flush completes once contracts form: \(flush.output)")
        let ready = status()
        #expect(ready.contains("network.state: ready"), "\(ready)")
        run.stopMount()

        // Cold: without the clean cache, the data comes back from the farmers.
        Shell.run("rm -rf '\(state)/cache/clean'/* '\(state)/cache/slab-clean'")
        run.mount = try startMount()
        let cold = Shell.run("cmp '\(dir.path)/a.orig' '\(mnt)/a' && grep -q hello '\(mnt)/d/h'", timeout: 120)
        #expect(cold.status == 0, "files read back cold: \(cold.output)")
        run.stopMount()

        // Farmers frozen (they accept connections and never answer), cache
        // wiped: a write over uncached data never waits for the network, not
        // even while the uploader fetches the old content to merge it (up to
        // the read timeout, 10 s here). That fetch runs without the file's
        // lock, so a second write goes through before the fetch gives up.
        for f in run.network.dropFirst() { f.signal(SIGSTOP) }
        Shell.run("rm -rf '\(state)/cache/clean'/* '\(state)/cache/slab-clean'")
        run.mount = try startMount()
        let patch = dir.path + "/patch"
        let first = Shell.run("head -c 65536 /dev/urandom > '\(patch)' && dd if='\(patch)' of='\(mnt)/a' bs=65536 seek=4 conv=notrunc status=none", timeout: 30)
        #expect(first.status == 0, "write over an uncached chunk: \(first.output)")
        Thread.sleep(forTimeInterval: 2.5)  // idle for 1 s: the uploader is fetching the base now
        let second = Shell.run("dd if='\(patch)' of='\(mnt)/a' bs=65536 seek=8 conv=notrunc,fsync status=none", timeout: 30)
        #expect(second.status == 0, "second write: \(second.output)")
        let failedFetch = "cannot fetch the old content"
        func mountLog() -> String { run.mount?.output.joined(separator: "\n") ?? "" }
        #expect(!mountLog().contains(failedFetch), "the second write returned before the uploader's fetch gave up: \(mountLog().suffix(1500))")
        var fetchSeen = false
        for _ in 0..<60 where !fetchSeen {
            fetchSeen = mountLog().contains(failedFetch)
            if !fetchSeen { Thread.sleep(forTimeInterval: 0.5) }
        }
        #expect(fetchSeen, "the uploader did try to fetch the base, and said why it failed")
        // Farmers back: the writes are merged over the old content and stored.
        for f in run.network.dropFirst() { f.signal(SIGCONT) }
        let patched = Shell.run("""
            cp '\(dir.path)/a.orig' '\(dir.path)/a.want' \
            && dd if='\(patch)' of='\(dir.path)/a.want' bs=65536 seek=4 conv=notrunc status=none \
            && dd if='\(patch)' of='\(dir.path)/a.want' bs=65536 seek=8 conv=notrunc status=none \
            && '\(bin)' flush --state '\(state)' && cmp '\(dir.path)/a.want' '\(mnt)/a'
            """, timeout: 200)
        #expect(patched.status == 0, "both writes stored over the old content: \(patched.output) \(mountLog().suffix(6000))")
        run.stopMount()

        // Farmers gone, cache wiped: the mount still comes up, and a read of
        // uncached data fails with EIO within the read timeout.
        for f in run.network.dropFirst() { f.kill() }
        Shell.run("rm -rf '\(state)/cache/clean'/* '\(state)/cache/slab-clean'")
        run.mount = try startMount()
        let failed = Shell.run("cat '\(mnt)/a' > /dev/null", timeout: 60)
        #expect(failed.status != 0 && failed.output.contains("Input/output error"), "uncached read fails with EIO: \(failed.output)")
        #expect(Shell.run("ls '\(mnt)/d'", timeout: 30).output.contains("h"), "metadata is local: listing still works")
        let logged = run.mount?.output.joined(separator: "\n") ?? ""
        #expect(logged.contains("read of chunk"), "the mount logs why the read failed: \(logged.suffix(2000))")
        let gone = status()
        #expect(gone.contains("with a farmer not answering") && gone.contains("unreachable for"),
                "status says which contracts' farmers stopped answering: \(gone)")
    }
}
