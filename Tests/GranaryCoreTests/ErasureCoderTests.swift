import GranaryCore
import Testing

@Suite struct ErasureCoderTests {
    static func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var state = seed &+ 0x9E3779B97F4A7C15
        return (0..<n).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    static func subsets(_ n: Int, _ k: Int) -> [[Int]] {
        if k == 0 { return [[]] }
        if n < k { return [] }
        return subsets(n - 1, k) + subsets(n - 1, k - 1).map { $0 + [n - 1] }
    }

    @Test(arguments: [0, 1, 2, 3, 7, 100, 4095, 4097, 65_537])
    func everySubsetOfKRebuilds(size: Int) throws {
        let scheme = try RedundancyScheme(k: 3, r: 4, s: 5, n: 6)
        let coder = ErasureCoder(scheme: scheme)
        let segment = Self.bytes(size, seed: UInt64(size))
        let pieces = coder.encode(segment)
        #expect(pieces.count == 6)
        #expect(pieces.allSatisfy { $0.count == scheme.pieceSize(segmentLength: size) })
        // Systematic: the data pieces are the segment's slices.
        #expect(Array(pieces[0..<3].joined().prefix(size)) == segment)
        for subset in Self.subsets(6, 3) {
            let available = Dictionary(uniqueKeysWithValues: subset.map { ($0, pieces[$0]) })
            #expect(try coder.decode(available, segmentLength: size) == segment, "subset \(subset)")
        }
    }

    @Test func fewerThanKIsAnError() throws {
        let coder = ErasureCoder(scheme: .embeddedDefault)
        let segment = Self.bytes(1000, seed: 1)
        let pieces = coder.encode(segment)
        #expect(throws: ErasureCodeError.notEnoughPieces(have: 3, need: 4)) {
            try coder.decode([0: pieces[0], 5: pieces[5], 7: pieces[7]], segmentLength: 1000)
        }
        #expect(throws: ErasureCodeError.self) {
            try coder.decode([0: pieces[0], 1: pieces[1], 2: pieces[2], 3: Array(pieces[3].dropLast())], segmentLength: 1000)
        }
    }

    @Test func rangedReconstructionEqualsTheSameRange() throws {
        let scheme = RedundancyScheme.embeddedDefault
        let coder = ErasureCoder(scheme: scheme)
        let size = 100_003
        let segment = Self.bytes(size, seed: 7)
        let pieces = coder.encode(segment)
        for (offset, length) in [(0, 1), (5, 100), (25_000, 2), (24_999, 3), (10, 90_000), (size - 7, 7), (0, size)] {
            let range = try coder.pieceRange(segmentLength: size, offset: offset, length: length)
            // Parity-heavy choice: only one data piece survives.
            let available = Dictionary(uniqueKeysWithValues: [1, 4, 6, 7].map { ($0, Array(pieces[$0][range])) })
            let got = try coder.decodeRange(available, pieceRange: range, segmentLength: size, offset: offset, length: length)
            #expect(got == Array(segment[offset..<(offset + length)]), "range \(offset)+\(length)")
        }
        #expect(throws: ErasureCodeError.self) { try coder.pieceRange(segmentLength: size, offset: size, length: 1) }
    }

    @Test func rebuildOneMissingPiece() throws {
        let coder = ErasureCoder(scheme: .embeddedDefault)
        let segment = Self.bytes(50_000, seed: 3)
        let pieces = coder.encode(segment)
        for missing in 0..<8 {
            let others = (0..<8).filter { $0 != missing }.shuffled().prefix(4)
            let available = Dictionary(uniqueKeysWithValues: others.map { ($0, pieces[$0]) })
            #expect(try coder.rebuildPiece(missing, from: available, pieceSize: pieces[0].count) == pieces[missing])
        }
    }

    @Test func invalidSchemesAreRefused() throws {
        #expect(throws: ErasureCodeError.self) { try RedundancyScheme(k: 0, r: 1, s: 1, n: 1) }
        #expect(throws: ErasureCodeError.self) { try RedundancyScheme(k: 4, r: 3, s: 7, n: 8) }
        #expect(throws: ErasureCodeError.self) { try RedundancyScheme(k: 4, r: 5, s: 9, n: 8) }
        #expect(throws: ErasureCodeError.self) { try RedundancyScheme(k: 200, r: 200, s: 200, n: 300) }
        #expect(try RedundancyScheme(parsing: "4/5/7/8") == .embeddedDefault)
    }
}
