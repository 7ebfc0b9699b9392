import Foundation
import GranaryCore
import GranaryDHT

/// Finds a farmer's current transfer address in the DHT (its
/// `TransferAddressRecord`) when the address on record stops answering: a
/// farmer restarted on another port, or moved to another IP, keeps its
/// identity and its pieces. Asks about one farmer at most once per
/// `minimumInterval`, so a farmer that is simply down costs one lookup per
/// interval, not one per request.
public actor FarmerAddressResolver {
    let node: DHTNode
    let minimumInterval: Duration
    private var asked: [Hash256: ContinuousClock.Instant] = [:]

    /// Five seconds: a farmer killed and restarted comes back within
    /// seconds on a new port, and reads retry within their timeout; a
    /// lookup is a few datagrams.
    public init(node: DHTNode, minimumInterval: Duration = .seconds(5)) {
        self.node = node
        self.minimumInterval = minimumInterval
    }

    /// The address `farmer` last published, or nil when it published none
    /// (or none is found, or it was asked about too recently).
    public func currentAddress(of farmer: Hash256) async -> String? {
        let now = ContinuousClock.now
        if let last = asked[farmer], now - last < minimumInterval { return nil }
        asked[farmer] = now
        if asked.count > 4096 { asked = asked.filter { now - $0.value < minimumInterval } }
        guard let record = await node.lookupRecord(owner: farmer, key: TransferAddressRecord.key) else { return nil }
        // Only a wildcard farmer needs its DHT contact's host.
        let contactHost = record.value.first == UInt8(ascii: ":") ? await node.findContact(farmer)?.address.host : nil
        return TransferAddressRecord.address(from: record.value, contactHost: contactHost)
    }
}
