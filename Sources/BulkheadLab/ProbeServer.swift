import BulkheadInventory
import BulkheadPolicy
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// TCP listeners and UDP echo sockets inside lab namespaces, all served by one poll loop on one thread.
///
/// Sockets bind the wildcard address (`0.0.0.0`, and `::` with `IPV6_V6ONLY`) so one socket answers
/// every address of the namespace. TCP connections are accepted and closed at once (the handshake is
/// the answer); UDP datagrams are echoed back from the address they were sent to.
public final class ProbeServer: @unchecked Sendable {
    private let loop: ServerLoop

    /// Starts the (idle) serving thread.
    public init() throws {
        loop = try ServerLoop()
    }

    deinit { loop.stop() }

    /// Listens on TCP and UDP ports, v4 and v6, in a lab namespace. Ports already served there are kept.
    public func listen(inNamespace namespace: String, tcp: Set<UInt16> = [], udp: Set<UInt16> = []) throws {
        try loop.listen(in: NamespaceHandle(named: namespace), tcp: tcp, udp: udp)
    }

    /// Closes every socket served in a namespace (for example before removing a container).
    public func close(namespace: String) { loop.close(namespace: namespace) }

    /// The number of listening sockets (TCP and UDP, v4 and v6).
    public var socketCount: Int { loop.socketCount }

    /// Stops the thread and closes every socket. Idempotent.
    public func stop() { loop.stop() }
}

private struct ServerKey: Hashable {
    var namespace: NamespaceIdentity
    var ipv6: Bool
    var tcp: Bool
    var port: UInt16
}

/// One listening socket. Only the serving thread touches its buffers.
private final class ServerSocket {
    let fd: FileDescriptor
    let namespace: String
    let ipv6: Bool
    let tcp: Bool
    private var buffer = [UInt8](repeating: 0, count: 2048)
    private var control = [UInt8](repeating: 0, count: 128)

    init(fd: FileDescriptor, namespace: String, ipv6: Bool, tcp: Bool) {
        self.fd = fd
        self.namespace = namespace
        self.ipv6 = ipv6
        self.tcp = tcp
    }

    func service() {
        if tcp {
            // The client counts as answered once the handshake completes; accept only to free the backlog.
            while true {
                let c = accept(fd.raw, nil, nil)
                if c < 0 { break }
                Glibc.close(c)
            }
        } else {
            while echoOne() {}
        }
    }

    /// Echoes one datagram, replying from the address it was sent to (the peer's socket is connected
    /// to that address and ignores answers from any other). Returns false when nothing is queued.
    private func echoOne() -> Bool {
        var peer = SocketAddress()
        let received: Int = buffer.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { ctl in
                withUnsafeMutableBytes(of: &peer.storage) { name in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                    return withUnsafeMutablePointer(to: &iov) { iovp in
                        var msg = msghdr()
                        msg.msg_name = name.baseAddress
                        msg.msg_namelen = socklen_t(name.count)
                        msg.msg_iov = iovp
                        msg.msg_iovlen = 1
                        msg.msg_control = ctl.baseAddress
                        msg.msg_controllen = ctl.count
                        let n = recvmsg(fd.raw, &msg, Int32(MSG_DONTWAIT))
                        peer.length = msg.msg_namelen
                        if n >= 0 { controlLength = msg.msg_controllen }
                        return n
                    }
                }
            }
        }
        if received < 0 { return errno == EINTR }
        let local = ControlMessages.destination(in: control, length: controlLength, ipv6: ipv6)
        var reply = ControlMessages.sourceInfo(local, ipv6: ipv6)
        buffer.withUnsafeMutableBytes { data in
            reply.withUnsafeMutableBytes { ctl in
                withUnsafeMutableBytes(of: &peer.storage) { name in
                    var iov = iovec(iov_base: data.baseAddress, iov_len: received)
                    withUnsafeMutablePointer(to: &iov) { iovp in
                        var msg = msghdr()
                        msg.msg_name = name.baseAddress
                        msg.msg_namelen = peer.length
                        msg.msg_iov = iovp
                        msg.msg_iovlen = 1
                        msg.msg_control = ctl.count > 0 ? ctl.baseAddress : nil
                        msg.msg_controllen = ctl.count
                        // A failed echo is a lost datagram: the prober times out, as it would on a real network.
                        _ = sendmsg(fd.raw, &msg, Int32(MSG_DONTWAIT))
                    }
                }
            }
        }
        return true
    }

    private var controlLength = 0
}

