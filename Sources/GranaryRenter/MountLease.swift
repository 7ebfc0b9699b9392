import Foundation
import GranaryCore
import GranaryDHT
import Logging

/// Who holds a renter key's mount lease: the value of the lease record.
public struct LeaseHolder: Codable, Sendable, Equatable {
    /// Random per mount: tells two mounts on one host apart.
    public var instance: String
    public var host: String
    /// The state folder of the holding mount, for the message a second mount shows.
    public var stateDirectory: String
    /// When the holder took the lease (seconds since 1970).
    public var since: Double
    /// Set when the holder unmounted cleanly and gave the lease back.
    public var released: Bool

    public init(instance: String, host: String, stateDirectory: String, since: Date, released: Bool = false) {
        self.instance = instance; self.host = host; self.stateDirectory = stateDirectory
        self.since = since.timeIntervalSince1970; self.released = released
    }

    public var sinceDate: Date { Date(timeIntervalSince1970: since) }
}

/// Why a mount did not get the lease.
public enum MountLeaseError: Error, Equatable, CustomStringConvertible {
    case heldElsewhere(LeaseHolder, expires: Date)

    public var description: String {
        switch self {
        case let .heldElsewhere(h, expires):
            let since = ISO8601DateFormatter().string(from: h.sinceDate)
            let lapse = max(0, Int(expires.timeIntervalSinceNow.rounded(.up)))
            return """
                this key is mounted elsewhere (host \(h.host), state \(h.stateDirectory), since \(since)): two mounts of one key \
                would fork its metadata. Unmount it there, or wait for its lease to lapse (\(lapse) s if it stopped without \
                unmounting), or use --take-over to mount here anyway (the other mount is told it lost the lease).
                """
        }
    }
}

/// A renter key's mount lease: a signed DHT record saying which mount
/// currently owns the key, so that a second machine mounting the same key
/// (with its own state folder) is refused instead of forking the metadata.
///
/// The record is signed by `RenterKeys.leaseIdentity`, which every holder
/// of the master key derives alike, under a key-only DHT key (no proof of
/// work), with a sequence number from the wall clock in milliseconds (higher
/// replaces lower). The holder renews it every `renewInterval` with an
/// expiry of three intervals (30 s and 90 s by default), gives it back on a
/// clean unmount, and, when a renewal finds another holder's newer record (a
/// `--take-over`), stops renewing and reports the loss in `lostTo`.
public final class MountLease: @unchecked Sendable {  // mutable state behind `lock`
    public static let recordKey = SignedRecord.keyOnlyPrefix + Array("mount-lease".utf8)

    public let holder: LeaseHolder
    public let renewInterval: Duration
    let node: DHTNode
    let owner: NodeIdentity
    private let log = Logger(label: "granary.lease")
    private let lock = NSLock()
    private var sequence: UInt64 = 0
    private var lost: LeaseHolder?
    private var renewal: Task<Void, Never>?

    var ttl: Duration { renewInterval * 3 }

    init(node: DHTNode, owner: NodeIdentity, holder: LeaseHolder, renewInterval: Duration) {
        self.node = node; self.owner = owner; self.holder = holder; self.renewInterval = renewInterval
    }

