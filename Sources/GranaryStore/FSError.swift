import Glibc

/// A POSIX error a filesystem operation returns to the kernel: the errno
/// value travels unchanged to the caller of the system call.
public struct FSError: Error, Equatable, CustomStringConvertible, Sendable {
    public let errno: Int32
    public init(_ errno: Int32) { self.errno = errno }

    public static let notFound = FSError(ENOENT)
    public static let exists = FSError(EEXIST)
    public static let notDirectory = FSError(ENOTDIR)
    public static let isDirectory = FSError(EISDIR)
    public static let notEmpty = FSError(ENOTEMPTY)
    public static let invalid = FSError(EINVAL)
    public static let nameTooLong = FSError(ENAMETOOLONG)
    public static let io = FSError(EIO)
    public static let noSpace = FSError(ENOSPC)
    public static let noData = FSError(ENODATA)
    public static let range = FSError(ERANGE)
    public static let notSupported = FSError(EOPNOTSUPP)
    public static let permission = FSError(EPERM)
    public static let access = FSError(EACCES)

    public var description: String { String(cString: strerror(errno)) }
}

/// Wall-clock time in nanoseconds since the epoch (what `struct stat` carries).
@inline(__always) func wallClockNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// Monotonic nanoseconds, for idle timers and rates.
@inline(__always) func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Space on the file system holding `path`, in bytes.
func diskSpace(_ path: String) -> (total: UInt64, free: UInt64, available: UInt64, blockSize: UInt64)? {
    var s = statvfs()
    guard statvfs(path, &s) == 0 else { return nil }
    let bs = UInt64(s.f_frsize)
    return (UInt64(s.f_blocks) * bs, UInt64(s.f_bfree) * bs, UInt64(s.f_bavail) * bs, bs)
}
