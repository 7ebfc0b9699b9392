import CFuse3
import CFuseChannel
import Foundation
import GranaryStore

/// The table of low-level callbacks. Each is a non-capturing closure that
/// finds the filesystem object through the request's userdata.
extension GranaryFS {
    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()

        ops.`init` = { userdata, conn in
            guard let userdata, let conn else { return }
            let fs = Unmanaged<GranaryFS>.fromOpaque(userdata).takeUnretainedValue()
            // Setuid/setgid are cleared by the store on the writes, truncates
            // and chowns the kernel marks (FUSE_HANDLE_KILLPRIV_V2, added to
            // the reply by our channel when the kernel offers it); failing
            // that, the kernel clears them through setattr. Not the coarser
            // v1, which clears them even for root. O_TRUNC arrives as a
            // setattr of the size. Requests are read whole (no splice), so
            // the channel sees each one's flags.
            conn.pointee.want &= ~UInt32(FUSE_CAP_HANDLE_KILLPRIV)
            conn.pointee.want &= ~UInt32(FUSE_CAP_ATOMIC_O_TRUNC)
            conn.pointee.want &= ~UInt32(FUSE_CAP_SPLICE_READ)
            if fs.options.writebackCache && conn.pointee.capable & UInt32(FUSE_CAP_WRITEBACK_CACHE) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_WRITEBACK_CACHE)
            }
            // POSIX ACLs: the kernel enforces them; the store keeps them,
            // keeps the mode in step and applies default ACLs to new inodes,
            // which needs the caller's umask (DONT_MASK) instead of the
            // kernel applying it up front.
            let acl = UInt32(FUSE_CAP_POSIX_ACL) | UInt32(FUSE_CAP_DONT_MASK)
            if conn.pointee.capable & acl == acl {
                conn.pointee.want |= acl
                fs.features.set(posixACL: true)
            }
            // Reads are answered by splicing cache files into /dev/fuse.
            if conn.pointee.capable & UInt32(FUSE_CAP_SPLICE_WRITE) != 0 {
                conn.pointee.want |= UInt32(FUSE_CAP_SPLICE_WRITE)
            }
            conn.pointee.max_read = UInt32(GranaryFS.maxRead)
            conn.pointee.max_write = 1 << 20
            conn.pointee.max_readahead = UInt32(GranaryFS.readAheadBytes)
        }

        ops.lookup = { req, parent, name in
            let fs = GranaryFS.fs(req)
            do {
                var e = fs.entry(try fs.store.lookup(parent: UInt64(parent), name: GranaryFS.name(name)))
                fuse_reply_entry(req, &e)
            } catch {
                // A missing name is cached as a negative entry (ino 0): this
                // mount is the only writer, and `cp -r` looks up every name
                // before creating it.
                if GranaryFS.errno(error) == ENOENT {
                    var e = fuse_entry_param()
                    e.entry_timeout = fs.options.entryTimeout
                    fuse_reply_entry(req, &e)
                } else {
                    fuse_reply_err(req, GranaryFS.errno(error))
                }
            }
        }

        ops.forget = { req, ino, n in
            GranaryFS.fs(req).store.forget(UInt64(ino), n)
            fuse_reply_none(req)
        }

        ops.forget_multi = { req, count, forgets in
            let fs = GranaryFS.fs(req)
            if let forgets {
                for i in 0..<count { fs.store.forget(UInt64(forgets[i].ino), forgets[i].nlookup) }
            }
            fuse_reply_none(req)
        }

        ops.getattr = { req, ino, _ in
            let fs = GranaryFS.fs(req)
            do {
                var st = fs.stat(try fs.store.getattr(UInt64(ino)))
                fuse_reply_attr(req, &st, fs.options.attrTimeout)
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.setattr = { req, ino, attr, toSet, _ in
            let fs = GranaryFS.fs(req)
            guard let attr else { fuse_reply_err(req, EINVAL); return }
            var c = GranaryStore.AttributeChanges()
            let a = attr.pointee
            if toSet & FUSE_SET_ATTR_MODE != 0 { c.mode = a.st_mode }
            if toSet & FUSE_SET_ATTR_UID != 0 { c.uid = a.st_uid }
            if toSet & FUSE_SET_ATTR_GID != 0 { c.gid = a.st_gid }
            if toSet & FUSE_SET_ATTR_SIZE != 0 { c.size = UInt64(max(0, a.st_size)) }
            let now = Int64(Date().timeIntervalSince1970 * 1e9)
            if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { c.atime = now } else if toSet & FUSE_SET_ATTR_ATIME != 0 { c.atime = GranaryFS.nanos(a.st_atim) }
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { c.mtime = now } else if toSet & FUSE_SET_ATTR_MTIME != 0 { c.mtime = GranaryFS.nanos(a.st_mtim) }
            if toSet & FUSE_SET_ATTR_CTIME != 0 { c.ctime = GranaryFS.nanos(a.st_ctim) }
            // chown(f, -1, -1) arrives as a setattr of nothing; Linux clears
            // setuid/setgid there too, and under KILLPRIV_V2 the kernel
            // leaves that to us without a flag.
            c.dropPrivileges = granary_fuse_request_drops_privileges() != 0
                || (toSet == 0 && granary_fuse_drops_privileges_itself() != 0)
            do {
                var st = fs.stat(try fs.store.setattr(UInt64(ino), c))
                fuse_reply_attr(req, &st, fs.options.attrTimeout)
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.readlink = { req, ino in
            let fs = GranaryFS.fs(req)
            do {
                var t = try fs.store.readlink(UInt64(ino))
                t.append(0)
                t.withUnsafeBufferPointer { p in
                    p.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(req, $0.baseAddress) }
                }
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.mknod = { req, parent, name, mode, rdev in
            let fs = GranaryFS.fs(req)
            fs.replyEntry(req) { () throws(FSError) in
                try fs.store.mknod(parent: UInt64(parent), name: GranaryFS.name(name), mode: mode, rdev: UInt64(rdev), caller: GranaryFS.caller(req))
            }
        }

        ops.mkdir = { req, parent, name, mode in
            let fs = GranaryFS.fs(req)
            fs.replyEntry(req) { () throws(FSError) in
                try fs.store.mkdir(parent: UInt64(parent), name: GranaryFS.name(name), mode: mode, caller: GranaryFS.caller(req))
            }
        }

        ops.unlink = { req, parent, name in
            let fs = GranaryFS.fs(req)
            fs.replyError(req) { () throws(FSError) in try fs.store.unlink(parent: UInt64(parent), name: GranaryFS.name(name)) }
        }

        ops.rmdir = { req, parent, name in
            let fs = GranaryFS.fs(req)
            fs.replyError(req) { () throws(FSError) in try fs.store.rmdir(parent: UInt64(parent), name: GranaryFS.name(name)) }
        }

        ops.symlink = { req, link, parent, name in
            let fs = GranaryFS.fs(req)
            fs.replyEntry(req) { () throws(FSError) in
                try fs.store.symlink(target: GranaryFS.name(link), parent: UInt64(parent), name: GranaryFS.name(name), caller: GranaryFS.caller(req))
            }
        }

        ops.rename = { req, parent, name, newParent, newName, flags in
            let fs = GranaryFS.fs(req)
            fs.replyError(req) { () throws(FSError) in
                try fs.store.rename(parent: UInt64(parent), name: GranaryFS.name(name), newParent: UInt64(newParent),
                                    newName: GranaryFS.name(newName), flags: flags)
            }
        }

        ops.link = { req, ino, newParent, newName in
            let fs = GranaryFS.fs(req)
            fs.replyEntry(req) { () throws(FSError) in
                try fs.store.link(UInt64(ino), newParent: UInt64(newParent), newName: GranaryFS.name(newName))
            }
        }

        ops.open = { req, ino, fi in
            let fs = GranaryFS.fs(req)
            do {
                let a = try fs.store.getattr(UInt64(ino))
                if a.isDirectory { throw FSError.isDirectory }
                let writable = fi.map(GranaryFS.mayWrite) ?? true
                try fs.store.open(UInt64(ino), writable: writable)
                if let fi { GranaryFS.prepareOpenFile(fi) }
                // The opener is gone (killed meanwhile): no RELEASE will come.
                if fuse_reply_open(req, fi) != 0 { fs.store.release(UInt64(ino), writable: writable) }
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.create = { req, parent, name, mode, fi in
            let fs = GranaryFS.fs(req)
            do {
                let writable = fi.map(GranaryFS.mayWrite) ?? true
                let a = try fs.store.create(parent: UInt64(parent), name: GranaryFS.name(name), mode: mode, caller: GranaryFS.caller(req),
                                             writable: writable)
                var e = fs.entry(a)
                if let fi { GranaryFS.prepareOpenFile(fi) }
                // The creator is gone: neither RELEASE nor FORGET will come.
                if fuse_reply_create(req, &e, fi) != 0 {
                    fs.store.release(a.ino, writable: writable)
                    fs.store.forget(a.ino, 1)
                }
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.read = { req, ino, size, off, _ in
            let fs = GranaryFS.fs(req)
            let n = min(size, GranaryFS.bufferSize)
            do {
                // The reply goes out while the store holds the file's lock:
                // cache-file bytes are spliced, never copied through here.
                _ = try fs.store.read(UInt64(ino), offset: UInt64(max(0, off)), count: n) { pieces in
                    GranaryFS.replyData(req, pieces)
                }
                fs.store.accessed(UInt64(ino))
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.write = { req, ino, buf, size, off, fi in
            let fs = GranaryFS.fs(req)
            let append = fi.map { $0.pointee.fh & 1 != 0 } ?? false
            do {
                let r = try fs.store.write(UInt64(ino), offset: UInt64(max(0, off)),
                                           data: UnsafeRawBufferPointer(start: buf, count: size), append: append,
                                           dropPrivileges: granary_fuse_request_drops_privileges() != 0)
                // The kernel keeps the mode it cached: tell it setuid went.
                if r.modeChanged { fs.invalidateAttributes(UInt64(ino)) }
                fuse_reply_write(req, r.count)
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }

        ops.release = { req, ino, fi in
            GranaryFS.fs(req).store.release(UInt64(ino), writable: fi.map(GranaryFS.mayWrite) ?? true)
            fuse_reply_err(req, 0)
        }

        ops.fsync = { req, ino, _, _ in
            let fs = GranaryFS.fs(req)
            fs.replyError(req) { () throws(FSError) in try fs.store.fsync(UInt64(ino)) }
        }

        ops.fsyncdir = { req, ino, _, _ in
            let fs = GranaryFS.fs(req)
            fs.replyError(req) { () throws(FSError) in try fs.store.fsyncDirectory(UInt64(ino)) }
        }

        ops.opendir = { req, ino, fi in
            let fs = GranaryFS.fs(req)
            do {
                let h = try fs.openDirectory(UInt64(ino))
                fi?.pointee.fh = h
                fuse_reply_open(req, fi)
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.readdir = { req, ino, size, off, fi in
            GranaryFS.fs(req).readdir(req, UInt64(ino), size, off, fi?.pointee.fh ?? 0, plus: false)
        }

        ops.readdirplus = { req, ino, size, off, fi in
            GranaryFS.fs(req).readdir(req, UInt64(ino), size, off, fi?.pointee.fh ?? 0, plus: true)
        }

        ops.releasedir = { req, _, fi in
            GranaryFS.fs(req).closeDirectory(fi?.pointee.fh ?? 0)
            fuse_reply_err(req, 0)
        }

        ops.statfs = { req, _ in
            let s = GranaryFS.fs(req).store.statfs()
            var v = statvfs()
            v.f_bsize = UInt(s.blockSize)
            v.f_frsize = UInt(s.blockSize)
            v.f_blocks = UInt(s.blocks)
            v.f_bfree = UInt(s.free)
            v.f_bavail = UInt(s.available)
            v.f_files = UInt(s.files + 1_000_000)
            v.f_ffree = 1_000_000
            v.f_favail = 1_000_000
            v.f_namemax = 255
            fuse_reply_statfs(req, &v)
        }

        ops.setxattr = { req, ino, name, value, size, flags in
            let fs = GranaryFS.fs(req)
            let n = GranaryFS.name(name)
            guard GranaryFS.xattrAllowed(n) else { fuse_reply_err(req, EOPNOTSUPP); return }
            let v = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
            let dropSetgid = n == Array("system.posix_acl_access".utf8) && GranaryFS.outsideGroup(req, of: UInt64(ino))
            fs.replyError(req) { () throws(FSError) in
                try fs.store.setxattr(UInt64(ino), name: n, value: v, flags: flags, dropSetgid: dropSetgid)
            }
        }

        ops.getxattr = { req, ino, name, size in
            let fs = GranaryFS.fs(req)
            let n = GranaryFS.name(name)
            guard GranaryFS.xattrAllowed(n) else { fuse_reply_err(req, EOPNOTSUPP); return }
            do {
                let v = try fs.store.getxattr(UInt64(ino), name: n)
                GranaryFS.replyXattr(req, v, size)
            } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.listxattr = { req, ino, size in
            let fs = GranaryFS.fs(req)
            do { GranaryFS.replyXattr(req, try fs.store.listxattr(UInt64(ino)), size) } catch { fuse_reply_err(req, GranaryFS.errno(error)) }
        }

        ops.removexattr = { req, ino, name in
            let fs = GranaryFS.fs(req)
            let n = GranaryFS.name(name)
            guard GranaryFS.xattrAllowed(n) else { fuse_reply_err(req, EOPNOTSUPP); return }
            fs.replyError(req) { () throws(FSError) in try fs.store.removexattr(UInt64(ino), name: n) }
        }

        ops.access = { req, _, _ in fuse_reply_err(req, 0) }

        ops.fallocate = { req, ino, mode, offset, length, _ in
            let fs = GranaryFS.fs(req)
            guard offset >= 0, length > 0 else { fuse_reply_err(req, EINVAL); return }
            fs.replyError(req) { () throws(FSError) in
                try fs.store.fallocate(UInt64(ino), mode: mode, offset: UInt64(offset), length: UInt64(length))
            }
        }
        ops.copy_file_range = { req, inoIn, offIn, _, inoOut, offOut, _, len, _ in
            let fs = GranaryFS.fs(req)
            guard offIn >= 0, offOut >= 0 else { fuse_reply_err(req, EINVAL); return }
            do throws(FSError) {
                // nil: the kernel copies these bytes itself (EOPNOTSUPP
                // for one call falls back to its splice copy).
                // At most 1 GiB (whole chunks) per call: the reply's count
                // is 32 bits, and older kernels pass larger lengths.
                let length = min(UInt64(len), 1 << 30)
                guard let n = try fs.store.copyRange(from: UInt64(inoIn), at: UInt64(offIn), to: UInt64(inoOut), at: UInt64(offOut),
                                                     length: length) else {
                    fuse_reply_err(req, EOPNOTSUPP)
                    return
                }
                fuse_reply_write(req, Int(n))
            } catch {
                fuse_reply_err(req, GranaryFS.errno(error))
            }
        }
        ops.lseek = { req, ino, offset, whence, _ in
            let fs = GranaryFS.fs(req)
            // The kernel answers SEEK_SET/CUR/END itself; Glibc's module
            // leaves out SEEK_DATA (3) and SEEK_HOLE (4).
            let seekData: Int32 = 3, seekHole: Int32 = 4
            guard whence == seekData || whence == seekHole else { fuse_reply_err(req, EINVAL); return }
            guard offset >= 0 else { fuse_reply_err(req, ENXIO); return }  // as ext4 answers
            do throws(FSError) {
                let at = try fs.store.seek(UInt64(ino), offset: UInt64(offset), data: whence == seekData)
                fuse_reply_lseek(req, off_t(at))
            } catch {
                fuse_reply_err(req, GranaryFS.errno(error))
            }
        }
        return ops
    }

    /// Whether a handle was opened for writing (a shared mmap may write
    /// through it too).
    static func mayWrite(_ fi: UnsafeMutablePointer<fuse_file_info>) -> Bool {
        fi.pointee.flags & O_ACCMODE != O_RDONLY
    }

    /// How the kernel treats an open file (open and create).
    static func prepareOpenFile(_ fi: UnsafeMutablePointer<fuse_file_info>) {
        fi.pointee.fh = (fi.pointee.flags & O_APPEND) != 0 ? 1 : 0
        fi.pointee.keep_cache = 1
        fi.pointee.noflush = 1  // flush does nothing here: spare the kernel a request per close
        // Write-only: nothing to cache, so skip the kernel's copy into its
        // page cache (and its security.capability lookup: the write's
        // KILL_SUIDGID flag does that job). The kernel drops the cached
        // pages a direct write overlaps, so other descriptors stay coherent.
        if fi.pointee.flags & O_ACCMODE == O_WRONLY { fi.pointee.direct_io = 1 }
    }

    /// Zeros for holes, shared by every reply (never written).
    nonisolated(unsafe) static let zeros = UnsafeMutableRawPointer(calloc(1, bufferSize)!)
    static let bufsOffset = MemoryLayout<fuse_bufvec>.offset(of: \fuse_bufvec.buf)!

    /// Replies to a read with cache-file pieces and runs of zeros in one
    /// buffer vector. With FUSE_CAP_SPLICE_WRITE libfuse splices file pieces
    /// from the cache file's page cache into /dev/fuse (one copy fewer than
    /// pread plus writev); without it, it copies them itself.
    static func replyData(_ req: fuse_req_t?, _ pieces: [ReadPiece]) {
        if pieces.isEmpty { fuse_reply_buf(req, nil, 0); return }
        let bytes = MemoryLayout<fuse_bufvec>.size + max(0, pieces.count - 1) * MemoryLayout<fuse_buf>.stride
        // On the stack: this runs for every read.
        withUnsafeTemporaryAllocation(byteCount: bytes, alignment: MemoryLayout<fuse_bufvec>.alignment) { buffer in
            let raw = buffer.baseAddress!
            memset(raw, 0, bytes)
            let vec = raw.bindMemory(to: fuse_bufvec.self, capacity: 1)
            vec.pointee.count = pieces.count
            let bufs = (raw + bufsOffset).bindMemory(to: fuse_buf.self, capacity: pieces.count)
            for (i, piece) in pieces.enumerated() {
                switch piece {
                case let .file(fd, offset, count):
                    bufs[i].size = count
                    bufs[i].flags = fuse_buf_flags(rawValue: FUSE_BUF_IS_FD.rawValue | FUSE_BUF_FD_SEEK.rawValue)
                    bufs[i].fd = fd
                    bufs[i].pos = off_t(offset)
                case let .zeros(count):
                    bufs[i].size = count
                    bufs[i].mem = zeros
                }
            }
            // On failure libfuse answers the request (or drops it) itself.
            _ = fuse_reply_data(req, vec, FUSE_BUF_SPLICE_MOVE)
        }
    }

    static func replyXattr(_ req: fuse_req_t?, _ v: [UInt8], _ size: Int) {
        if size == 0 { fuse_reply_xattr(req, v.count); return }
        if size < v.count { fuse_reply_err(req, ERANGE); return }
        v.withUnsafeBytes { p in _ = fuse_reply_buf(req, p.baseAddress?.assumingMemoryBound(to: CChar.self), p.count) }
    }

    // MARK: directories

    func openDirectory(_ ino: UInt64) throws(FSError) -> UInt64 {
        let listing = try store.listDirectory(ino)
        let h = DirectoryHandle()
        h.parent = listing.parent
        h.entries = listing.entries
        handleLock.lock(); defer { handleLock.unlock() }
        let id = nextHandle
        nextHandle += 1
        dirHandles[id] = h
        return id
    }

    func closeDirectory(_ fh: UInt64) {
        handleLock.lock(); dirHandles[fh] = nil; handleLock.unlock()
    }

    /// Offsets: 1 is ".", 2 is "..", then each entry's cookie, which never
    /// changes while the entry exists, so a listing resumes correctly even
    /// when the directory changes between calls.
    func readdir(_ req: fuse_req_t?, _ ino: UInt64, _ size: Int, _ off: off_t, _ fh: UInt64, plus: Bool) {
        handleLock.lock()
        let h = dirHandles[fh]
        handleLock.unlock()
        guard let h else { fuse_reply_err(req, EBADF); return }
        if off == 0, let fresh = try? store.listDirectory(ino) {
            h.parent = fresh.parent
            h.entries = fresh.entries
            store.accessed(ino)
        }
        let buf = takeBuffer()
        defer { giveBuffer(buf) }
        let cap = min(size, GranaryFS.bufferSize)
        var used = 0
        let p = buf.assumingMemoryBound(to: CChar.self)

        func add(_ name: FileName, _ attr: InodeAttributes?, ino: UInt64, mode: UInt32, next: Int64, counted: Bool) -> Bool {
            var nameZ = name
            nameZ.append(0)
            return nameZ.withUnsafeBufferPointer { np in
                np.withMemoryRebound(to: CChar.self) { cname in
                    let need: Int
                    if plus {
                        var e = fuse_entry_param()
                        if let attr, counted { e = entry(attr) } else {
                            e.attr.st_ino = UInt(ino)
                            e.attr.st_mode = mode
                        }
                        need = fuse_add_direntry_plus(req, p + used, cap - used, cname.baseAddress, &e, off_t(next))
                    } else {
                        var st = Glibc.stat()
                        st.st_ino = UInt(ino)
                        st.st_mode = mode
                        need = fuse_add_direntry(req, p + used, cap - used, cname.baseAddress, &st, off_t(next))
                    }
                    if used + need > cap { return false }
                    used += need
                    return true
                }
            }
        }

        var position = Int64(off)
        if position < 1 {
            if !add([0x2e], nil, ino: ino, mode: UInt32(0o040000), next: 1, counted: false) { return finish() }
            position = 1
        }
        if position < 2 {
            if !add([0x2e, 0x2e], nil, ino: h.parent, mode: UInt32(0o040000), next: 2, counted: false) { return finish() }
            position = 2
        }
        // First entry with a cookie beyond the offset (entries are sorted).
        var lo = 0, hi = h.entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if h.entries[mid].cookie <= position { lo = mid + 1 } else { hi = mid }
        }
        for e in h.entries[lo...] {
            if plus {
                // Only entries still present are returned with attributes;
                // each one returned counts as a kernel lookup.
                guard let attr = try? store.getattr(e.ino) else { continue }
                if !add(e.name, attr, ino: e.ino, mode: attr.mode, next: e.cookie, counted: true) { break }
                store.addLookups(e.ino)
            } else {
                if !add(e.name, nil, ino: e.ino, mode: e.mode, next: e.cookie, counted: false) { break }
            }
        }
        return finish()

        func finish() {
            fuse_reply_buf(req, p, used)
        }
    }
}
