import Foundation
import GranaryCore

/// Remembers (sender, nonce) pairs for as long as their timestamps are
/// acceptable, so a captured datagram cannot be replayed. Datagrams older
/// than the skew window are refused by timestamp, so nothing older needs
/// remembering. Called from NIO threads before the node's actor is involved,
/// hence a lock.
final class ReplayGuard: @unchecked Sendable {
    private struct Key: Hashable { let sender: Hash256; let nonce: Data }
    private let lock = NSLock()
    private var seen: [Key: UInt64] = [:]   // -> forget after (ms since epoch)
    private let windowMs: UInt64
    private let capacity: Int

    init(windowMs: UInt64, capacity: Int = 500_000) {
        self.windowMs = windowMs
        self.capacity = capacity
    }

    /// True when the pair is new (and now remembered); false for a replay
    /// or when the cache is full of live entries (refusing is the safe side).
    func admit(sender: Hash256, nonce: Data, nowMs: UInt64) -> Bool {
        let key = Key(sender: sender, nonce: nonce)
        lock.lock()
        defer { lock.unlock() }
        if let until = seen[key], until > nowMs { return false }
        if seen.count >= capacity {
            seen = seen.filter { $0.value > nowMs }
            if seen.count >= capacity { return false }
        }
        seen[key] = nowMs + 2 * windowMs
        return true
    }
}
