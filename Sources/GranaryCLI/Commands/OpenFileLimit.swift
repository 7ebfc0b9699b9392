import Foundation
import Glibc

/// The process's open-file limit (RLIMIT_NOFILE), raised as far as allowed.
/// A mount keeps up to 64 chunk cache files open per open file (32 dirty,
/// 32 clean) and one descriptor per farmer session and FUSE worker; a
/// farmer one per connection. Before dirty chunks' files were closed
/// between uses, copying a thousand large files under the usual soft limit
/// of 1,024 while uploads lagged ran the mount out of descriptors; the
/// raise stays for many open files and many farmers.
enum OpenFileLimit {
    /// The most a process asks for.
    static let wanted: rlim_t = 1 << 20

    /// Raises the soft limit to the hard one and, as root, the hard one too
    /// (up to the kernel's fs.nr_open). Returns the soft limit now in force.
    @discardableResult
    static func raise() -> UInt64 {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 0 }
        if limit.rlim_max < wanted && geteuid() == 0 {
            let nrOpen = (try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8))
                .flatMap { rlim_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            let target = min(wanted, max(nrOpen, limit.rlim_max))
            var raised = rlimit(rlim_cur: target, rlim_max: target)
            if target > limit.rlim_max && setrlimit(resource, &raised) == 0 { return UInt64(target) }
        }
        guard limit.rlim_cur < limit.rlim_max else { return UInt64(limit.rlim_cur) }
        var raised = rlimit(rlim_cur: min(limit.rlim_max, max(limit.rlim_cur, wanted)), rlim_max: limit.rlim_max)
        return setrlimit(resource, &raised) == 0 ? UInt64(raised.rlim_cur) : UInt64(limit.rlim_cur)
    }
}
