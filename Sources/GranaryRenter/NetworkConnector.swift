import Foundation
import Logging

/// Joins the network and fills the contract pool in the background, so a
/// mount comes up at once and works from its cache while the network is
/// unreachable: the join is retried with backoff until a bootstrap node
/// answers, then market rounds run quickly at first (bids arrive only once
/// pub/sub filters have spread) and back off while farmers stay missing.
/// Uploads meanwhile fail with `SegmentStoreError.unavailable` and their
/// caller retries.
final class NetworkConnector: @unchecked Sendable {
    /// What the connector is doing, for `granary status`.
    enum Phase: Sendable, Equatable {
        case joining(attempts: Int, lastError: String?)
        case formingContracts(rounds: Int)
        case ready
    }

    // A lock, not an actor: `phase` is read from synchronous status code.
    private let lock = NSLock()
    private var task: Task<Void, Never>?
    private let log = Logger(label: "granary.renter")

    /// Quick market rounds first, then this backoff (seconds) between rounds and join attempts.
    static let quickRounds = 6
    static let quickDelay = 0.5
    static let maximumDelay = 15.0

    private var current: Phase = .formingContracts(rounds: 0)

    var phase: Phase { lock.withLock { current } }

    private func set(_ p: Phase) { lock.withLock { current = p } }

    /// Starts the background work: `join` (nil: nothing to join) until it
    /// succeeds, then `release` once, then rounds of `fillRound` (which
    /// returns the farmers with usable contracts) until `full` farmers
    /// have contracts, or `minimum` once the quick rounds are over (the
    /// maintenance loop tops up the rest).
    func start(join: (@Sendable () async throws -> Void)?, release: @escaping @Sendable () async -> Void,
               minimum: Int, full: Int, fillRound: @escaping @Sendable () async -> Int) {
        if join != nil { set(.joining(attempts: 0, lastError: nil)) }
        let t = Task { [self] in
            if let join {
                var attempts = 0
                var delay = Self.quickDelay
                while !Task.isCancelled {
                    attempts += 1
                    do {
                        try await join()
                        log.notice("joined the network after \(attempts) attempt(s)")
                        break
                    } catch {
                        set(.joining(attempts: attempts, lastError: "\(error)"))
                        log.notice("cannot join the network yet (attempt \(attempts)): \(error); retrying in \(String(format: "%.1f", delay)) s; the mount works from its cache meanwhile")
                        try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
                        delay = min(delay * 2, Self.maximumDelay)
                    }
                }
            }
            if Task.isCancelled { return }
            await release()
            var rounds = 0
            var delay = Self.quickDelay
            while !Task.isCancelled {
                set(.formingContracts(rounds: rounds))
                let have = await fillRound()
                rounds += 1
                if have >= full || (have >= minimum && rounds >= Self.quickRounds) { break }
                try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
                if rounds >= Self.quickRounds { delay = min(delay * 2, Self.maximumDelay) }
            }
            if !Task.isCancelled { set(.ready) }
        }
        lock.withLock { task = t }
    }

    func cancel() async {
        let t: Task<Void, Never>? = lock.withLock { let t = task; task = nil; return t }
        t?.cancel()
        await t?.value
    }
}
