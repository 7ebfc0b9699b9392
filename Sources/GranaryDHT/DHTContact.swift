import Foundation
import GranaryCore
import GranaryWire

/// A UDP endpoint, "HOST:PORT" in text (IPv6 as "[::1]:PORT").
public struct DHTAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses "HOST:PORT" or "[V6]:PORT"; nil when malformed or the port is out of range.
    public init?(_ text: String) {
        let hostPart: Substring, portPart: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portPart = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard !hostPart.isEmpty, let port = Int(portPart), (0...65535).contains(port) else { return nil }
        self.init(host: String(hostPart), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// How to reach a DHT node: its verified identity and advertised address.
/// The ID is always computed from the key, never taken on trust.
public struct DHTContact: Hashable, Sendable, CustomStringConvertible {
    public let publicKey: NodePublicKey
    public var address: DHTAddress
    public var id: Hash256 { publicKey.id }

    public init(publicKey: NodePublicKey, address: DHTAddress) {
        self.publicKey = publicKey
        self.address = address
    }

    /// Decodes a contact, checking that the claimed ID is BLAKE2b(key), that
    /// the key carries the proof of work, and that the address is usable.
    public init(_ proto: Granary_DhtContact, difficulty: Int) throws(DHTError) {
        guard let key = NodePublicKey(bytes: [UInt8](proto.publicKey)) else {
            throw .malformed("contact public key is not 32 bytes")
        }
        guard let claimed = Hash256(bytes: proto.nodeID), claimed == key.id else {
            throw .idDoesNotMatchKey
        }
        do { try key.validate(difficulty: difficulty) } catch { throw .identity(error) }
        // Unspecified is allowed: the receiver of a datagram substitutes the
        // address it came from (a node that found no route to advertise).
        let address = DHTAddress(host: proto.host, port: Int(proto.port) & 0xFFFF)
        guard (1...65535).contains(proto.port), !proto.host.isEmpty, proto.host.utf8.count <= 255,
              address.isUnicastLiteral || address.isUnspecified else {
            throw .malformed("contact address \(proto.host):\(proto.port) is not a usable unicast IP address")
        }
        self.init(publicKey: key, address: address)
    }

    public var proto: Granary_DhtContact {
        var c = Granary_DhtContact()
        c.nodeID = Data(id.bytes)
        c.publicKey = Data(publicKey.bytes)
        c.host = address.host
        c.port = UInt32(address.port)
        return c
    }

    public var description: String { "\(id.short)@\(address)" }

    public static func == (a: DHTContact, b: DHTContact) -> Bool { a.id == b.id && a.address == b.address }
    public func hash(into h: inout Hasher) { h.combine(id); h.combine(address) }
}
