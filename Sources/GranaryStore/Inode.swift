import Glibc

/// A file name as the kernel gives it: raw bytes (not necessarily UTF-8).
public typealias FileName = [UInt8]

/// The longest name POSIX (NAME_MAX) lets a directory entry have.
public let maxNameLength = 255

/// The attributes of one inode, as `stat` reports them. Times are
/// nanoseconds since the epoch.
public struct InodeAttributes: Sendable, Equatable {
    public var ino: UInt64
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var nlink: UInt32
    public var size: UInt64
    public var rdev: UInt64
    public var atime: Int64
    public var mtime: Int64
    public var ctime: Int64
    /// The bytes the content takes (`st_blocks`, `du`). Filled in when the
    /// store hands attributes out (`InodeRecord.attributes`); the copy an
    /// `InodeRecord` keeps leaves it 0, since it moves with the file's chunks.
    public var allocatedSize: UInt64 = 0

    public var isDirectory: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFDIR) }
    public var isRegular: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFREG) }
    public var isSymlink: Bool { mode & UInt32(S_IFMT) == UInt32(S_IFLNK) }
    public var fileType: UInt32 { mode & UInt32(S_IFMT) }
}

/// One inode in memory: attributes plus what its kind needs. Guarded by the
/// store's metadata lock.
final class InodeRecord {
    var attr: InodeAttributes
    /// A regular file's content map (the same object as `files[ino]`).
    let data: FileData?
    /// Symlink target.
    var target: [UInt8]?
    /// Directory entries (directories only).
    var entries: [FileName: DirectoryEntry]?
    /// Parent directory (directories only), for `..` and subtree checks.
    var parent: UInt64 = 0
    /// Kernel lookup references (FUSE nlookup).
    var lookups: UInt64 = 0
    /// Open file handles.
    var opens: Int = 0
    /// Of those, the ones that may write. A shared writable mmap holds
    /// its handle open, and the bytes it writes reach the mount only when
    /// the kernel writes them back (see `GranaryStore.seek`).
    var writers: Int = 0
    var xattrs: [FileName: [UInt8]] = [:]
    /// The size meta.db holds for a file, written only together with the
    /// file's chunk rows (see `InodeRow`).
    var storedSize: UInt64
    /// When a write last changed the file's bytes (monotonic), so that the
    /// uploader's passes leave a file being written to a later one.
    var lastDataWrite: UInt64 = 0

    init(attr: InodeAttributes) {
        self.attr = attr
        data = attr.isRegular ? FileData(ino: attr.ino) : nil
        storedSize = attr.size
        if attr.isDirectory { entries = [:] }
    }

    /// `attr` with `allocatedSize` filled in: a file's chunks that hold
    /// any data, each counted whole, never more than its size, so a sparse
    /// file's holes take nothing; other inodes, their size. The chunk
    /// count is atomic, so this does not wait for the file's lock.
    var attributes: InodeAttributes {
        var a = attr
        if let data {
            a.allocatedSize = min(a.size, UInt64(data.chunkCount.load(ordering: .relaxed)) * UInt64(chunkSize))
        } else {
            a.allocatedSize = a.size
        }
        return a
    }

    /// Whether a handle that may write is open (see `writers`).
    var isOpenForWriting: Bool { writers > 0 }
}

/// A name in a directory. `cookie` is the entry's stable readdir offset:
/// it only grows, so offsets stay valid while the directory changes.
struct DirectoryEntry {
    var ino: UInt64
    var cookie: Int64
}

/// One row of a directory listing.
public struct DirectoryListingEntry: Sendable {
    public let name: FileName
    public let ino: UInt64
    public let mode: UInt32
    /// Pass back to `readdir` to continue after this entry.
    public let cookie: Int64
}
