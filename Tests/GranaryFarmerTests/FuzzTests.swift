import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import NIOCore
import Testing

/// Seeded fuzzing of everything that parses bytes from a peer: the frame
/// decoder, both handshake halves, the session cipher, the proof decoder and
/// the contract decoders. Passing means: no crash, no hang, every input
/// either parsed within bounds or refused with an error.
@Suite struct FuzzTests {
    struct Rng {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }
        mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    }

    /// Flips, inserts, deletes, truncates or splices bytes.
    static func mutate(_ input: [UInt8], _ rng: inout Rng) -> [UInt8] {
        var b = input
        for _ in 0...rng.below(4) {
            switch rng.below(6) {
            case 0 where !b.isEmpty: b[rng.below(b.count)] ^= UInt8(1 << rng.below(8))
            case 1: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: rng.below(b.count + 1))
            case 2 where !b.isEmpty: b.remove(at: rng.below(b.count))
            case 3: b = Array(b.prefix(rng.below(b.count + 1)))
            case 4 where !b.isEmpty: b[rng.below(b.count)] = [0, 0xff, 0x7f, 0x80][rng.below(4)]
            default: b += rng.bytes(rng.below(16))
            }
        }
        return b
    }

    @Test func frameDecoderSurvivesRandomAndMutatedStreams() throws {
        var rng = Rng(state: 0x5EED_F00D)
        let parser = FrameParser(maxFrameLength: 64 * 1024)
        let valid: [UInt8] = Frame.header(type: .data, payloadLength: 100) + [UInt8](repeating: 1, count: 100)
            + Frame.header(type: .sealed, payloadLength: 20) + [UInt8](repeating: 2, count: 20)
        var frames = 0, errors = 0
        for i in 0..<3000 {
            let input = i % 2 == 0 ? rng.bytes(rng.below(300)) : Self.mutate(valid, &rng)
            var buffer = ByteBuffer()
            // Feed in random slices, as TCP would deliver them.
            var offset = 0
            do {
                while offset < input.count {
                    let n = 1 + rng.below(input.count - offset)
                    buffer.writeBytes(input[offset..<(offset + n)])
                    offset += n
                    while let frame = try parser.next(from: &buffer) {
                        #expect(frame.payload.readableBytes < 64 * 1024)
                        frames += 1
                    }
                }
            } catch {
                errors += 1
            }
        }
        #expect(frames > 0 && errors > 0)
    }

    @Test func handshakeSurvivesGarbageAndMutations() throws {
        var rng = Rng(state: 0xC0FFEE)
        let client = NodeIdentity.generate(difficulty: 4)
        let server = NodeIdentity.generate(difficulty: 4)
        let serverSide = ServerHandshake(identity: server, difficulty: 4)
        let hs = ClientHandshake(identity: client, expectedPeer: server.id, difficulty: 4)
        let hello = Array(hs.hello.readableBytesView)
        let (reply, peer, _) = try serverSide.respond(to: hs.hello)
        #expect(peer.id == client.id)
        let replyBytes = Array(reply.readableBytesView)
        _ = try hs.finish(serverHello: reply)
        var accepted = 0
        for i in 0..<2000 {
            let input = i % 3 == 0 ? rng.bytes(rng.below(600)) : Self.mutate(i % 3 == 1 ? hello : replyBytes, &rng)
            if (try? serverSide.respond(to: ByteBuffer(bytes: input))) != nil { accepted += 1 }
            if (try? hs.finish(serverHello: ByteBuffer(bytes: input))) != nil { accepted += 1 }
        }
        // Only mutations that leave the signed bytes intact (e.g. appended
        // unknown fields outside the envelope body) can pass; most must not.
        #expect(accepted < 200)
    }

    @Test func sessionCipherRefusesEveryAlteredFrame() throws {
        var rng = Rng(state: 0xABCD)
        let k1 = rng.bytes(32), k2 = rng.bytes(32)
        var sender = SessionCipher(sendKey: k1, receiveKey: k2)
        var receiver = SessionCipher(sendKey: k2, receiveKey: k1)
        var previous: [UInt8]?
        for _ in 0..<1000 {
            let plain = rng.bytes(rng.below(200))
            let sealed = Array(sender.seal(plain).payload.readableBytesView)
            let altered = Self.mutate(sealed, &rng)
            if altered != sealed {
                #expect(throws: SessionError.self) { _ = try receiver.open(ByteBuffer(bytes: altered)) }
            }
            if let previous {  // a replay of the frame before
                #expect(throws: SessionError.self) { _ = try receiver.open(ByteBuffer(bytes: previous)) }
            }
            #expect(try receiver.open(ByteBuffer(bytes: sealed)) == plain)
            previous = sealed
        }
    }

    @Test func decodersOfPeerMessagesStayInBounds() throws {
        var rng = Rng(state: 0xDEC0DE)
        let renter = NodeIdentity.generate(difficulty: 4)
        let farmer = NodeIdentity.generate(difficulty: 4)
        let start = UInt64(Date().timeIntervalSince1970)
        let signed = try Contract(renterID: renter.id, farmerID: farmer.id, allowanceBytes: 1 << 20, startTime: start,
                                  endTime: start + 60, pricePerAudit: 1, auditIntervalSeconds: 10, paymentChannelID: .random())
            .proposal(signedBy: renter).countersign(farmer: farmer)
        let contractBytes = signed.serialized
        let tree = MerkleTree(data: rng.bytes(50_000))
        let proofBytes: [UInt8] = try Granary_MerkleProof(tree.proof(leaves: 2..<5)!).serializedBytes()
        var validContracts = 0
        for i in 0..<2000 {
            if (try? SignedContract(serialized: Self.mutate(contractBytes, &rng), difficulty: 4)) != nil { validContracts += 1 }
            let input = i % 2 == 0 ? Self.mutate(proofBytes, &rng) : rng.bytes(rng.below(200))
            if let decoded = (try? Granary_MerkleProof(serializedBytes: input))?.decoded() {
                #expect(decoded.leaves.upperBound <= decoded.leafCount)
                #expect(MerkleProof.expectedHashCount(leaves: decoded.leaves, leafCount: decoded.leafCount) == decoded.hashes.count)
            }
            _ = try? Granary_Request(serializedBytes: rng.bytes(rng.below(100)))
        }
        #expect(validContracts < 100)
    }
}
