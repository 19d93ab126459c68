import BulkheadInventory
#if canImport(Glibc)
import Glibc
#endif

/// A connection kept open between two lab namespaces, for proving what happens to established
/// traffic when the rules change: one TCP connection, or one UDP socket pair that keeps
/// exchanging datagrams (and so one conntrack entry).
///
/// Both ends belong to this object and are driven from the calling thread: `exchange` sends from
/// the client, waits for the server to receive and echo, and waits for the echo. Nothing runs in
/// the background, so there is nothing to synchronise with sleeps.
public final class LongLivedExchange: @unchecked Sendable {
    public enum Kind: String, Sendable, Hashable { case tcp, udp }

    /// What one exchange came to.
    public enum Outcome: Sendable, Hashable, CustomStringConvertible {
        /// The server received the payload and its echo came back.
        case answered
        /// Nothing reached the other side, or no echo came back, within the guard (dropped).
        case noAnswer
        /// The connection was reset or closed (errno, 0 for an orderly close).
        case reset(errno: Int32)

        public var description: String {
            switch self {
            case .answered: return "answered"
            case .noAnswer: return "no answer"
            case .reset(let e): return e == 0 ? "closed" : "reset (\(String(cString: strerror(e))))"
            }
        }
    }

    public let kind: Kind
    public let address: IPAddress
    public let port: UInt16
    private let client: FileDescriptor
    /// TCP: the accepted socket; UDP: the bound server socket.
    private let server: FileDescriptor
    private var exchanges = 0

    /// Opens the connection from `clientNamespace` to `address`:`port`, served in
    /// `serverNamespace`, and makes one exchange (so the connection is established and tracked
    /// before the caller changes anything). Throws when that first exchange is not answered
    /// within `guardTimeout`.
    public init(_ kind: Kind, from clientNamespace: String, to serverNamespace: String, address: IPAddress, port: UInt16,
                guardTimeout: Duration = .seconds(5)) throws {
        self.kind = kind
        self.address = address
        self.port = port
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let type = Int32(kind == .tcp ? SOCK_STREAM.rawValue : SOCK_DGRAM.rawValue)
        let serverNS = try NamespaceHandle(named: serverNamespace)
        let clientNS = try NamespaceHandle(named: clientNamespace)
        let listening = try serverNS.socket(domain: family, type: type, protocol: 0)
        var one: Int32 = 1
        _ = setsockopt(listening.raw, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let target = SocketAddress(address, port: port)
        try Self.check(target.withPointer { bind(listening.raw, $0, $1) }, "bind", "\(address):\(port) in \(serverNamespace)")
        let clientSocket = try clientNS.socket(domain: family, type: type, protocol: 0)
        let limit = Int32(clamping: guardTimeout.components.seconds * 1000 + guardTimeout.components.attoseconds / 1_000_000_000_000_000)
        if kind == .tcp {
            try Self.check(listen(listening.raw, 1), "listen", "\(address):\(port)")
            _ = fcntl(clientSocket.raw, F_SETFL, fcntl(clientSocket.raw, F_GETFL) | O_NONBLOCK)
            let r = target.withPointer { connect(clientSocket.raw, $0, $1) }
            if r < 0 && errno != EINPROGRESS { throw LabError.system(call: "connect", target: "\(address):\(port)", errno: errno) }
            guard Self.wait(listening.raw, limit) else {
                throw LabError.system(call: "accept (hang guard: no connection within \(guardTimeout))", target: "\(address):\(port)", errno: ETIMEDOUT)
            }
            let accepted = accept(listening.raw, nil, nil)
            try Self.check(accepted, "accept", "\(address):\(port)")
            _ = fcntl(clientSocket.raw, F_SETFL, fcntl(clientSocket.raw, F_GETFL) & ~O_NONBLOCK)
            server = FileDescriptor(accepted)
        } else {
            try Self.check(target.withPointer { connect(clientSocket.raw, $0, $1) }, "connect", "\(address):\(port)")
            server = listening
        }
        client = clientSocket
        let first = exchange(guardTimeout: guardTimeout)
        guard first == .answered else {
            throw LabError.system(call: "first \(kind.rawValue) exchange (\(first))", target: "\(address):\(port)", errno: ETIMEDOUT)
        }
    }

    /// Sends one payload from the client and waits, up to `guardTimeout` for each leg, for the
    /// server to receive it and for its echo to come back.
    public func exchange(guardTimeout: Duration = .seconds(1)) -> Outcome {
        exchanges += 1
        let limit = Int32(clamping: guardTimeout.components.seconds * 1000 + guardTimeout.components.attoseconds / 1_000_000_000_000_000)
        let payload = Array("exchange \(exchanges)".utf8)
        let sent = payload.withUnsafeBytes { send(client.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if sent < 0 { return errno == ECONNREFUSED && kind == .udp ? .noAnswer : .reset(errno: errno) }
        guard Self.wait(server.raw, limit) else { return .noAnswer }
        var buffer = [UInt8](repeating: 0, count: 2048)
        if kind == .tcp {
            let n = read(server.raw, &buffer, buffer.count)
            if n <= 0 { return .reset(errno: n < 0 ? errno : 0) }
            guard write(server.raw, buffer, n) == n else { return .reset(errno: errno) }
        } else {
            var peer = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(server.raw, &buffer, buffer.count, 0, $0, &length) }
            }
            if n < 0 { return .reset(errno: errno) }
            let echoed = withUnsafePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(server.raw, buffer, n, 0, $0, length) }
            }
            if echoed < 0 { return .reset(errno: errno) }
        }
        guard Self.wait(client.raw, limit) else { return .noAnswer }
        let n = recv(client.raw, &buffer, buffer.count, 0)
        if n > 0 { return .answered }
        if n < 0 && errno == ECONNREFUSED && kind == .udp { return .noAnswer }
        return .reset(errno: n < 0 ? errno : 0)
    }

    /// Waits for `fd` to be readable (or to have an error queued). False after `milliseconds`.
    private static func wait(_ fd: Int32, _ milliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let r = poll(&pfd, 1, milliseconds)
            if r < 0 && errno == EINTR { continue }
            return r > 0
        }
    }

    private static func check(_ result: Int32, _ call: String, _ target: String) throws {
        if result < 0 { throw LabError.system(call: call, target: target, errno: errno) }
    }
}
