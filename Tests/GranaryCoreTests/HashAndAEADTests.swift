import GranaryCore
import Testing

/// Known answers computed with independent implementations (Python's hashlib
/// and the `cryptography` package, XChaCha via HChaCha20 + ChaCha20-Poly1305).
@Suite struct KnownAnswerTests {
    @Test func blake2b256() {
        #expect(Blake2b.hash256([]).hex == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8")
        #expect(Blake2b.hash256(Array("abc".utf8)).hex == "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319")
        let keyed = Blake2b.hash256((0..<256).map { UInt8($0) }, key: (0..<32).map { UInt8($0) })
        #expect(keyed.hex == "b42be36ea26392f67d1d3706ffa72b6c61c2ff38e1fabd9a49e154d54b967d83")
    }

    /// Answers from b3sum (the Rust implementation, Debian's package), on
    /// BLAKE3's test-vector input (byte i = i mod 251) of 5,000 bytes: past
    /// four 1 KiB chunks, so the SIMD paths and the chunk tree are exercised.
    @Test func blake3() {
        #expect(Blake3.hash256([]).hex == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
        #expect(Blake3.hash256(Array("abc".utf8)).hex == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")
        let input = (0..<5000).map { UInt8($0 % 251) }
        #expect(Blake3.hash256(input).hex == "ee78d92070de3df1c57c37002abf0a6b1a6589acdeef4d8ffac7cf3d9e8f2836")
        let key = Blake3.Key(Array("whats the Elvish word for friend".utf8))!
        #expect(Blake3.hash256(input, key: key).hex == "27dc394fb01f055606c3aedde3a8c3694c34a8c514cc61a27279f1417cc385e0")
        #expect(Blake3.Key(Array(repeating: 0, count: 31)) == nil, "keys are exactly 32 bytes")
    }

    @Test func incrementalMatchesOneShot() {
        let data = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let h = Blake2bHasher()
        h.update(Array(data[0..<1]))
        h.update(Array(data[1..<4097]))
        h.update(Array(data[4097...]))
        #expect(h.finalize() == Blake2b.hash256(data))
    }

    static let key = (0..<32).map { UInt8($0) }
    static let ad = Array("granary-ad".utf8)
    static let plaintext = Array("The quick brown fox jumps over the lazy dog".utf8)

    @Test(.enabled(if: SealAlgorithm.aes256gcm.isAvailable)) func aes256gcm() throws {
        let sealed = try AEAD.encrypt(.aes256gcm, key: Self.key, nonce: (0..<12).map { UInt8($0) },
                                      associatedData: Self.ad, plaintext: Self.plaintext)
        #expect(Hex.encode(sealed) == "136ab33bb490ab78e661f5f9de9e164de5b9ff149a0e320c4b478af3781b20c669758e90cebb6bb810cb181e0a6ca65e9a63ae88cff78ca9db3c70")
        #expect(try AEAD.decrypt(.aes256gcm, key: Self.key, nonce: (0..<12).map { UInt8($0) },
                                 associatedData: Self.ad, sealed: sealed) == Self.plaintext)
    }

    @Test func xchacha20poly1305() throws {
        let sealed = try AEAD.encrypt(.xchacha20poly1305, key: Self.key, nonce: (0..<24).map { UInt8($0) },
                                      associatedData: Self.ad, plaintext: Self.plaintext)
        #expect(Hex.encode(sealed) == "caaa6a5fe1a7e4cd586444bca425c6c82d28508597a3709b0c3a50c058dfd52d36639688201d7044b1fac9805dc6475b889bbb39b0d706974675e7")
    }

    @Test func hash256OrderingAndXor() {
        let a = Hash256(hex: "00" + String(repeating: "ff", count: 31))!
        let b = Hash256(hex: "01" + String(repeating: "00", count: 31))!
        #expect(a < b)
        #expect((a ^ a) == .zero)
        #expect((a ^ b).leadingZeroBitCount == 7)
        #expect(Hash256(bytes: a.bytes) == a)
        #expect(Hash256(bytes: [1, 2, 3]) == nil)
        #expect(Hash256(hex: "zz") == nil)
    }
}

@Suite struct ChunkSealerTests {
    static let keys = RenterKeys(master: (0..<32).map { UInt8($0 * 7 & 0xff) })

    @Test(arguments: SealAlgorithm.allCases.filter(\.isAvailable))
    func roundTripAndEveryBitFlipFails(algorithm: SealAlgorithm) throws {
        let sealer = ChunkSealer(dedupeKey: Self.keys.dedupeKey, chunkKeyRoot: Self.keys.chunkKeyRoot, algorithm: algorithm)
        let plain = (0..<300).map { UInt8(truncatingIfNeeded: $0 * 13) }
        let (id, sealed) = sealer.seal(plain)
        #expect(sealed[0] == algorithm.rawValue)
        #expect(try sealer.open(sealed, chunkID: id) == plain)
        #expect(id == sealer.chunkID(of: plain))
        for byte in 0..<sealed.count {
            for bit in 0..<8 {
                var bad = sealed
                bad[byte] ^= UInt8(1 << bit)
                #expect(throws: SealError.self) { try sealer.open(bad, chunkID: id) }
            }
        }
        for cut in [0, 1, 10, sealed.count - 1] {
            #expect(throws: SealError.self) { try sealer.open(Array(sealed.prefix(cut)), chunkID: id) }
        }
    }

    @Test func wrongKeyOrWrongIDFails() throws {
        let sealer = Self.keys.chunkSealer()
        let other = RenterKeys.generate().chunkSealer()
        let (id, sealed) = sealer.seal(Array("secret".utf8))
        #expect(throws: SealError.authenticationFailed) { try other.open(sealed, chunkID: id) }
        #expect(throws: SealError.authenticationFailed) { try sealer.open(sealed, chunkID: .random()) }
    }

    @Test func chunkIDsDedupePerRenterOnly() {
        let data = Array(repeating: UInt8(9), count: 4096)
        #expect(Self.keys.chunkSealer().chunkID(of: data) == Self.keys.chunkSealer().chunkID(of: data))
        #expect(RenterKeys.generate().chunkSealer().chunkID(of: data) != Self.keys.chunkSealer().chunkID(of: data))
    }

    @Test func emptyChunk() throws {
        let sealer = Self.keys.chunkSealer()
        let (id, sealed) = sealer.seal([])
        #expect(try sealer.open(sealed, chunkID: id) == [])
    }
}

@Suite struct KeyTests {
    @Test func recoveryPhraseRoundTripsAndCatchesTypos() throws {
        let keys = RenterKeys.generate()
        let phrase = keys.recoveryPhrase
        #expect(try RenterKeys(recoveryPhrase: phrase).master == keys.master)
        #expect(try RenterKeys(recoveryPhrase: phrase.uppercased().replacingOccurrences(of: "-", with: " ")).master == keys.master)
        var chars = Array(phrase)
        chars[0] = chars[0] == "a" ? "b" : "a"
        #expect(throws: RenterKeyError.checksumMismatch) { try RenterKeys(recoveryPhrase: String(chars)) }
        #expect(throws: RenterKeyError.self) { try RenterKeys(recoveryPhrase: "abc") }
    }

    @Test func derivedKeysDiffer() {
        let keys = RenterKeys.generate()
        let all = [keys.dedupeKey, keys.chunkKeyRoot, keys.metadataKey]
        #expect(Set(all).count == 3)
        #expect(keys.nodeIdentity(difficulty: 4).id == keys.nodeIdentity(difficulty: 4).id)
    }
}
