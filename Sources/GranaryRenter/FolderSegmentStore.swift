import Foundation
import GranaryCore

/// A `SegmentStore` over a local folder: one file per segment, written to a
/// temporary name, fsynced, renamed, and the folder fsynced before `put`
/// returns. For tests and development (`granary mount --local-segments`);
/// what ships stores segments on farmers.
public struct FolderSegmentStore: SegmentStore {
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        do { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) } catch {
            throw SegmentStoreError.io("cannot create segment folder \(directory): \(error.localizedDescription)")
        }
    }

    private func path(_ id: SegmentID) -> String { directory + "/" + id.hex }

    public func put(_ id: SegmentID, bytes: [UInt8]) async throws {
        if bytes.count > Self.maxSegmentSize { throw SegmentStoreError.tooLarge(size: bytes.count, limit: Self.maxSegmentSize) }
        let final = path(id)
        let tmp = final + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SegmentStoreError.io("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        var done = 0
        let ok: Bool = bytes.withUnsafeBytes { p in
            while done < p.count {
                let n = write(fd, p.baseAddress! + done, p.count - done)
                if n < 0 { if errno == EINTR { continue }; return false }
                done += n
            }
            guard fsync(fd) == 0 else { return false }
            // Out of the page cache once durable, as farmers keep pieces
            // (they write them with O_DIRECT).
            _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
            return true
        }
        let err = errno
        close(fd)
        guard ok else { unlink(tmp); throw SegmentStoreError.io("cannot write \(tmp): \(String(cString: strerror(err)))") }
        guard rename(tmp, final) == 0 else { throw SegmentStoreError.io("cannot rename \(tmp): \(String(cString: strerror(errno)))") }
        FileSync.syncDirectory(directory)
    }

    public func read(_ id: SegmentID, offset: Int, length: Int) async throws -> [UInt8] {
        let fd = open(path(id), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw SegmentStoreError.notFound(id) }
            throw SegmentStoreError.io("cannot open segment \(id.short): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var out = [UInt8](repeating: 0, count: length)
        var done = 0
        let err: Int32 = out.withUnsafeMutableBytes { p in
            while done < length {
                let n = pread(fd, p.baseAddress! + done, length - done, off_t(offset + done))
                if n < 0 { if errno == EINTR { continue }; return errno }
                if n == 0 { return -1 }
                done += n
            }
            return 0
        }
        if err == -1 { throw SegmentStoreError.corrupt(id, "shorter than \(offset + length) bytes") }
        if err != 0 { throw SegmentStoreError.io("cannot read segment \(id.short): \(String(cString: strerror(err)))") }
        return out
    }

    public func delete(_ id: SegmentID) async throws {
        if unlink(path(id)) != 0 && errno != ENOENT {
            throw SegmentStoreError.io("cannot delete segment \(id.short): \(String(cString: strerror(errno)))")
        }
    }

    public func list() async throws -> [SegmentID] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { Hash256(hex: $0) }
    }
}
