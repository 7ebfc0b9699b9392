import Foundation
import GranaryCore
import GranaryDHT

/// The renter's signed pointer to its newest metadata snapshots, a DHT
/// record owned by `RenterKeys.metadataSigningIdentity` (a key derived from
/// the master key alone, independent of proof of work) and stored at
/// BLAKE2b(BLAKE2b(public key) || `recordKey`). A higher record sequence
/// replaces a lower one. It lists the newest few snapshots, newest first,
/// so a restore that finds the newest unreadable falls back to the next.
/// Each snapshot's sealed manifest is published next to it, cut into
/// records of its own (a record holds at most 1,024 bytes).
public struct MetadataPointer: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        /// The snapshot's sequence (milliseconds since the epoch when taken).
        public var sequence: UInt64
        public var created: Date
        /// How many manifest records to fetch, and the BLAKE2b of their joined bytes.
        public var parts: Int
        public var digest: Hash256
    }

    public var entries: [Entry]

    public static let recordKey = SignedRecord.keyOnlyPrefix + Array("granary/metadata-pointer".utf8)
    /// Bytes of sealed manifest per record (below the 1,024-byte value limit).
    static let partBytes = 960

    public static func manifestKey(sequence: UInt64, part: Int) -> [UInt8] {
        SignedRecord.keyOnlyPrefix + Array("granary/metadata-manifest/\(sequence)/\(part)".utf8)
    }

    private static let magic = Array("GRNYPTR1".utf8)

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u8(entries.count)
        for e in entries {
            w.u64(e.sequence)
            w.u64(UInt64(max(0, e.created.timeIntervalSince1970 * 1000)))
            w.u16(e.parts)
            w.hash(e.digest)
        }
        return w.bytes
    }

    init(entries: [Entry]) { self.entries = entries }

    init(decoding bytes: [UInt8]) throws(ByteCodingError) {
        var r = ByteReader(bytes)
        try r.expect(Self.magic, what: "metadata pointer")
        var entries: [Entry] = []
        for _ in 0..<(try r.u8()) {
            entries.append(Entry(sequence: try r.u64(), created: Date(timeIntervalSince1970: Double(try r.u64()) / 1000),
                                 parts: try r.u16(), digest: try r.hash()))
        }
        guard r.isAtEnd else { throw ByteCodingError("trailing bytes after the pointer") }
        self.entries = entries.sorted { $0.sequence > $1.sequence }
    }

    /// Reads a pointer from a DHT record, refusing one not signed by this
    /// renter's metadata key (whatever the DHT node that served it said).
    public static func open(_ record: SignedRecord, keys: RenterKeys) throws(MetadataRestoreError) -> MetadataPointer {
        let expected = keys.metadataSigningIdentity.publicKey
        guard record.owner == expected else {
            throw .pointerRefused("the pointer record is signed by \(record.ownerID.short), not by this key's metadata key \(expected.id.short)")
        }
        guard record.key == recordKey else { throw .pointerRefused("the record is not a metadata pointer") }
        do { return try MetadataPointer(decoding: record.value) } catch { throw .pointerRefused("\(error)") }
    }
}

/// Why a restore could not find or use a snapshot, with what to do.
public enum MetadataRestoreError: Error, CustomStringConvertible {
    case noPointer(String)
    case pointerRefused(String)
    case snapshotRefused(sequence: UInt64, String)
    case noUsableSnapshot([String])

    public var description: String {
        switch self {
        case let .noPointer(why): return "no metadata pointer found for this key: \(why)"
        case let .pointerRefused(why): return "metadata pointer refused: \(why)"
        case let .snapshotRefused(seq, why): return "snapshot \(seq) refused: \(why)"
        case let .noUsableSnapshot(why):
            return "none of the snapshots the pointer lists could be restored: \(why.joined(separator: "; "))"
        }
    }
}
