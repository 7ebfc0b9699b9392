import Foundation
import GranaryTestSupport
import Testing

/// POSIX conformance through a real mount: what a suite such as pjdfstest
/// checks, plus ACLs, umask and atime (ConformanceScripts).
@Suite(.serialized)
struct ConformanceTests {
    func expectOK(_ r: Shell.Result, _ what: String) {
        #expect(r.status == 0, "\(what) failed (\(r.status)):\n\(r.output.suffix(4000))")
    }

    @Test(.timeLimit(.minutes(2)))
    func posixACLsAndUmaskSurviveRestart() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(ConformanceScripts.acls, args: [m.mountpoint]), "ACLs")
        m.stop()
        try m.start()
        expectOK(Shell.python(ConformanceScripts.aclsAfterRestart, args: [m.mountpoint]), "ACLs after restart")
    }

    @Test(.timeLimit(.minutes(2)))
    func atimeFollowsReadsRelatimeStyle() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(ConformanceScripts.atime, args: [m.mountpoint]), "atime")
    }

    @Test(.timeLimit(.minutes(2)))
    func permissionAndNamespaceRules() throws {
        let m = try MountFixture()
        defer { m.stop() }
        expectOK(Shell.python(ConformanceScripts.rules, args: [m.mountpoint]), "POSIX rules")
    }
}
