import Foundation
import GranaryContracts
import GranaryCore
import GranaryWire
import Logging

/// Contracts with farmers at known addresses, proposed directly over TCP
/// without a market round: for a renter pointed at its own farmers, and
/// for networks whose farmers do not (yet) bid in the DHT market.
public final class DirectContractSource: ContractSource {
    let addresses: [String]
    let link: TransferFarmerLink
    let identity: NodeIdentity
    let difficulty: Int
    private let log = Logger(label: "granary.renter")

    public init(addresses: [String], link: TransferFarmerLink, identity: NodeIdentity, difficulty: Int) {
        self.addresses = addresses; self.link = link; self.identity = identity; self.difficulty = difficulty
    }

    public func formContracts(count: Int, terms: ContractTerms, excluding: Set<Hash256>) async throws -> [ContractRecord] {
        let identity = self.identity, difficulty = self.difficulty, link = self.link
        let formed = await withTaskGroup(of: ContractRecord?.self) { group in
            for address in addresses {
                group.addTask {
                    guard let (host, port) = TransferFarmerLink.split(address) else { return nil }
                    do {
                        // Learn the farmer's key from its handshake.
                        let client = try await TransferClient.connect(to: host, port: port, identity: identity, expectedPeer: nil,
                                                                      difficulty: difficulty, connectTimeout: .seconds(5))
                        let key = await client.peer
                        await client.close()
                        guard !excluding.contains(key.id) else { return nil }
                        let farmer = FarmerContact(id: key.id, publicKey: key.bytes, address: address)
                        let contract = terms.proposal(renter: identity.id, farmer: key.id, pricePerAudit: terms.maxPricePerAudit)
                        return try await link.propose(contract, farmer: farmer)
                    } catch {
                        Logger(label: "granary.renter").info("farmer at \(address) did not sign: \(error)")
                        return nil
                    }
                }
            }
            var out: [ContractRecord] = []
            for await c in group { if let c { out.append(c) } }
            return out
        }
        return Array(formed.prefix(count))
    }

    public func shutdown() async {}
}

extension RenterEngine {
    /// Starts a renter that contracts directly with the farmers at
    /// `farmers` (HOST:PORT of their transfer endpoints), without the DHT.
    public static func start(stateDirectory: String, identity: NodeIdentity, farmers: [String],
                             configuration: RenterConfiguration = RenterConfiguration(),
                             clock: RenterClock = SystemClock(), random: RandomSource = SystemRandomSource(),
                             contractTimeout: Double = 60) async throws -> RenterEngine {
        let link = TransferFarmerLink(identity: identity, difficulty: configuration.difficulty,
                                      transferStallTimeout: .seconds(configuration.transferTimeoutBase))
        let source = DirectContractSource(addresses: farmers, link: link, identity: identity, difficulty: configuration.difficulty)
        let engine = try RenterEngine(stateDirectory: stateDirectory, link: link, contracts: source,
                                      configuration: configuration, clock: clock, random: random)
        do {
            try await engine.start(contractTimeout: contractTimeout)
        } catch {
            await engine.stop()
            throw error
        }
        return engine
    }
}
