import Foundation
import GranaryTestSupport
import Testing

/// Ctrl-C (SIGTERM) on a network mount flushes, then takes a metadata
/// snapshot: what was written is restorable from the key alone without a
/// `granary flush` first.
@Suite(.serialized) struct ShutdownSnapshotTests {
    @Test(.timeLimit(.minutes(5)))
    func unmountTakesASnapshotThatRestores() async throws {
        try FuseEnvironment.require()
        let bin = try GranaryBinary.require()
        let dir = TemporaryDirectory("granary-shutdown-snapshot")
        let net = try RestoreTests.Network(dir: dir, farmers: 5)
        let state = dir.path + "/state", mnt = dir.path + "/mnt", orig = dir.sub("orig")

        var mount: RestoreTests.NetworkMount? = try RestoreTests.NetworkMount(state: state, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("""
            head -c 1500000 /dev/urandom > '\(orig)/a' && cp '\(orig)/a' '\(mnt)/a' && mkdir '\(mnt)/d' && echo kept > '\(mnt)/d/note'
            """).status == 0)
        mount?.stop()  // SIGTERM: flush, unmount, final snapshot
        let log = mount?.child.output.joined(separator: "\n") ?? ""
        mount = nil
        #expect(log.contains("metadata snapshot") && log.contains("stored"), "\(log.suffix(2000))")

        let keyFile = dir.path + "/saved.key"
        #expect(Shell.run("cp '\(state)/master.key' '\(keyFile)' && chmod 600 '\(keyFile)' && rm -rf '\(state)'").status == 0)
        let restored = dir.path + "/restored"
        let r = Shell.run("GRANARY_POW_BITS=4 '\(bin)' restore --bootstrap \(net.seedAddress) --key '\(keyFile)' --state '\(restored)'", timeout: 120)
        #expect(r.status == 0 && r.output.contains("restored snapshot"), "\(r.output)")
        mount = try RestoreTests.NetworkMount(state: restored, mnt: mnt, seed: net.seedAddress)
        #expect(Shell.run("cmp '\(orig)/a' '\(mnt)/a' && [ \"$(cat '\(mnt)/d/note')\" = kept ]", timeout: 120).status == 0)
        mount?.stop()
        mount = nil
        _ = net
    }
}
