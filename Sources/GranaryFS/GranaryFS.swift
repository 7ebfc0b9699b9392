import CFuse3
import CFuseChannel
import Foundation
import GranaryStore
import Logging

/// How the mount is set up.
public struct MountOptions: Sendable {
    public var mountpoint: String
    /// `allow_other`: other users may use the mount (on by default as root).
    public var allowOther: Bool = getuid() == 0
    /// Let the kernel merge small writes (FUSE_CAP_WRITEBACK_CACHE).
    public var writebackCache: Bool = false
    public var entryTimeout: Double = 1
    public var attrTimeout: Double = 1
    public var maxThreads: UInt32 = 16
    public init(mountpoint: String) { self.mountpoint = mountpoint }
}

/// Why a mount could not start.
public struct MountError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// The FUSE low-level adapter: turns kernel requests into `GranaryStore`
/// calls and errno replies. Callbacks run on libfuse's worker threads and
/// do their work inline (the store is thread-safe).
public final class GranaryFS: @unchecked Sendable {
    public let store: GranaryStore
    let options: MountOptions
    let log = Logger(label: "granary.fs")
    private var session: OpaquePointer?

    /// Directory handles: a snapshot of entries in cookie order, refreshed on rewind.
    final class DirectoryHandle {
        var parent: UInt64 = 1
        var entries: [DirectoryListingEntry] = []
    }
    /// What the kernel agreed to in init (set once, before other requests).
    let features = NegotiatedFeatures()

    let handleLock = NSLock()  // guards dirHandles and nextHandle
    var dirHandles: [UInt64: DirectoryHandle] = [:]
    var nextHandle: UInt64 = 1

    /// Reusable read buffers: allocations of this size would be mmapped
    /// per call otherwise.
    private let bufferLock = NSLock()
    private var buffers: [UnsafeMutableRawPointer] = []
    static let bufferSize = 1 << 20
    /// Largest read request. A read is answered by splicing cache files
    /// through a pipe, which holds at most 1 MiB (fs.pipe-max-size) unless
    /// the process has CAP_SYS_RESOURCE; libfuse wants room for the
    /// header and a page per buffer besides, else it copies instead.
    static let maxRead = bufferSize - (32 << 10)
    /// The mount's read-ahead window: four requests of `bufferSize`, so the
    /// kernel queues the next reads while one is served instead of waiting
    /// for each reply before asking for more. INIT must offer it too (as
    /// max_readahead): the kernel keeps the smaller of the two, and a 1 MiB
    /// offer had silently held the window to one request (warm read 0.51
    /// of local; 0.58-0.76 with four).
    static let readAheadBytes = 4 * bufferSize

    public init(store: GranaryStore, options: MountOptions) {
        self.store = store
        self.options = options
    }

