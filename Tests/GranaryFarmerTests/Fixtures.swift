import Foundation
import GranaryContracts
import GranaryCore
import GranaryTestSupport
import GranaryWire
import NIOCore

/// Proof of work used by every test (child processes get GRANARY_POW_BITS=4).
let testDifficulty = 4

/// A `granary farm` child process on 127.0.0.1 with port 0.
final class FarmerProcess: @unchecked Sendable {
    let storage: String
    let process: ChildProcess
    let port: Int
    let nodeID: Hash256

    init(storage: String, capacity: String = "64M", extra: [String] = []) throws {
        self.storage = storage
        process = try ChildProcess.granary(
            ["farm", "--storage", storage, "--capacity", capacity, "--listen", "127.0.0.1:0"] + extra,
            name: "farmer", environment: ["GRANARY_POW_BITS": "4"])
        let line = try process.waitForLine(timeout: 60) { $0.hasPrefix("granary farmer listening ") }
        let fields = Dictionary(uniqueKeysWithValues: line.split(separator: " ").dropFirst(3).compactMap { field -> (String, String)? in
            let kv = field.split(separator: "=", maxSplits: 1)
            return kv.count == 2 ? (String(kv[0]), String(kv[1])) : nil
        })
        guard let tcp = fields["tcp"], let p = Int(tcp.split(separator: ":").last ?? ""), let node = fields["node"].flatMap(Hash256.init(hex:)) else {
            throw TestSupportError.exited("unexpected listening line: \(line)")
        }
        port = p
        nodeID = node
    }

    /// True once a line containing `text` was logged.
    func logged(_ text: String) -> Bool { process.output.contains { $0.contains(text) } }

    func waitForLog(_ text: String, timeout: TimeInterval = 10) throws {
        _ = try process.waitForLine(timeout: timeout) { $0.contains(text) }
    }

    func connect(_ renter: NodeIdentity) async throws -> TransferClient {
        try await TransferClient.connect(to: "127.0.0.1", port: port, identity: renter, expectedPeer: nodeID,
                                         difficulty: testDifficulty, requestTimeout: .seconds(20))
    }
}

func newRenter() -> NodeIdentity { NodeIdentity.generate(difficulty: testDifficulty) }

func now() -> UInt64 { UInt64(Date().timeIntervalSince1970) }

/// A contract proposal from `renter` to `farmer`.
func proposal(renter: NodeIdentity, farmer: Hash256, allowance: UInt64 = 4 << 20, duration: UInt64 = 3600,
              price: UInt64 = 10, id: Hash256 = .random(), revision: UInt64 = 0, channel: Hash256? = nil) throws -> ContractProposal {
    let start = now()
    return try Contract(id: id, revision: revision, renterID: renter.id, farmerID: farmer, allowanceBytes: allowance,
                        startTime: start, endTime: start + duration, pricePerAudit: price, auditIntervalSeconds: 60,
                        paymentChannelID: channel ?? Blake2b.hash256(id.bytes)).proposal(signedBy: renter)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
func testBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { p in
        var i = 0
        while i < count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            withUnsafeBytes(of: state) { w in
                for j in 0..<min(8, count - i) { p[i + j] = w[j] }
            }
            i += 8
        }
    }
    return out
}

/// A blocking TCP connection speaking raw frames, for tests that must send
/// what a well-behaved client never would.
final class RawConnection {
    private(set) var fd: Int32
    var buffer = ByteBuffer()
    let parser = FrameParser()
    var cipher: SessionCipher?

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw TestSupportError.exited("connect failed: \(errno)") }
    }

    deinit { closeNow() }

    /// Closes the socket (once: a second close could hit a reused descriptor).
    func closeNow() {
        if fd >= 0 { close(fd); fd = -1 }
    }

    func send(_ bytes: [UInt8]) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            done += n
        }
    }

    func send(_ frame: Frame) {
        send(Frame.header(type: frame.type, payloadLength: frame.payload.readableBytes) + Array(frame.payload.readableBytesView))
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// The next frame, or nil when the farmer closed the connection.
    func receive() throws -> Frame? {
        while true {
            if let frame = try parser.next(from: &buffer) { return frame }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { return nil }
            buffer.writeBytes(chunk[0..<n])
        }
    }

    /// Runs the client handshake.
    func handshake(identity: NodeIdentity, expected: Hash256?) throws {
        let hs = ClientHandshake(identity: identity, expectedPeer: expected, difficulty: testDifficulty)
        send(Frame(type: .hello, payload: hs.hello))
        guard let answer = try receive(), answer.type == .hello else { throw TestSupportError.exited("no server hello") }
        cipher = try hs.finish(serverHello: answer.payload).cipher
    }

    /// Seals a request; returns the frame bytes as sent (for replays).
    @discardableResult
    func sendRequest(_ request: Granary_Request) throws -> [UInt8] {
        let frame = cipher!.seal(try request.serializedBytes())
        let bytes = Frame.header(type: frame.type, payloadLength: frame.payload.readableBytes) + Array(frame.payload.readableBytesView)
        send(bytes)
        return bytes
    }

    func receiveResponse() throws -> Granary_Response? {
        guard let frame = try receive() else { return nil }
        guard frame.type == .sealed else { throw TestSupportError.exited("expected sealed frame, got \(frame.type)") }
        return try Granary_Response(serializedBytes: cipher!.open(frame.payload))
    }
}

func request(_ id: UInt64, _ body: Granary_Request.OneOf_Body) -> Granary_Request {
    var r = Granary_Request(); r.requestID = id; r.body = body; return r
}
