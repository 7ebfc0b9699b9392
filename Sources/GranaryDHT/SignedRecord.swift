import Foundation
import GranaryCore
import GranaryWire

/// A record in the DHT, verified: signed by its owner, with a sequence
/// number (higher replaces lower) and an expiry. Stored at the k nodes
/// closest to `storageKey` = BLAKE2b-256(owner ID || key).
public struct SignedRecord: Sendable, Equatable {
    /// Largest application key and value a node accepts.
    public static let maxKeyBytes = 256
    public static let maxValueBytes = 1024
    /// Longest lifetime a node accepts for a node's record (owners
    /// republish before expiry).
    public static let maxLifetime: TimeInterval = 7 * 86_400
    /// Longest lifetime of a `key-only/` record (a renter's metadata
    /// pointer and manifests): 366 days, the longest contract a farmer signs
    /// by default (`granary farm --max-duration`). The pointer must outlive
    /// the renter's absence (a dead laptop is noticed after weeks, not
    /// hours) for as long as any contract could still hold the data it
    /// points to; after that there is nothing left to restore. Holders keep
    /// it on disk and republish it, so it survives their restarts too.
    public static let keyOnlyMaxLifetime: TimeInterval = 366 * 86_400
    /// Largest signed envelope a node stores (key and value at their limits
    /// plus the record's fields, the owner's key and the signature).
    public static let maxEnvelopeBytes = 2_048

    /// The longest lifetime accepted for a record under `key`.
    public static func maxLifetime(forKey key: [UInt8]) -> TimeInterval {
        ownerNeedsProofOfWork(key: key) ? maxLifetime : keyOnlyMaxLifetime
    }

    public let owner: NodePublicKey
    public let key: [UInt8]
    public let value: [UInt8]
    public let sequence: UInt64
    public let expiresAt: Date
    /// The envelope exactly as signed, forwarded unchanged on STORE and FIND_VALUE.
    public let envelope: Granary_SignedEnvelope

    /// Keys under which the owner is a bare Ed25519 key rather than a node:
    /// no proof of work is asked of it. A renter's metadata pointer lives
    /// here, signed by a key derived from its master key alone, so a restore
    /// finds it whatever difficulty the network requires. Proof of work on a
    /// record's owner bounds little anyway: one owner may store any number
    /// of keys, and the per-node record limit is what bounds storage.
    public static let keyOnlyPrefix = Array("key-only/".utf8)

    public static func ownerNeedsProofOfWork(key: [UInt8]) -> Bool { !key.starts(with: keyOnlyPrefix) }

    public var ownerID: Hash256 { owner.id }
    public var storageKey: Hash256 { Self.storageKey(owner: owner.id, key: key) }

    public static func storageKey(owner: Hash256, key: [UInt8]) -> Hash256 {
        Blake2b.hash256(owner.bytes + key)
    }

    /// Signs a new record with the owner's identity.
    public init(owner identity: NodeIdentity, key: [UInt8], value: [UInt8], sequence: UInt64, expiresAt: Date) throws(DHTError) {
        guard key.count <= Self.maxKeyBytes else { throw .recordRejected("key of \(key.count) bytes exceeds \(Self.maxKeyBytes)") }
        guard value.count <= Self.maxValueBytes else { throw .recordRejected("value of \(value.count) bytes exceeds \(Self.maxValueBytes)") }
        var r = Granary_DhtRecord()
        r.ownerKey = Data(identity.publicKey.bytes)
        r.key = Data(key)
        r.value = Data(value)
        r.sequence = sequence
        r.expiresAtMs = UInt64(max(0, expiresAt.timeIntervalSince1970 * 1000))
        let envelope: Granary_SignedEnvelope
        do { envelope = try Granary_SignedEnvelope(kind: .record, message: r, signer: identity) } catch {
            throw .malformed("cannot encode record: \(error)")
        }
        self.owner = identity.publicKey
        self.key = key
        self.value = value
        self.sequence = sequence
        self.expiresAt = Date(timeIntervalSince1970: Double(r.expiresAtMs) / 1000)
        self.envelope = envelope
    }

    /// Verifies a record as received: the signature over its bytes, the
    /// owner's proof of work, that the signer is the owner the record names,
    /// the size bounds, and that it has not expired (and does not claim to
    /// live longer than `maxLifetime(forKey:)`).
    public init(verifying envelope: Granary_SignedEnvelope, difficulty: Int, now: Date = Date()) throws(DHTError) {
        let signer: NodePublicKey, r: Granary_DhtRecord
        do { (signer, r) = try envelope.open(Granary_DhtRecord.self, kind: .record, difficulty: 0) } catch {
            throw .envelope(error)
        }
        if Self.ownerNeedsProofOfWork(key: [UInt8](r.key)) {
            do { try signer.validate(difficulty: difficulty) } catch { throw .envelope(.identity(error)) }
        }
        guard r.ownerKey == Data(signer.bytes) else {
            throw .recordRejected("record names owner \(Blake2b.hash256([UInt8](r.ownerKey)).short) but is signed by \(signer.id.short)")
        }
        guard r.key.count <= Self.maxKeyBytes, r.value.count <= Self.maxValueBytes else {
            throw .recordRejected("key or value too large")
        }
        let expires = Date(timeIntervalSince1970: Double(r.expiresAtMs) / 1000)
        guard expires > now else { throw .recordRejected("expired") }
        let lifetime = Self.maxLifetime(forKey: [UInt8](r.key))
        guard expires.timeIntervalSince(now) <= lifetime + 60 else {
            throw .recordRejected("expiry more than \(Int(lifetime / 86_400)) days ahead")
        }
        self.owner = signer
        self.key = [UInt8](r.key)
        self.value = [UInt8](r.value)
        self.sequence = r.sequence
        self.expiresAt = expires
        self.envelope = envelope
    }

    public static func == (a: SignedRecord, b: SignedRecord) -> Bool { a.envelope == b.envelope }
}
