import Foundation
import GranaryCore

/// The plaintext of a metadata snapshot: named files (consistent copies
/// of meta.db and network.db), each name a path relative to the mount's
/// state folder.
public struct SnapshotArchive: Sendable, Equatable {
    public struct File: Sendable, Equatable {
        public var name: String
        public var bytes: [UInt8]
        public init(name: String, bytes: [UInt8]) { self.name = name; self.bytes = bytes }
    }

    public var files: [File]
    public init(files: [File]) { self.files = files }

    private static let magic = Array("GRNYSNP1".utf8)

    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.magic)
        w.u16(files.count)
        for f in files {
            w.short(Array(f.name.utf8))
            w.long(f.bytes)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(ByteCodingError) {
        var r = ByteReader(bytes)
        try r.expect(Self.magic, what: "metadata snapshot")
        var files: [File] = []
        for _ in 0..<(try r.u16()) {
            let name = String(decoding: try r.short(), as: UTF8.self)
            guard Self.isSafe(name) else { throw ByteCodingError("snapshot names an unsafe path \(name)") }
            files.append(File(name: name, bytes: try r.long()))
        }
        guard r.isAtEnd else { throw ByteCodingError("trailing bytes after the snapshot's files") }
        self.files = files
    }

    /// A relative path inside the state folder: no `..`, not absolute, not empty.
    static func isSafe(_ name: String) -> Bool {
        !name.isEmpty && !name.hasPrefix("/") && !name.split(separator: "/").contains("..") && !name.contains("\0")
    }

    // MARK: sealing

    static let algorithm = SealAlgorithm.xchacha20poly1305

    static func associatedData(_ label: String, sequence: UInt64) -> [UInt8] {
        var ad = Array(label.utf8)
        withUnsafeBytes(of: sequence.littleEndian) { ad += $0 }
        return ad
    }

    /// Encrypts the archive under the metadata key; the sequence is bound in
    /// as associated data, so one snapshot's bytes never open as another's.
    func sealed(key: [UInt8], nonce: [UInt8], sequence: UInt64) throws -> [UInt8] {
        try AEAD.encrypt(Self.algorithm, key: key, nonce: nonce,
                         associatedData: Self.associatedData("granary-snapshot-v1", sequence: sequence), plaintext: encoded())
    }

    static func open(_ sealed: [UInt8], key: [UInt8], nonce: [UInt8], sequence: UInt64) throws -> SnapshotArchive {
        let plain = try AEAD.decrypt(algorithm, key: key, nonce: nonce,
                                     associatedData: associatedData("granary-snapshot-v1", sequence: sequence), sealed: sealed)
        return try SnapshotArchive(decoding: plain)
    }
}
