import CGranaryShim
import Foundation

/// fsync helpers shared by every layer that promises durability.
public enum FileSync {
    /// fsyncs the directory holding `path`, so a rename or create in it is durable.
    @discardableResult
    public static func syncDirectory(containing path: String) -> Bool {
        let dir = (path as NSString).deletingLastPathComponent
        return syncDirectory(dir.isEmpty ? "." : dir)
    }

    @discardableResult
    public static func syncDirectory(_ dir: String) -> Bool {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return fsync(fd) == 0
    }

    /// Starts writing back `length` bytes at `offset` without waiting, so a
    /// later fsync of a large file finds most of it already on disk: the
    /// disk works while the rest of the bytes arrive. Advisory; errors are
    /// left to that fsync.
    public static func startWriteback(_ fd: Int32, offset: Int, length: Int) {
        _ = granary_start_writeback(fd, Int64(offset), Int64(length))
    }

    /// The `open` flag for direct I/O (O_DIRECT): writes go from the
    /// caller's buffer to the disk, bypassing the page cache.
    public static let directIOFlag: Int32 = granary_direct_io_flag()
}
