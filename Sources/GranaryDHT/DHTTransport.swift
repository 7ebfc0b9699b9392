import Foundation

/// Delivers one received datagram: its bytes and the address it came from.
public typealias DatagramReceiver = @Sendable (_ bytes: [UInt8], _ from: DHTAddress) -> Void

/// The seam between the node and the network. `DHTNode` runs unchanged over
/// real UDP (`UDPTransport`) and over `MemoryNetwork`, which exists only so
/// that a 1,000-node network can be simulated in one process.
/// Sending is fire-and-forget, like UDP: loss shows up as a request timeout.
public protocol DHTTransport: Sendable {
    /// The address this transport is bound to (port resolved when 0 was asked).
    var localAddress: DHTAddress { get }
    /// Installs the receiver; called once, before any datagram is sent.
    func setReceiver(_ receiver: @escaping DatagramReceiver)
    /// Sends one datagram; errors are logged and otherwise ignored (UDP semantics).
    func send(_ bytes: [UInt8], to address: DHTAddress)
    /// Stops receiving and releases the socket.
    func close() async
}

/// A receiver slot filled after construction. A lock because NIO event-loop
/// threads read it while the node installs it.
final class ReceiverSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var receiver: DatagramReceiver?

    func set(_ r: @escaping DatagramReceiver) { lock.lock(); receiver = r; lock.unlock() }
    func clear() { lock.lock(); receiver = nil; lock.unlock() }
    func get() -> DatagramReceiver? { lock.lock(); defer { lock.unlock() }; return receiver }
}
