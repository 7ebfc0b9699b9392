import Foundation
import GranaryCore

extension DHTNode {
    /// The newest unexpired record `owner` published under `key` as the
    /// network holds it now: always asks the nodes closest to its storage
    /// key, even when this node published or holds a copy itself (which
    /// `getRecord` may answer from alone), and returns the highest sequence
    /// of what it found and what it holds. It asks every one of the k
    /// closest rather than stopping at the first holder that answers, which
    /// may have missed an update. For records another machine may have
    /// replaced: a mount lease, the metadata pointer a restore starts from.
    public func lookupRecord(owner: Hash256, key: [UInt8]) async -> SignedRecord? {
        let storageKey = SignedRecord.storageKey(owner: owner, key: key)
        let now = Date()
        let found = await lookup(target: storageKey, mode: .value(owner: owner, key: key), askEveryHolder: true).record
        return ([records[storageKey], ownRecords[storageKey], found].compactMap { $0 })
            .filter { $0.expiresAt > now }.max { $0.sequence < $1.sequence }
    }
}