    /// Takes the lease for `keys` through `node`, or throws
    /// `MountLeaseError.heldElsewhere` when another mount holds it (unless
    /// `takeOver`). Starts renewing it.
    ///
    /// A lease still held by the previous mount of this same state folder
    /// on this host (its instance is kept in `lease-instance` there) is
    /// taken back without `takeOver`: the caller holds the folder's lock,
    /// so that mount is gone (killed, or the machine crashed), and making a
    /// restart after a crash wait 90 s or ask for --take-over helps nobody.
    public static func acquire(node: DHTNode, keys: RenterKeys, stateDirectory: String, takeOver: Bool,
                               renewInterval: Duration = .seconds(30)) async throws -> MountLease {
        let holder = LeaseHolder(instance: Hex.encode(SecureRandom.bytes(8)), host: ProcessInfo.processInfo.hostName,
                                 stateDirectory: stateDirectory, since: Date())
        let instanceFile = stateDirectory + "/lease-instance"
        let previous = (try? String(contentsOfFile: instanceFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let lease = MountLease(node: node, owner: keys.leaseIdentity, holder: holder, renewInterval: renewInterval)
        try await lease.take(force: takeOver, predecessor: previous)
        try? holder.instance.write(toFile: instanceFile, atomically: true, encoding: .utf8)
        lease.startRenewing()
        return lease
    }

    /// The holder that took the lease away from this mount, if one did.
    public var lostTo: LeaseHolder? { lock.withLock { lost } }

    /// What `granary status` shows.
    public var summary: String {
        if let l = lostTo {
            return "LOST to host \(l.host) (\(l.stateDirectory)) at \(ISO8601DateFormatter().string(from: l.sinceDate)): unmount here"
        }
        return "held by this mount (renewed every \(renewInterval.components.seconds) s)"
    }

    private func current() async -> (record: SignedRecord, holder: LeaseHolder)? {
        guard let r = await node.lookupRecord(owner: owner.id, key: Self.recordKey),
              let h = try? JSONDecoder().decode(LeaseHolder.self, from: Data(r.value)) else { return nil }
        return (r, h)
    }

    private func nextSequence(after seen: UInt64) -> UInt64 {
        lock.withLock {
            sequence = max(sequence + 1, seen + 1, UInt64(Date().timeIntervalSince1970 * 1000))
            return sequence
        }
    }

    private func publish(_ value: LeaseHolder, after seen: UInt64, ttl: Duration) async throws -> UInt64 {
        let seq = nextSequence(after: seen)
        let bytes = [UInt8](try JSONEncoder().encode(value))
        let stored = try await node.putRecord(key: Self.recordKey, value: bytes, sequence: seq, ttl: ttl, signedBy: owner)
        if stored == 0 { log.warning("the mount lease reached no other DHT node; a second mount elsewhere would not see it") }
        return seq
    }

    private func take(force: Bool, predecessor: String?) async throws {
        let seen = await current()
        if let seen, !seen.holder.released, seen.holder.instance != holder.instance {
            let own = seen.holder.instance == predecessor && seen.holder.host == holder.host
                && seen.holder.stateDirectory == holder.stateDirectory
            if own {
                log.notice("the previous mount of this state folder (since \(ISO8601DateFormatter().string(from: seen.holder.sinceDate))) stopped without unmounting; taking its lease back")
            } else {
                if !force { throw MountLeaseError.heldElsewhere(seen.holder, expires: seen.record.expiresAt) }
                log.notice("taking over the mount lease from host \(seen.holder.host) (\(seen.holder.stateDirectory))")
            }
        }
        let mine = try await publish(holder, after: seen?.record.sequence ?? 0, ttl: ttl)
        // Two mounts that started together both saw no holder: the higher
        // sequence won, and the other backs off.
        if let now = await current(), now.holder.instance != holder.instance, now.record.sequence > mine {
            await node.forgetRecord(owner: owner.id, key: Self.recordKey)
            throw MountLeaseError.heldElsewhere(now.holder, expires: now.record.expiresAt)
        }
    }

    private func startRenewing() {
        let task = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: renewInterval)
                if Task.isCancelled { break }
                await renewOnce()
                if lostTo != nil { break }
            }
        }
        lock.withLock { renewal = task }
    }

    private func renewOnce() async {
        let seen = await current()
        let mine = lock.withLock { sequence }
        if let seen, seen.holder.instance != holder.instance, seen.record.sequence > mine, !seen.holder.released {
            lock.withLock { lost = seen.holder }
            await node.forgetRecord(owner: owner.id, key: Self.recordKey)
            log.error("""
                this mount lost the lease of its key to host \(seen.holder.host) (\(seen.holder.stateDirectory)), \
                which mounted it with --take-over: unmount here; changes made here from now on fork from that mount
                """)
            return
        }
        do { _ = try await publish(holder, after: seen?.record.sequence ?? 0, ttl: ttl) } catch {
            log.warning("could not renew the mount lease: \(error)")
        }
    }

    /// Stops renewing and, unless the lease was lost, gives it back so the
    /// next mount (anywhere) needs no --take-over.
    public func release() async {
        let task = lock.withLock { let t = renewal; renewal = nil; return t }
        task?.cancel()
        await task?.value
        guard lostTo == nil else { return }
        var released = holder
        released.released = true
        do { _ = try await publish(released, after: 0, ttl: ttl) } catch {
            log.warning("could not give the mount lease back (it lapses by itself): \(error)")
        }
        await node.forgetRecord(owner: owner.id, key: Self.recordKey)
    }
}