    func takeBuffer() -> UnsafeMutableRawPointer {
        bufferLock.lock()
        if let b = buffers.popLast() { bufferLock.unlock(); return b }
        bufferLock.unlock()
        return UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 4096)
    }

    func giveBuffer(_ b: UnsafeMutableRawPointer) {
        bufferLock.lock(); buffers.append(b); bufferLock.unlock()
    }

    // MARK: running

    /// Mounts and serves requests until unmounted or signalled (SIGINT,
    /// SIGTERM, SIGHUP); then unmounts. Blocks the calling thread.
    /// `onMounted` runs once the mount is live.
    public func run(onMounted: () -> Void) throws {
        var optionList = ["fsname=granary", "subtype=granary", "default_permissions", "max_read=\(Self.maxRead)"]
        if options.allowOther { optionList.append("allow_other") }
        let argStrings = ["granary", "-o", optionList.joined(separator: ",")]
        let argv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: argStrings.count + 1)
        for (i, s) in argStrings.enumerated() { argv[i] = strdup(s) }
        argv[argStrings.count] = nil
        defer {
            for i in 0..<argStrings.count { free(argv[i]) }
            argv.deallocate()
        }
        var args = fuse_args(argc: Int32(argStrings.count), argv: argv, allocated: 0)
        var ops = Self.operations()
        let me = Unmanaged.passUnretained(self).toOpaque()
        guard let se = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, me) else {
            throw MountError("fuse_session_new failed (bad mount options?)")
        }
        session = se
        defer { fuse_session_destroy(se); fuse_opt_free_args(&args) }
        // A shell's `cmd &` starts with SIGINT ignored, and libfuse installs
        // its handlers only over the default one.
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
        signal(SIGHUP, SIG_DFL)
        guard fuse_set_signal_handlers(se) == 0 else { throw MountError("cannot install signal handlers") }
        defer { fuse_remove_signal_handlers(se) }
        guard fuse_session_mount(se, options.mountpoint) == 0 else {
            throw MountError("cannot mount at \(options.mountpoint) (is /dev/fuse available and the folder empty and not mounted?)")
        }
        // Our own /dev/fuse I/O, so the kernel stops asking for
        // security.capability before every write (see fuse_channel.h).
        let io = granary_fuse_channel_install(se)
        if io != 0 { log.warning("FUSE custom I/O unavailable (\(-io)): every write costs an extra request") }
        raiseReadAhead()
        onMounted()
        let cfg = fuse_loop_cfg_create()
        fuse_loop_cfg_set_max_threads(cfg, options.maxThreads)
        fuse_loop_cfg_set_clone_fd(cfg, 0)
        // libfuse's signal handler only marks the session exited; the loop
        // notices when its own thread is interrupted. A watcher makes sure
        // it is, whichever thread took the signal.
        var wake = sigaction()
        wake.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&wake.sa_mask)
        wake.sa_flags = 0
        sigaction(SIGUSR1, &wake, nil)
        // Threads Foundation starts block most signals: let this one take SIGUSR1.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGUSR1)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        let loopThread = pthread_self()
        let watcherDone = Flag()
        let sessionBits = UInt(bitPattern: se)
        let watcher = Thread {
            let se = OpaquePointer(bitPattern: sessionBits)!
            while !watcherDone.value {
                usleep(100_000)
                if fuse_session_exited(se) != 0 && !watcherDone.value { pthread_kill(loopThread, SIGUSR1) }
            }
        }
        watcher.start()
        let rc = fuse_session_loop_mt(se, cfg)
        watcherDone.set()
        fuse_loop_cfg_destroy(cfg)
        fuse_session_unmount(se)
        if rc < 0 { log.error("FUSE loop ended with error \(-rc)") }
    }

    /// For `granary status`: each kind of request served so far, with the
    /// mean and longest time from reading it to answering it, e.g.
    /// "fuse.write" → "6000 requests, mean 25.3 µs, max 1.2 ms". A slow
    /// mount shows here whether its own work or the round trips cost.
    public static func requestStatistics() -> [String: String] {
        var out: [String: String] = [:]
        for op in UInt32(0)..<64 {
            guard let name = granary_fuse_opcode_name(op) else { continue }
            var n: UInt64 = 0, total: UInt64 = 0, longest: UInt64 = 0
            granary_fuse_served(op, &n, &total, &longest)
            guard n > 0 else { continue }
            out["fuse.\(String(cString: name))"] = "\(n) request\(n == 1 ? "" : "s"), mean \(duration(total / n)), max \(duration(longest))"
        }
        return out
    }

    private static func duration(_ ns: UInt64) -> String {
        if ns < 1_000_000 { return String(format: "%.1f µs", Double(ns) / 1e3) }
        if ns < 1_000_000_000 { return String(format: "%.1f ms", Double(ns) / 1e6) }
        return String(format: "%.2f s", Double(ns) / 1e9)
    }

    /// The kernel caps a FUSE mount's read-ahead at its default 128 KiB,
    /// so a sequential read arrives as 128 KiB requests however large the
    /// reader's buffer; `readAheadBytes` (in requests of max_write, 1 MiB)
    /// takes far fewer round trips and keeps requests queued. Needs root
    /// (sysfs); without it reads still work.
    private func raiseReadAhead() {
        // The device number comes from mountinfo: a stat of the mount point
        // would wait for this loop, which has not started yet.
        guard let info = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return }
        // Compared as given (the mount command passes a standardized path):
        // URL(fileURLWithPath:) would stat it, and that waits for this loop too.
        var target = options.mountpoint
        while target.count > 1 && target.hasSuffix("/") { target.removeLast() }
        var device: Substring?
        for line in info.split(separator: "\n") {
            let fields = line.split(separator: " ")
            // id parent major:minor root mountpoint ...; the last match is the newest mount.
            if fields.count > 4, fields[4] == target { device = fields[2] }
        }
        guard let device else { return }
        let fd = Glibc.open("/sys/class/bdi/\(device)/read_ahead_kb", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let text = "\(GranaryFS.readAheadBytes >> 10)\n"
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        Glibc.close(fd)
    }

    /// Drops the kernel's cached attributes of `ino` (not its pages).
    func invalidateAttributes(_ ino: UInt64) {
        if let session { _ = fuse_lowlevel_notify_inval_inode(session, fuse_ino_t(ino), -1, 0) }
    }

    /// Stops the loop from another thread (the loop then unmounts).
    public func requestExit() {
        if let session { fuse_session_exit(session) }
    }

    // MARK: replies

    static func fs(_ req: fuse_req_t?) -> GranaryFS {
        Unmanaged<GranaryFS>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    static func timespecFrom(_ ns: Int64) -> timespec {
        var sec = ns / 1_000_000_000
        var nsec = ns % 1_000_000_000
        if nsec < 0 { nsec += 1_000_000_000; sec -= 1 }
        return timespec(tv_sec: Int(sec), tv_nsec: Int(nsec))
    }

    static func nanos(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }

    func stat(_ a: InodeAttributes) -> stat {
        var st = Glibc.stat()
        st.st_ino = UInt(a.ino)
        st.st_mode = a.mode
        st.st_nlink = UInt(a.nlink)
        st.st_uid = a.uid
        st.st_gid = a.gid
        st.st_rdev = UInt(a.rdev)
        st.st_size = Int(a.size)
        st.st_blksize = 4096
        st.st_blocks = Int((a.allocatedSize + 511) / 512)
        st.st_atim = Self.timespecFrom(a.atime)
        st.st_mtim = Self.timespecFrom(a.mtime)
        st.st_ctim = Self.timespecFrom(a.ctime)
        return st
    }

    func entry(_ a: InodeAttributes) -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = fuse_ino_t(a.ino)
        e.generation = 1
        e.attr = stat(a)
        e.attr_timeout = options.attrTimeout
        e.entry_timeout = options.entryTimeout
        return e
    }

    static func name(_ p: UnsafePointer<CChar>?) -> FileName {
        guard let p else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: strlen(p)))
    }

    static func caller(_ req: fuse_req_t?) -> Caller {
        let ctx = fuse_req_ctx(req)!.pointee
        // With DONT_MASK (negotiated together with POSIX ACLs) the umask is
        // the store's to apply; otherwise the kernel already did.
        let umask = fs(req).features.posixACL ? UInt32(ctx.umask) : 0
        return Caller(uid: ctx.uid, gid: ctx.gid, umask: umask)
    }

    /// True when an unprivileged caller is neither in the inode's group as
    /// its primary group nor among its supplementary groups (which libfuse
    /// reads from /proc).
    static func outsideGroup(_ req: fuse_req_t?, of ino: UInt64) -> Bool {
        let c = caller(req)
        guard c.uid != 0, let a = try? fs(req).store.getattr(ino), a.gid != c.gid else { return false }
        var groups = [gid_t](repeating: 0, count: 64)
        var n = fuse_req_getgroups(req, Int32(groups.count), &groups)
        if n > Int32(groups.count) {
            groups = [gid_t](repeating: 0, count: Int(n))
            n = fuse_req_getgroups(req, Int32(groups.count), &groups)
        }
        guard n >= 0 else { return false }  // unknown: leave the bit alone
        return !groups.prefix(Int(n)).contains(a.gid)
    }

    func replyEntry(_ req: fuse_req_t?, _ body: () throws(FSError) -> InodeAttributes) {
        do {
            var e = entry(try body())
            fuse_reply_entry(req, &e)
        } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
    }

    func replyError(_ req: fuse_req_t?, _ body: () throws(FSError) -> Void) {
        do { try body(); fuse_reply_err(req, 0) } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
    }

    /// Which extended attributes are stored: the user, trusted and security
    /// namespaces and, of system.*, the two POSIX ACLs. Other system names
    /// get EOPNOTSUPP, which callers such as cp handle cleanly.
    /// The kernel asks for security.capability before every write, so this
    /// runs per write: the names are built once, not per call.
    static func xattrAllowed(_ name: FileName) -> Bool {
        for prefix in storedPrefixes where name.starts(with: prefix) { return true }
        return storedSystemNames.contains(name)
    }
    private static let storedPrefixes: [FileName] = ["user.", "trusted.", "security."].map { Array($0.utf8) }
    private static let storedSystemNames: [FileName] = ["system.posix_acl_access", "system.posix_acl_default"].map { Array($0.utf8) }
}

/// Kernel features the mount negotiated, read by every request.
final class NegotiatedFeatures: @unchecked Sendable {
    private let lock = NSLock()
    private var acl = false
    /// POSIX ACLs (with DONT_MASK): the store applies umask and default ACLs.
    var posixACL: Bool { lock.lock(); defer { lock.unlock() }; return acl }
    func set(posixACL: Bool) { lock.lock(); acl = posixACL; lock.unlock() }
}

/// A flag set once from one thread and read from another.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var v = false
    var value: Bool { lock.lock(); defer { lock.unlock() }; return v }
    func set() { lock.lock(); v = true; lock.unlock() }
}

extension GranaryFS {
    static func errno(_ error: any Error) -> Int32 { (error as? FSError)?.errno ?? EIO }
}
