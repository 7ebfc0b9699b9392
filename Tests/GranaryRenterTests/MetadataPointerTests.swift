import Foundation
import GranaryCore
import GranaryDHT
import GranaryRenter
import GranaryWire
import Testing

/// The metadata pointer's trust rules, without a network.
struct MetadataPointerTests {
    static let keys = RenterKeys(master: [UInt8](repeating: 7, count: 32))

    @Test func signingKeyFollowsFromTheMasterKeyAloneWithoutProofOfWork() {
        let a = Self.keys.metadataSigningIdentity, b = RenterKeys(master: Self.keys.master).metadataSigningIdentity
        #expect(a.publicKey == b.publicKey)
        #expect(a.publicKey != RenterKeys.generate().metadataSigningIdentity.publicKey)
        // Not the node identity, which depends on the network's difficulty.
        #expect(a.publicKey != Self.keys.nodeIdentity(difficulty: 0).publicKey)
    }

    @Test func pointerSignedByAnotherKeyIsRefused() throws {
        let impostor = NodeIdentity(seed: [UInt8](repeating: 9, count: 32))
        let forged = try SignedRecord(owner: impostor, key: MetadataPointer.recordKey, value: Array("GRNYPTR1".utf8) + [0],
                                      sequence: UInt64.max - 1, expiresAt: Date().addingTimeInterval(600))
        #expect(throws: MetadataRestoreError.self) { try MetadataPointer.open(forged, keys: Self.keys) }
        do { _ = try MetadataPointer.open(forged, keys: Self.keys) } catch {
            #expect("\(error)".contains("signed by \(impostor.id.short)"))
        }
        // A record naming this renter's metadata key but signed by another
        // is refused by every DHT node before anyone can serve it.
        var body = Granary_DhtRecord()
        body.ownerKey = Data(Self.keys.metadataSigningIdentity.publicKey.bytes)
        body.key = Data(MetadataPointer.recordKey)
        body.value = Data([1])
        body.sequence = .max
        body.expiresAtMs = UInt64(Date().addingTimeInterval(600).timeIntervalSince1970 * 1000)
        let envelope = try Granary_SignedEnvelope(kind: .record, message: body, signer: impostor)
        #expect(throws: DHTError.self) { try SignedRecord(verifying: envelope, difficulty: 0) }
        // The right key over a value that is not a pointer is refused too.
        let garbage = try SignedRecord(owner: Self.keys.metadataSigningIdentity, key: MetadataPointer.recordKey, value: [1, 2, 3],
                                       sequence: 1, expiresAt: Date().addingTimeInterval(600))
        #expect(throws: MetadataRestoreError.self) { try MetadataPointer.open(garbage, keys: Self.keys) }
        // An empty pointer from the right key opens.
        let empty = try SignedRecord(owner: Self.keys.metadataSigningIdentity, key: MetadataPointer.recordKey,
                                     value: Array("GRNYPTR1".utf8) + [0], sequence: 1, expiresAt: Date().addingTimeInterval(600))
        #expect(try MetadataPointer.open(empty, keys: Self.keys).entries.isEmpty)
    }

    @Test func dhtNodesAskNoProofOfWorkOnlyUnderTheKeyOnlyPrefix() throws {
        let bare = Self.keys.metadataSigningIdentity
        let pointer = try SignedRecord(owner: bare, key: MetadataPointer.recordKey, value: [1], sequence: 1,
                                       expiresAt: Date().addingTimeInterval(600))
        let verified = try SignedRecord(verifying: pointer.envelope, difficulty: 16)
        #expect(verified.owner == bare.publicKey)
        let contact = try SignedRecord(owner: bare, key: Array("contact".utf8), value: [1], sequence: 1,
                                       expiresAt: Date().addingTimeInterval(600))
        if bare.publicKey.proofOfWorkBits < 16 {
            #expect(throws: DHTError.self) { try SignedRecord(verifying: contact.envelope, difficulty: 16) }
        }
    }
}
