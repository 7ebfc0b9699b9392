/// A POSIX access control list in the kernel's xattr form
/// (system.posix_acl_access / system.posix_acl_default): a little-endian
/// u32 version 2, then entries of u16 tag, u16 permission bits, u32 id.
///
/// With FUSE_CAP_POSIX_ACL the kernel enforces ACLs itself; the file system
/// keeps them and the mode in step (chmod, setting an access ACL) and makes
/// new inodes inherit a directory's default ACL. The rules are the kernel's
/// own (posix_acl_chmod, posix_acl_create, posix_acl_equiv_mode).
struct PosixACL: Equatable {
    static let accessName: FileName = Array("system.posix_acl_access".utf8)
    static let defaultName: FileName = Array("system.posix_acl_default".utf8)
    static let version: UInt32 = 2

    enum Tag: UInt16 {
        case userObj = 0x01, user = 0x02, groupObj = 0x04, group = 0x08, mask = 0x10, other = 0x20
    }

    struct Entry: Equatable {
        var tag: Tag
        var perm: UInt16
        var id: UInt32
    }

    var entries: [Entry]

    /// Parses the xattr form; nil when it is not a well-formed version-2 ACL
    /// with exactly one owner, owning-group and other entry.
    init?(xattr v: [UInt8]) {
        guard v.count >= 4, (v.count - 4) % 8 == 0 else { return nil }
        func u16(_ i: Int) -> UInt16 { UInt16(v[i]) | UInt16(v[i + 1]) << 8 }
        func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) | UInt32(u16(i + 2)) << 16 }
        guard u32(0) == Self.version else { return nil }
        var out: [Entry] = []
        var i = 4
        while i < v.count {
            guard let tag = Tag(rawValue: u16(i)) else { return nil }
            out.append(Entry(tag: tag, perm: u16(i + 2) & 7, id: u32(i + 4)))
            i += 8
        }
        for t in [Tag.userObj, .groupObj, .other] where out.filter({ $0.tag == t }).count != 1 { return nil }
        entries = out
    }

    var xattr: [UInt8] {
        var out: [UInt8] = []
        func put16(_ x: UInt16) { out.append(UInt8(x & 0xff)); out.append(UInt8(x >> 8)) }
        func put32(_ x: UInt32) { put16(UInt16(x & 0xffff)); put16(UInt16(x >> 16)) }
        put32(Self.version)
        for e in entries { put16(e.tag.rawValue); put16(e.perm); put32(e.id) }
        return out
    }

    private func index(_ tag: Tag) -> Int? { entries.firstIndex { $0.tag == tag } }

    /// True when the ACL says no more than the mode bits do (owner, group,
    /// other only): such an ACL is not stored, the mode alone carries it.
    var isEquivalentToMode: Bool { entries.allSatisfy { [.userObj, .groupObj, .other].contains($0.tag) } }

    /// The permission bits (0o777) this ACL implies: the group class is the
    /// mask entry when there is one, else the owning group.
    var modeBits: UInt32 {
        var m: UInt32 = 0
        if let i = index(.userObj) { m |= UInt32(entries[i].perm) << 6 }
        if let i = index(.mask) ?? index(.groupObj) { m |= UInt32(entries[i].perm) << 3 }
        if let i = index(.other) { m |= UInt32(entries[i].perm) }
        return m
    }

    /// chmod: the owner, group-class and other entries follow the new mode.
    mutating func applyChmod(_ mode: UInt32) {
        for i in entries.indices {
            switch entries[i].tag {
            case .userObj: entries[i].perm = UInt16((mode >> 6) & 7)
            case .other: entries[i].perm = UInt16(mode & 7)
            case .mask: entries[i].perm = UInt16((mode >> 3) & 7)
            case .groupObj where index(.mask) == nil: entries[i].perm = UInt16((mode >> 3) & 7)
            default: break
            }
        }
    }

    /// A new inode under a directory with this default ACL: the ACL's
    /// classes and the requested mode are intersected, both ways. Returns the
    /// mode to use; `self` becomes the new inode's access ACL.
    mutating func applyCreate(mode requested: UInt32) -> UInt32 {
        var mode = requested
        for i in entries.indices {
            switch entries[i].tag {
            case .userObj:
                entries[i].perm &= UInt16((mode >> 6) & 7)
                mode &= (UInt32(entries[i].perm) << 6) | ~UInt32(0o700)
            case .other:
                entries[i].perm &= UInt16(mode & 7)
                mode &= UInt32(entries[i].perm) | ~UInt32(0o7)
            default: break
            }
        }
        if let i = index(.mask) ?? index(.groupObj) {
            entries[i].perm &= UInt16((mode >> 3) & 7)
            mode &= (UInt32(entries[i].perm) << 3) | ~UInt32(0o70)
        }
        return mode
    }
}
