import Foundation

/// A tmpfs of a fixed size mounted at a fresh folder, for disk-full tests.
/// Unmounted (lazily, so an open file cannot keep it) on deinit, even when a
/// test fails. Needs root, as the FUSE tests do. It holds the folder it is
/// in, so that folder is removed only after the unmount: removed first, it
/// stopped at the mount point and was left behind in /tmp.
public final class SmallDisk: @unchecked Sendable {
    public let path: String
    private let parent: TemporaryDirectory

    public init(megabytes: Int, under parent: TemporaryDirectory) throws {
        self.parent = parent
        path = parent.path + "/small-disk"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/mount")
        p.arguments = ["-t", "tmpfs", "-o", "size=\(megabytes)m,mode=0755", "tmpfs", path]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw TestSupportError.missing("cannot mount a \(megabytes) MiB tmpfs at \(path) (mount exited \(p.terminationStatus); root is needed)")
        }
    }

    public func sub(_ name: String) -> String {
        let p = path + "/" + name
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    deinit {
        umount2(path, Int32(MNT_DETACH))
        rmdir(path)
    }
}
