import Foundation

/// An in-process datagram network for the 1,000-node simulation only: the
/// same `DHTNode` code runs over it, with datagrams delivered by address.
/// Tests of the protocol itself use real UDP sockets.
public final class MemoryNetwork: @unchecked Sendable {
    // @unchecked: the endpoint table is guarded by `lock`.
    private let lock = NSLock()
    private var endpoints: [DHTAddress: ReceiverSlot] = [:]
    private var nextPort = 1

    public init() {}

    /// A new endpoint at 10.x.y.z:port (port 0 assigns one).
    public func makeTransport(port: Int = 0) -> MemoryTransport {
        lock.lock()
        defer { lock.unlock() }
        let p = port == 0 ? nextPort : port
        nextPort = max(nextPort, p) + 1
        let address = DHTAddress(host: "10.0.0.1", port: p)
        let slot = ReceiverSlot()
        endpoints[address] = slot
        return MemoryTransport(network: self, localAddress: address, slot: slot)
    }

    func deliver(_ bytes: [UInt8], from: DHTAddress, to: DHTAddress) {
        lock.lock()
        let slot = endpoints[to]
        lock.unlock()
        guard let receiver = slot?.get() else { return }  // like UDP to a closed port
        receiver(bytes, from)
    }

    func remove(_ address: DHTAddress) {
        lock.lock()
        endpoints[address] = nil
        lock.unlock()
    }
}

/// One endpoint of a `MemoryNetwork`.
public final class MemoryTransport: DHTTransport, @unchecked Sendable {
    // @unchecked: all stored properties are immutable references; the slot locks.
    private let network: MemoryNetwork
    public let localAddress: DHTAddress
    private let slot: ReceiverSlot

    init(network: MemoryNetwork, localAddress: DHTAddress, slot: ReceiverSlot) {
        self.network = network
        self.localAddress = localAddress
        self.slot = slot
    }

    public func setReceiver(_ receiver: @escaping DatagramReceiver) { slot.set(receiver) }

    public func send(_ bytes: [UInt8], to address: DHTAddress) {
        network.deliver(bytes, from: localAddress, to: address)
    }

    public func close() async {
        slot.clear()
        network.remove(localAddress)
    }
}
