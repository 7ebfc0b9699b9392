import Foundation
import GranaryCore
import Logging

/// Where a farmer takes transfers (its TCP HOST:PORT), as a record it signs
/// and stores in the DHT under its own identity. A contract names the
/// farmer's address as it was when the bid came in; a farmer restarted on a
/// new port or behind a new IP publishes its new address here, so renters
/// holding its pieces find it again instead of writing it off.
public enum TransferAddressRecord {
    public static let key = Array("transfer-address".utf8)
    /// Lifetime of one published record; the farmer republishes well before.
    public static let lifetime: Duration = .seconds(86_400)

    /// The record's value. An empty host stands for "the host my DHT
    /// contact has": a farmer listening on every interface does not know
    /// which of its addresses renters reach.
    public static func value(host: String, port: Int) -> [UInt8] {
        let wildcard = host == "0.0.0.0" || host == "::" || host.isEmpty
        let shown = wildcard ? "" : (host.contains(":") ? "[\(host)]" : host)
        return Array("\(shown):\(port)".utf8)
    }

    /// The address in a record's value, with an empty host replaced by
    /// `contactHost`; nil when the value is not HOST:PORT.
    public static func address(from value: [UInt8], contactHost: String?) -> String? {
        guard value.count <= 300, let text = String(bytes: value, encoding: .utf8),
              let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.isEmpty {
            guard let contactHost, !contactHost.isEmpty else { return nil }
            host = contactHost.contains(":") ? "[\(contactHost)]" : contactHost
        }
        guard !host.contains(where: { $0.isWhitespace || $0 == "/" }) else { return nil }
        return "\(host):\(port)"
    }
}

/// Publishes a farmer's `TransferAddressRecord`: at start (retried until
/// some node holds it, since a farmer may start before the network) and
/// then every `refreshInterval`, each time with a new sequence (the clock,
/// in milliseconds, so a restarted farmer's record replaces the old one).
public actor TransferAddressPublisher {
    let node: DHTNode
    let value: [UInt8]
    let refreshInterval: Duration
    private var task: Task<Void, Never>?
    private let logger = Logger(label: "granary.dht")
    /// Nodes that accepted the last publication.
    public private(set) var holders = 0
    /// Whether some node has accepted a publication yet (the first is logged).
    private var announced = false

    public init(node: DHTNode, host: String, port: Int, refreshInterval: Duration = .seconds(6 * 3600)) {
        self.node = node
        self.value = TransferAddressRecord.value(host: host, port: port)
        self.refreshInterval = refreshInterval
    }

    public func start() {
        guard task == nil else { return }
        task = Task { await self.run() }
    }

    public func stop() {
        task?.cancel()
        task = nil
    }

    private func run() async {
        var retry: Duration = .seconds(2)
        while !Task.isCancelled {
            let n = await publishOnce()
            if n > 0 {
                retry = .seconds(2)
                try? await Task.sleep(for: refreshInterval)
            } else {
                try? await Task.sleep(for: retry)
                retry = min(retry * 2, .seconds(300))
            }
        }
    }

    /// Publishes now; returns how many nodes accepted the record.
    @discardableResult
    public func publishOnce() async -> Int {
        let sequence = UInt64(Date().timeIntervalSince1970 * 1000)
        do {
            holders = try await node.putRecord(key: TransferAddressRecord.key, value: value, sequence: sequence,
                                               ttl: TransferAddressRecord.lifetime)
            let line: Logger.Message = "transfer address \(String(decoding: value, as: UTF8.self)) published on \(holders) nodes"
            if !announced && holders > 0 { announced = true; logger.info(line) } else { logger.debug(line) }
        } catch {
            holders = 0
            logger.info("cannot publish the transfer address yet: \(error)")
        }
        return holders
    }
}