/// `CMSG_*` are macros Swift cannot import. Linux lays out ancillary data as `cmsghdr { size_t len;
/// int level; int type; }` followed by the data, header and data each padded to `size_t` alignment.
enum ControlMessages {
    static func align(_ n: Int) -> Int { (n + MemoryLayout<Int>.size - 1) & ~(MemoryLayout<Int>.size - 1) }
    static let headerSize = align(MemoryLayout<cmsghdr>.size)

    /// `struct in6_pktinfo` (glibc declares it only under `_GNU_SOURCE`): the address, then the ifindex.
    struct IPv6PacketInfo {
        var address: in6_addr
        var interfaceIndex: UInt32
    }

    /// The ancillary messages of a received message: level, type and data of each.
    static func parse(_ control: [UInt8], length: Int) -> [(level: Int32, type: Int32, data: [UInt8])] {
        var out: [(Int32, Int32, [UInt8])] = []
        var offset = 0
        control.withUnsafeBytes { raw in
            while offset + headerSize <= min(length, raw.count) {
                let header = raw.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                let len = Int(header.cmsg_len)
                guard len >= headerSize, offset + len <= min(length, raw.count) else { return }
                out.append((header.cmsg_level, header.cmsg_type, Array(raw[(offset + headerSize)..<(offset + len)])))
                offset += align(len)
            }
        }
        return out
    }

    /// The local (destination) address of a received datagram, from `IP_PKTINFO` / `IPV6_PKTINFO`.
    static func destination(in control: [UInt8], length: Int, ipv6: Bool) -> [UInt8]? {
        for m in parse(control, length: length) {
            if !ipv6, m.level == Int32(IPPROTO_IP), m.type == Int32(IP_PKTINFO), m.data.count >= MemoryLayout<in_pktinfo>.size {
                let info = m.data.withUnsafeBytes { $0.loadUnaligned(as: in_pktinfo.self) }
                return withUnsafeBytes(of: info.ipi_addr) { Array($0) }
            }
            if ipv6, m.level == Int32(IPPROTO_IPV6), m.type == Int32(IPV6_PKTINFO), m.data.count >= 20 {
                return Array(m.data[0..<16])
            }
        }
        return nil
    }

    /// A control buffer asking the kernel to send from `address` (interface left to the routing table,
    /// which may well be another interface for a container on several networks).
    static func sourceInfo(_ address: [UInt8]?, ipv6: Bool) -> [UInt8] {
        guard let address else { return [] }
        func message<T>(level: Int32, type: Int32, _ payload: T) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: headerSize + align(MemoryLayout<T>.size))
            var header = cmsghdr()
            header.cmsg_len = headerSize + MemoryLayout<T>.size
            header.cmsg_level = level
            header.cmsg_type = type
            out.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: header, toByteOffset: 0, as: cmsghdr.self)
                withUnsafeBytes(of: payload) { p in
                    for (i, b) in p.enumerated() { raw[headerSize + i] = b }
                }
            }
            return out
        }
        if ipv6 {
            var info = IPv6PacketInfo(address: in6_addr(), interfaceIndex: 0)
            withUnsafeMutableBytes(of: &info.address) { for i in 0..<16 { $0[i] = address[i] } }
            return message(level: Int32(IPPROTO_IPV6), type: Int32(IPV6_PKTINFO), info)
        }
        var info = in_pktinfo()
        withUnsafeMutableBytes(of: &info.ipi_spec_dst) { for i in 0..<4 { $0[i] = address[i] } }
        return message(level: Int32(IPPROTO_IP), type: Int32(IP_PKTINFO), info)
    }
}

/// The state shared between the public handle and the serving thread.
private final class ServerLoop: @unchecked Sendable {
    private let lock = NSLock()
    private var sockets: [ServerKey: ServerSocket] = [:]
    private var stopping = false
    private var running = false
    private let wakeRead: FileDescriptor
    private let wakeWrite: FileDescriptor
    private let finished = DispatchSemaphore(value: 0)

