import ArgumentParser
import Foundation

/// `HOST:PORT` option values.
enum HostPort {
    static func parse(_ text: String, option: String) throws -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("\(option) \(text) is not HOST:PORT")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("\(option) \(text) has no host") }
        return (host, port)
    }
}

/// Sizes like 10G, 512M, 64KiB, 1048576 (suffixes are powers of 1024).
enum ByteSize {
    static func parse(_ text: String) -> UInt64? {
        var t = text.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where t.hasSuffix(suffix) && t.count > suffix.count { t.removeLast(suffix.count); break }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var multiplier: UInt64 = 1
        if let last = t.last, let m = units[last] { multiplier = m; t.removeLast() }
        guard let value = Double(t), value >= 0 else { return nil }
        return UInt64(value * Double(multiplier))
    }
}
