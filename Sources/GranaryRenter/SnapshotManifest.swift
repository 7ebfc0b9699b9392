import Foundation
import GranaryCore

/// Where one metadata snapshot lives: its segments and, for each, the
/// pieces and the farmers holding them. It carries what network.db would
/// say about these segments, because the snapshot of network.db cannot
/// describe the segments it is being stored in. Sealed with the metadata
/// key and published in the DHT next to the pointer.
public struct SnapshotManifest: Sendable, Equatable {
    public struct Piece: Sendable, Equatable {
        public var index: Int
        public var pieceID: Hash256
        public var root: Hash256
        public var contract: Hash256
        /// Index into `farmers`.
        public var farmer: Int
    }

    public struct Segment: Sendable, Equatable {
        public var id: SegmentID
        public var length: Int
        public var scheme: RedundancyScheme
        public var pieces: [Piece]
    }

    public var sequence: UInt64
    public var created: Date
    /// The nonce the snapshot's archive was sealed with.
    public var nonce: [UInt8]
    /// The sealed archive, cut in order into these segments.
    public var segments: [Segment]
    public var farmers: [FarmerContact]

    public var sealedLength: Int { segments.reduce(0) { $0 + $1.length } }

    private static let magic = Array("GRNYMAN1".utf8)

    func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u64(sequence)
        w.u64(UInt64(max(0, created.timeIntervalSince1970 * 1000)))
        w.short(nonce)
        w.u16(farmers.count)
        for f in farmers {
            w.short(f.publicKey)
            w.short(Array(f.address.utf8))
        }
        w.u16(segments.count)
        for s in segments {
            w.hash(s.id)
            w.u64(UInt64(s.length))
            for v in [s.scheme.k, s.scheme.r, s.scheme.s, s.scheme.n] { w.u8(v) }
            w.u16(s.pieces.count)
            for p in s.pieces {
                w.u8(p.index)
                w.hash(p.pieceID)
                w.hash(p.root)
                w.hash(p.contract)
                w.u16(p.farmer)
            }
        }
        return w.bytes
    }

    init(decoding bytes: [UInt8]) throws(ByteCodingError) {
        var r = ByteReader(bytes)
        try r.expect(Self.magic, what: "snapshot manifest")
        sequence = try r.u64()
        created = Date(timeIntervalSince1970: Double(try r.u64()) / 1000)
        nonce = try r.short()
        var farmers: [FarmerContact] = []
        for _ in 0..<(try r.u16()) {
            let key = try r.short()
            guard let pk = NodePublicKey(bytes: key) else { throw ByteCodingError("a farmer key is not 32 bytes") }
            farmers.append(FarmerContact(id: pk.id, publicKey: key, address: String(decoding: try r.short(), as: UTF8.self)))
        }
        var segments: [Segment] = []
        for _ in 0..<(try r.u16()) {
            let id = try r.hash()
            let length = try r.u64()
            let k = try r.u8(), rr = try r.u8(), s = try r.u8(), n = try r.u8()
            let scheme: RedundancyScheme
            do { scheme = try RedundancyScheme(k: k, r: rr, s: s, n: n) } catch { throw ByteCodingError("bad scheme: \(error)") }
            guard length <= UInt64(64 << 20) else { throw ByteCodingError("segment of \(length) bytes is too large") }
            var pieces: [Piece] = []
            for _ in 0..<(try r.u16()) {
                let p = Piece(index: try r.u8(), pieceID: try r.hash(), root: try r.hash(), contract: try r.hash(), farmer: try r.u16())
                guard p.index < n, p.farmer < farmers.count else { throw ByteCodingError("a piece names an unknown index or farmer") }
                pieces.append(p)
            }
            segments.append(Segment(id: id, length: Int(length), scheme: scheme, pieces: pieces))
        }
        guard r.isAtEnd else { throw ByteCodingError("trailing bytes after the manifest") }
        self.farmers = farmers
        self.segments = segments
    }

    init(sequence: UInt64, created: Date, nonce: [UInt8], segments: [Segment], farmers: [FarmerContact]) {
        self.sequence = sequence; self.created = created; self.nonce = nonce; self.segments = segments; self.farmers = farmers
    }

    /// nonce || XChaCha20-Poly1305(metadata key, manifest), the sequence bound in.
    func sealed(key: [UInt8]) throws -> [UInt8] {
        let nonce = SecureRandom.bytes(SnapshotArchive.algorithm.nonceByteCount)
        return nonce + (try AEAD.encrypt(SnapshotArchive.algorithm, key: key, nonce: nonce,
                                          associatedData: SnapshotArchive.associatedData("granary-manifest-v1", sequence: sequence),
                                          plaintext: encoded()))
    }

    static func open(_ sealed: [UInt8], key: [UInt8], sequence: UInt64) throws -> SnapshotManifest {
        let n = SnapshotArchive.algorithm.nonceByteCount
        guard sealed.count > n else { throw ByteCodingError("sealed manifest of \(sealed.count) bytes is truncated") }
        let plain = try AEAD.decrypt(SnapshotArchive.algorithm, key: key, nonce: Array(sealed.prefix(n)),
                                     associatedData: SnapshotArchive.associatedData("granary-manifest-v1", sequence: sequence),
                                     sealed: Array(sealed.dropFirst(n)))
        let manifest = try SnapshotManifest(decoding: plain)
        guard manifest.sequence == sequence else { throw ByteCodingError("manifest says sequence \(manifest.sequence), expected \(sequence)") }
        return manifest
    }
}
