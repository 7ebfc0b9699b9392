import Foundation
import GranaryCore
import Testing

@Suite struct IdentityTests {
    @Test func proofOfWorkIsEnforced() throws {
        let id = NodeIdentity.generate(difficulty: 6)
        #expect(id.publicKey.proofOfWorkBits >= 6)
        #expect(id.id == Blake2b.hash256(id.publicKey.bytes))
        try id.publicKey.validate(claimedID: id.id, difficulty: 6)
        // A key whose puzzle is short is refused.
        var weak = NodeIdentity(seed: Array(repeating: 1, count: 32))
        var seed: UInt8 = 1
        while weak.publicKey.proofOfWorkBits >= 3 { seed += 1; weak = NodeIdentity(seed: Array(repeating: seed, count: 32)) }
        #expect(throws: IdentityError.self) { try weak.publicKey.validate(difficulty: 3) }
        #expect(throws: IdentityError.idDoesNotMatchKey) { try id.publicKey.validate(claimedID: .random(), difficulty: 0) }
    }

    @Test func signaturesBindTheExactBytes() {
        let id = NodeIdentity.generate(difficulty: 0)
        let msg = Array("hello".utf8)
        let sig = id.sign(msg)
        #expect(id.publicKey.verify(signature: sig, over: msg))
        #expect(!id.publicKey.verify(signature: sig, over: Array("hellp".utf8)))
        var bad = sig; bad[0] ^= 1
        #expect(!id.publicKey.verify(signature: bad, over: msg))
        #expect(!NodeIdentity.generate(difficulty: 0).publicKey.verify(signature: sig, over: msg))
    }

    @Test func keyFileIsPrivateAndWorldReadableIsRefused() throws {
        let dir = NSTemporaryDirectory() + "granary-id-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/identity.key"
        let id = try NodeIdentity.loadOrCreate(at: path, difficulty: 4)
        var st = stat()
        #expect(stat(path, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try NodeIdentity.load(from: path, difficulty: 4).id == id.id)
        #expect(try NodeIdentity.loadOrCreate(at: path, difficulty: 4).id == id.id)
        chmod(path, 0o644)
        #expect(throws: IdentityError.self) { try NodeIdentity.load(from: path, difficulty: 4) }
        chmod(path, 0o600)
        // Garbage and a higher difficulty than the key has are refused.
        _ = FileManager.default.createFile(atPath: path, contents: Data("garbage".utf8), attributes: [.posixPermissions: 0o600])
        #expect(throws: IdentityError.self) { try NodeIdentity.load(from: path, difficulty: 4) }
    }
}
