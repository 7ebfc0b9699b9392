import Foundation

/// A mount point left behind by a crashed mount answers "Transport endpoint
/// is not connected". Detects that state and clears it before mounting.
public enum StaleMount {
    /// True when /proc/mounts lists `path` (absolute, resolved).
    public static func isListed(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return false }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 1, unescape(String(fields[1])) == path { return true }
        }
        return false
    }

    private static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\040", with: " ").replacingOccurrences(of: "\\011", with: "\t")
            .replacingOccurrences(of: "\\012", with: "\n").replacingOccurrences(of: "\\134", with: "\\")
    }

    /// Clears a stale mount at `path`; throws when a live mount is there.
    /// Returns true when one was cleared.
    @discardableResult
    public static func clearIfStale(_ path: String) throws -> Bool {
        guard isListed(path) else { return false }
        var st = stat()
        if stat(path, &st) == 0 {
            throw MountError("\(path) is already mounted (another granary mount?); unmount it first with fusermount3 -u \(path)")
        }
        guard errno == ENOTCONN else { throw MountError("\(path) is listed as mounted but unusable: \(String(cString: strerror(errno)))") }
        // Lazy unmount: as root directly, otherwise through fusermount3.
        if getuid() == 0 && umount2(path, Int32(MNT_DETACH)) == 0 { return true }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        p.arguments = ["-u", "-z", path]
        try? p.run()
        p.waitUntilExit()
        if isListed(path) { throw MountError("cannot clear the stale mount at \(path): run fusermount3 -u -z \(path)") }
        return true
    }
}
