import CGranaryShim
import Foundation

/// One cache file whose fixed slots hold the dirty bytes of small chunks
/// (most files people copy are small), so that writing a new small file
/// costs no file of its own: no inode to allocate, no open and close. On a
/// copy of many small files, creating a cache file per file was most of
/// the mount's work (ext4 without a journal scans recently freed inodes at
/// every allocation). A chunk that outgrows its slot moves to a file of its
/// own; see `GranaryStore.dirtyChunk`.
///
/// A free slot reads as zeros: a slot is zeroed (hole punched) before it is
/// reused, and free slots are zeroed again at start, since a crash may
/// have left bytes in slots no row names. Thread-safe.
final class ChunkSlab: @unchecked Sendable {
    static let slotSize = 128 << 10
    /// At most 2 GiB of (sparse) slab; beyond it chunks get their own files.
    static let maxSlots = 16_384
    static let fileName = "slab"

    let fd: Int32
    private let lock = NSLock()
    private var free: [Int] = []
    private var used = Set<Int>()
    private var retired: [Int] = []
    /// Slots readers hold open (clean chunks kept in the slab), with counts.
    private var pins: [Int: Int] = [:]
    /// Slots below this index have been handed out; those not in `used`
    /// are in `free` or `retired`.
    private var highWater = 0
    /// Slots the file's size covers.
    private var sizeInSlots = 0
    /// Set at shutdown, before the clean slots are listed for the next
    /// start: a slot retired after that keeps its bytes (see `freezeReuse`).
    private var reuseFrozen = false

    init(directory: String) throws {
        let path = directory + "/" + Self.fileName
        fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StoreOpenError("cannot open \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    func offset(of slot: Int) -> Int { slot * Self.slotSize }

    /// A free slot, or nil when the slab is full.
    func allocate() -> Int? {
        lock.lock(); defer { lock.unlock() }
        let slot: Int
        if let s = free.popLast() {
            slot = s
        } else {
            guard highWater < Self.maxSlots else { return nil }
            // The file covers every slot (sparse): bytes past its end could
            // not be spliced into a read's reply. It grows 256 slots at a time.
            if highWater >= sizeInSlots {
                let grown = min(Self.maxSlots, sizeInSlots + 256)
                guard ftruncate(fd, off_t(grown * Self.slotSize)) == 0 else { return nil }
                sizeInSlots = grown
            }
            slot = highWater
            highWater += 1
        }
        used.insert(slot)
        return slot
    }

    /// A slot whose chunk left it (uploaded, moved, deleted). It is reused
    /// only after `reuse`, which the store calls once meta.db durably no
    /// longer names it: until then a crash may bring back a row naming it,
    /// whose bytes must still be there.
    func retire(_ slot: Int) {
        lock.lock()
        if used.remove(slot) != nil { retired.append(slot) }
        lock.unlock()
    }

    /// The slots retired so far, for `reuse` once meta.db is durable.
    func takeRetired() -> [Int] {
        lock.lock(); defer { lock.unlock() }
        let r = retired
        retired.removeAll()
        return r
    }

    /// Zeroes slots taken from `takeRetired` and makes them free; one a
    /// reader still holds stays retired until a later call.
    func reuse(_ slots: [Int]) {
        lock.lock()
        if reuseFrozen { retired += slots; lock.unlock(); return }
        let ready = slots.filter { pins[$0] == nil }
        retired += slots.filter { pins[$0] != nil }
        lock.unlock()
        for slot in ready { zero(slot, from: 0) }
        lock.lock()
        free += ready
        lock.unlock()
    }

    /// No slot is zeroed or handed out again from now on. At shutdown the
    /// clean chunks kept in slots are listed for the next start; an upload
    /// pass that outlives the shutdown's wait may still evict one of them,
    /// and zeroing its slot would make the list serve zeros for it.
    func freezeReuse() {
        lock.lock(); reuseFrozen = true; lock.unlock()
    }

    /// A reader holds `slot` open (see `CachedChunk`).
    func pin(_ slot: Int) {
        lock.lock(); pins[slot, default: 0] += 1; lock.unlock()
    }

    func unpin(_ slot: Int) {
        lock.lock()
        if let n = pins[slot] { pins[slot] = n > 1 ? n - 1 : nil }
        lock.unlock()
    }

    /// Zeroes a slot from `start` on (a truncate inside it, or before reuse).
    func zero(_ slot: Int, from start: Int) {
        guard start < Self.slotSize else { return }
        zero(at: offset(of: slot) + start, length: Self.slotSize - start)
    }

    private func zero(at: Int, length: Int) {
        if granary_punch_hole(fd, Int64(at), Int64(length)) == 0 { return }
        // No hole punching on this file system: write zeros.
        let block = min(length, 1 << 20)
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: block, alignment: 4096)
        defer { zeros.deallocate() }
        memset(zeros, 0, block)
        var done = 0
        while done < length {
            let n = pwrite(fd, zeros, min(block, length - done), off_t(at + done))
            if n <= 0 { return }
            done += n
        }
    }

    /// At start: marks the slots meta.db names as used and zeroes the rest.
    func recover(used slots: Set<Int>) {
        lock.lock()
        used = slots
        var st = stat()
        let fileSlots = fstat(fd, &st) == 0 ? (Int(st.st_size) + Self.slotSize - 1) / Self.slotSize : 0
        highWater = min(Self.maxSlots, max(fileSlots, (slots.max() ?? -1) + 1))
        free = (0..<highWater).filter { !slots.contains($0) }.reversed()
        _ = ftruncate(fd, off_t(highWater * Self.slotSize))
        sizeInSlots = highWater
        lock.unlock()
        // Runs of free slots, one punch each.
        var slot = 0
        while slot < highWater {
            if slots.contains(slot) { slot += 1; continue }
            var end = slot
            while end < highWater && !slots.contains(end) { end += 1 }
            zero(at: offset(of: slot), length: (end - slot) * Self.slotSize)
            slot = end
        }
    }
}
