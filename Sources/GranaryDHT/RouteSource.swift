import Foundation

extension DHTAddress {
    /// True for a wildcard address (0.0.0.0, ::), which says "any local
    /// address" and is no use to a node on another host.
    public var isUnspecified: Bool { host.isEmpty || DHTNode.unspecifiedHosts.contains(host) }

    /// True for an IP literal one datagram reaches one node at: not a name
    /// (every send to it would be a DNS lookup, made by whoever a peer
    /// names it to), and not unspecified, broadcast or multicast. What
    /// peers advertise must be such an address.
    public var isUnicastLiteral: Bool {
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            let a = UInt32(bigEndian: v4.s_addr)
            return a != 0 && a != 0xFFFF_FFFF && a >> 28 != 0xE
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        return withUnsafeBytes(of: &v6) { $0.contains { $0 != 0 } && $0[0] != 0xFF }
    }

    /// The first numeric address `host` resolves to (itself when it is
    /// one already), of the same family as `sameFamilyAs` when that is an
    /// IP literal (a node bound to IPv4 must not advertise an IPv6 address
    /// its socket cannot answer from); nil when it does not resolve.
    public static func numericHost(for host: String, sameFamilyAs reference: String? = nil) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        if let reference {
            var v4 = in_addr(), v6 = in6_addr()
            if inet_pton(AF_INET, reference, &v4) == 1 { hints.ai_family = AF_INET }
            else if inet_pton(AF_INET6, reference, &v6) == 1 { hints.ai_family = AF_INET6 }
        }
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let ai = list else { return nil }
        defer { freeaddrinfo(list) }
        return numericText(ai.pointee.ai_addr, ai.pointee.ai_addrlen)
    }

    /// A socket address as numeric text ("10.0.0.7", "::1"); nil on failure.
    private static func numericText(_ address: UnsafePointer<sockaddr>, _ length: socklen_t) -> String? {
        var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(address, length, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The local address the kernel sends from toward `destination`: a
    /// connected UDP socket is asked (nothing is sent). A node bound to a
    /// wildcard address advertises this one, so that farmers on other hosts
    /// can send bids to what its offers name; nil when there is no route.
    public static func localSource(toward destination: DHTAddress) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let host = destination.host.hasPrefix("[") ? String(destination.host.dropFirst().dropLast()) : destination.host
        guard getaddrinfo(host, String(destination.port), &hints, &list) == 0, let ai = list else { return nil }
        defer { freeaddrinfo(list) }
        let fd = socket(ai.pointee.ai_family, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        let text = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { numericText($0, length) }
        }
        guard let text else { return nil }
        let source = DHTAddress(host: text, port: 0)
        return source.isUnspecified ? nil : source.host
    }
}