    init() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw LabError.system(call: "pipe", target: "probe server wake-up", errno: errno) }
        wakeRead = FileDescriptor(fds[0])
        wakeWrite = FileDescriptor(fds[1])
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        running = true
        let thread = Thread { [self] in serve() }
        thread.name = "bulkhead-probe-server"
        thread.start()
    }

    var socketCount: Int { lock.withLock { sockets.count } }

    func listen(in ns: NamespaceHandle, tcp: Set<UInt16>, udp: Set<UInt16>) throws {
        var added: [ServerKey: ServerSocket] = [:]
        let existing = lock.withLock { Set(sockets.keys) }
        for (isTCP, ports) in [(true, tcp), (false, udp)] {
            for port in ports.sorted() {
                for ipv6 in [false, true] {
                    let key = ServerKey(namespace: ns.identity, ipv6: ipv6, tcp: isTCP, port: port)
                    if existing.contains(key) { continue }
                    added[key] = try makeSocket(in: ns, ipv6: ipv6, tcp: isTCP, port: port)
                }
            }
        }
        guard !added.isEmpty else { return }
        try lock.withLock {
            if stopping { throw LabError.destroyed("probe server") }
            sockets.merge(added) { old, _ in old }
        }
        wake()
    }

    private func makeSocket(in ns: NamespaceHandle, ipv6: Bool, tcp: Bool, port: UInt16) throws -> ServerSocket {
        let family = ipv6 ? AF_INET6 : AF_INET
        let fd = try ns.socket(domain: family, type: tcp ? socketStream : socketDatagram, protocol: 0)
        let what = "\(tcp ? "tcp" : "udp")/\(port) \(ipv6 ? "[::]" : "0.0.0.0") in \(ns.name)"
        if ipv6 {
            // Without V6ONLY the v6 socket would also claim the v4 port and the v4 bind would fail.
            _ = fd.setOption(Int32(IPPROTO_IPV6), IPV6_V6ONLY, Int32(1))
        }
        if tcp {
            _ = fd.setOption(SOL_SOCKET, SO_REUSEADDR, Int32(1))
        } else if ipv6 {
            _ = fd.setOption(Int32(IPPROTO_IPV6), IPV6_RECVPKTINFO, Int32(1))
        } else {
            _ = fd.setOption(Int32(IPPROTO_IP), IP_PKTINFO, Int32(1))
        }
        let e = fd.bind(.any(ipv6: ipv6, port: port))
        guard e == 0 else { throw LabError.system(call: "bind", target: what, errno: e) }
        // A large backlog: hundreds of parallel probes complete their handshakes before we accept.
        if tcp, Glibc.listen(fd.raw, 4096) != 0 { throw LabError.system(call: "listen", target: what, errno: errno) }
        return ServerSocket(fd: fd, namespace: ns.name, ipv6: ipv6, tcp: tcp)
    }

    func close(namespace: String) {
        // The serving thread may hold the sockets in its current poll; they are closed when it lets go.
        lock.withLock { sockets = sockets.filter { $0.value.namespace != namespace } }
        wake()
    }

    func stop() {
        let wasRunning: Bool = lock.withLock {
            defer { stopping = true; running = false }
            return running
        }
        guard wasRunning else { return }
        wake()
        finished.wait()
        lock.withLock { sockets = [:] }
    }

    private func wake() {
        var byte: UInt8 = 1
        _ = write(wakeWrite.raw, &byte, 1)
    }

    private func serve() {
        while true {
            let snapshot: [ServerSocket]? = lock.withLock { stopping ? nil : Array(sockets.values) }
            guard let snapshot else { break }
            var fds = [pollfd(fd: wakeRead.raw, events: Int16(POLLIN), revents: 0)]
            fds += snapshot.map { pollfd(fd: $0.fd.raw, events: Int16(POLLIN), revents: 0) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 { continue }  // EINTR
            if fds[0].revents != 0 {
                var drain = [UInt8](repeating: 0, count: 64)
                while read(wakeRead.raw, &drain, drain.count) > 0 {}
            }
            for (i, s) in snapshot.enumerated() where fds[i + 1].revents != 0 { s.service() }
        }
        finished.signal()
    }
}
