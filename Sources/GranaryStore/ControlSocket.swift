import Foundation
import Logging

/// One line of the control protocol, either way. Requests carry `command`
/// ("status", "flush" or "compact"); answers carry `status`, then `done` or `error`.
public struct ControlMessage: Codable, Sendable {
    public var command: String?
    public var status: StoreStatus?
    public var done: Bool?
    public var error: String?
    /// Facts the mount's owner adds (e.g. the network's view), shown as is.
    public var extra: [String: String]?
    /// The pass a "compact" request ran.
    public var compaction: CompactionReport?
    public init(command: String? = nil, status: StoreStatus? = nil, done: Bool? = nil, error: String? = nil, extra: [String: String]? = nil,
                compaction: CompactionReport? = nil) {
        self.command = command; self.status = status; self.done = done; self.error = error; self.extra = extra
        self.compaction = compaction
    }
}

/// Why the control socket could not be used.
public struct ControlError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

private func makeAddress(_ path: String) -> sockaddr_un? {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &addr.sun_path) { p in
        p.copyBytes(from: bytes)
        p[bytes.count] = 0
    }
    return addr
}

private func writeLine(_ fd: Int32, _ message: ControlMessage) -> Bool {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys  // stable lines for scripts and tests
    guard var data = try? encoder.encode(message) else { return false }
    data.append(0x0a)
    return data.withUnsafeBytes { p in
        var done = 0
        while done < p.count {
            let n = send(fd, p.baseAddress! + done, p.count - done, Int32(MSG_NOSIGNAL))
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

/// Reads newline-terminated lines from a socket.
private final class LineReader {
    let fd: Int32
    var buffer: [UInt8] = []
    init(fd: Int32) { self.fd = fd }
    func next() -> [UInt8]? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0a) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                return line
            }
            if buffer.count > 1 << 20 { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 4096, 0) }
            if n <= 0 { return nil }
            buffer += chunk[0..<n]
        }
    }
}

/// The mount's control socket (`control.sock` in the state folder):
/// `granary status` and `granary flush` talk to it in JSON lines.
public final class ControlServer: @unchecked Sendable {
    public let path: String
    let store: GranaryStore
    let extra: @Sendable () -> [String: String]
    /// Runs after a flush that finished (the metadata snapshot); its
    /// answer is shown to `granary flush`, its error fails the flush.
    let afterFlush: (@Sendable () throws -> String)?
    private let fd: Int32
    private let log = Logger(label: "granary.control")

    public init(stateDirectory: String, store: GranaryStore, extra: @escaping @Sendable () -> [String: String] = { [:] },
                afterFlush: (@Sendable () throws -> String)? = nil) throws {
        path = stateDirectory + "/control.sock"
        self.store = store
        self.extra = extra
        self.afterFlush = afterFlush
        guard var addr = makeAddress(path) else { throw ControlError("control socket path too long: \(path)") }
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("socket: \(String(cString: strerror(errno)))") }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0, listen(fd, 16) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ControlError("cannot listen on \(path): \(String(cString: strerror(e)))")
        }
        chmod(path, 0o600)
        let t = Thread { [self] in acceptLoop() }
        t.name = "granary-control"
        t.start()
    }

    public func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        unlink(path)
    }

    private func acceptLoop() {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 { if errno == EINTR { continue }; return }
            let t = Thread { [self] in serve(c) }
            t.start()
        }
    }

    private func serve(_ c: Int32) {
        defer { Glibc.close(c) }
        let reader = LineReader(fd: c)
        guard let line = reader.next(), let req = try? JSONDecoder().decode(ControlMessage.self, from: Data(line)) else {
            _ = writeLine(c, ControlMessage(error: "malformed request: expected one JSON line with \"command\""))
            return
        }
        switch req.command {
        case "status":
            _ = writeLine(c, ControlMessage(status: store.status(), done: true, extra: extra()))
        case "flush":
            var alive = true
            let ok = store.flush { st in
                if alive { alive = writeLine(c, ControlMessage(status: st)) }
            }
            guard ok, let afterFlush else {
                _ = writeLine(c, ControlMessage(status: store.status(), done: ok, error: ok ? nil : "flush did not finish"))
                return
            }
            do {
                let note = try afterFlush()
                _ = writeLine(c, ControlMessage(status: store.status(), done: true, extra: ["flush.metadata": note]))
            } catch {
                _ = writeLine(c, ControlMessage(status: store.status(), done: false,
                                                error: "data is durable, but the metadata snapshot failed: \(error)"))
            }
        case "compact":
            let report = store.compact()
            let failed = report == nil ? "the mount is stopping; compaction did not run" :
                (report!.errors.isEmpty ? nil : report!.errors.joined(separator: "; "))
            _ = writeLine(c, ControlMessage(status: store.status(), done: failed == nil, error: failed, extra: extra(), compaction: report))
        default:
            _ = writeLine(c, ControlMessage(error: "unknown command \(req.command ?? "(none)"): use status, flush or compact"))
        }
    }
}

/// The client side, for `granary status`, `flush` and `compact`.
public enum ControlClient {
    /// Sends `command` and calls `onMessage` for every line answered.
    public static func request(stateDirectory: String, command: String, onMessage: (ControlMessage) -> Void) throws {
        let path = stateDirectory + "/control.sock"
        guard var addr = makeAddress(path) else { throw ControlError("control socket path too long: \(path)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard rc == 0 else {
            throw ControlError("no mount is running with state folder \(stateDirectory) (cannot connect to \(path): \(String(cString: strerror(errno))))")
        }
        guard writeLine(fd, ControlMessage(command: command)) else { throw ControlError("cannot send to \(path)") }
        let reader = LineReader(fd: fd)
        while let line = reader.next() {
            guard let m = try? JSONDecoder().decode(ControlMessage.self, from: Data(line)) else {
                throw ControlError("malformed answer from the mount")
            }
            onMessage(m)
            if m.done != nil || m.error != nil { return }
        }
    }
}
