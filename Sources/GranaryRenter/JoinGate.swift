import Foundation

/// Closed while the engine has not joined the network yet (started
/// without it): segment storage then refuses uploads and deletes, so
/// nothing is written under a key before the mount lease is taken.
final class JoinGate: @unchecked Sendable {
    // A lock: checked from any task, changed once or twice.
    private let lock = NSLock()
    private var isOpen = true

    func close() { lock.withLock { isOpen = false } }
    func open() { lock.withLock { isOpen = true } }

    func check() throws {
        if !lock.withLock({ isOpen }) {
            throw SegmentStoreError.unavailable("not joined to the network yet: uploads and deletes wait until a bootstrap node answers")
        }
    }
}
