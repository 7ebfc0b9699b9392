import Foundation

/// The counter at which a renter's identity search ended, kept in the state
/// folder so a restart skips the search. One line of text:
/// `granary-identity-nonce 1 TAG DIFFICULTY COUNTER`, where TAG names the
/// key it belongs to (a keyed hash, not the key). Not a secret, but written
/// like one (0600, atomically): a cache is only a hint, and every value read
/// is checked by the caller before use.
enum IdentityNonceCache {
    static let header = "granary-identity-nonce 1"

    /// The cached counter when the file exists, parses, and names this tag
    /// and difficulty; nil otherwise (a missing or foreign cache is no error).
    static func read(_ path: String, tag: String, difficulty: Int) -> UInt64? {
        guard let bytes = try? SecretFile.read(path), bytes.count < 256,
              let text = String(bytes: bytes, encoding: .utf8) else { return nil }
        let fields = text.split(whereSeparator: \.isWhitespace).map(String.init)
        guard fields.count == 5, "\(fields[0]) \(fields[1])" == header, fields[2] == tag,
              Int(fields[3]) == difficulty, let counter = UInt64(fields[4]) else { return nil }
        return counter
    }

    /// Writes the cache when its folder exists; a failure only costs a search next time.
    static func write(_ path: String, tag: String, difficulty: Int, counter: UInt64) {
        let folder = (path as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder, isDirectory: &isDirectory),
              isDirectory.boolValue else { return }
        try? SecretFile.write(Array("\(header) \(tag) \(difficulty) \(counter)\n".utf8), to: path)
    }
}
