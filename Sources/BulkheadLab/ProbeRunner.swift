import BulkheadInventory
import BulkheadPolicy
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starts servers in a lab and runs probes between its parties, entirely in this process.
///
/// Every probe is a non-blocking socket created inside the sender's namespace (no `ip netns exec`),
/// and one poll loop on the calling thread drives all of them at once, so a batch of hundreds takes
/// about one timeout when some are dropped and a few milliseconds when none are.
///
/// ```swift
/// let runner = ProbeRunner(lab: lab)
/// let db = lab.address(of: "shop-db-1", on: "shop_default")!
/// let probes = [Probe(from: .container("shop-api-1"), to: db, traffic: .tcp(5432))]
/// try runner.startServers(for: probes)
/// for r in try runner.run(probes) { print(r) }   // shop-api-1 → 172.20.0.6 tcp/5432: answered
/// ```
public final class ProbeRunner: @unchecked Sendable {
    public struct Options: Sendable, Hashable {
        /// How long a probe waits for an answer before it counts as dropped.
        public var timeout: Duration
        /// How many probes are in flight at once (each holds a socket).
        public var maxInFlight: Int

        public init(timeout: Duration = .milliseconds(300), maxInFlight: Int = 256) {
            self.timeout = timeout
            self.maxInFlight = max(1, maxInFlight)
        }
    }

    public let lab: Lab
    public let options: Options
    private let lock = NSLock()
    private var server: ProbeServer?
    private static let batches = Counter()

    public init(lab: Lab, options: Options = Options()) {
        self.lab = lab
        self.options = options
    }

    /// Starts a TCP listener and a UDP echo socket (v4 and v6) in the namespace that owns each probe's
    /// destination, for each TCP and UDP port the probes use. Destinations no party owns get nothing.
    /// Idempotent: ports already served are kept.
    public func startServers(for probes: [Probe]) throws {
        var ports: [Party: (tcp: Set<UInt16>, udp: Set<UInt16>)] = [:]
        for p in probes {
            guard let owner = lab.owner(of: p.to) else { continue }
            switch p.traffic {
            case .tcp(let port): ports[owner, default: ([], [])].tcp.insert(port)
            case .udp(let port): ports[owner, default: ([], [])].udp.insert(port)
            case .icmp, .other: break
            }
        }
        for (party, set) in ports.sorted(by: { $0.key < $1.key }) {
            try startServers(tcp: set.tcp, udp: set.udp, on: [party])
        }
    }

    /// Starts servers on the given ports in the namespaces of `parties`.
    public func startServers(tcp: Set<UInt16> = [], udp: Set<UInt16> = [], on parties: [Party]) throws {
        let running = try lock.withLock {
            if let server { return server }
            let s = try ProbeServer()
            server = s
            return s
        }
        for party in parties.sorted() {
            guard let ns = lab.namespace(of: party) else { throw ProbeError.unknownParty(party) }
            try running.listen(inNamespace: ns, tcp: tcp, udp: udp)
        }
    }

    /// Closes the servers of one party (call before `Lab.removeContainer`, so no socket keeps its
    /// namespace alive).
    public func stopServers(on party: Party) {
        guard let ns = lab.namespace(of: party) else { return }
        lock.withLock { server }?.close(namespace: ns)
    }

    /// Stops every server. Also done on deinit.
    public func stopServers() {
        let s = lock.withLock { defer { server = nil }; return server }
        s?.stop()
    }

    deinit { stopServers() }

    /// Runs one probe.
    public func run(_ probe: Probe) throws -> ProbeResult { try run([probe])[0] }

    /// Runs probes in parallel; results come back in the order of `probes`.
    /// - Throws: `ProbeError` when a probe cannot be attempted at all (unknown party, unsupported
    ///   traffic, a namespace or socket that cannot be opened). Dropped, refused and unreachable
    ///   probes are results, not errors.
    public func run(_ probes: [Probe]) throws -> [ProbeResult] {
        let layout = lab.layout
        var namespaces: [Party: NamespaceHandle] = [:]
        var sources: [Party: (v4: IPAddress?, v6: IPAddress?)] = [:]
        for p in probes {
            if case .other = p.traffic { throw ProbeError.unsupportedTraffic(p) }
            if namespaces[p.from] == nil {
                guard let name = lab.namespace(of: p.from) else { throw ProbeError.unknownParty(p.from) }
                do { namespaces[p.from] = try NamespaceHandle(named: name) } catch { throw ProbeError.lab(error) }
            }
            if p.from == .world {
                // The world owns several addresses; sending from the first of the family keeps results
                // reproducible (the kernel would pick by its own source-selection rules).
                let v4 = layout.world.addresses.first { $0.isIPv4 }?.address
                let v6 = layout.world.addresses.first { !$0.isIPv4 }?.address
                sources[.world] = (v4, v6)
                if (p.to.isIPv4 ? v4 : v6) == nil { throw ProbeError.noSourceAddress(p) }
            }
        }
        let batch = ProbeBatch(probes: probes, namespaces: namespaces, sources: sources, options: options,
                               id: UInt16(truncatingIfNeeded: Self.batches.next() &* 7919 &+ Int(getpid())))
        do {
            return try batch.run()
        } catch let e as LabError {
            throw ProbeError.lab(e)
        }
    }
}

/// The sockets and state of one `run` call. Single-threaded: only the calling thread touches it.
private final class ProbeBatch {
    let probes: [Probe]
    let namespaces: [Party: NamespaceHandle]
    let sources: [Party: (v4: IPAddress?, v6: IPAddress?)]
    let timeout: UInt64
    let maxInFlight: Int
    let id: UInt16
    var results: [ProbeResult?]

    enum Kind { case tcp, udp(token: [UInt8]) }
    struct Active { let index: Int; let fd: FileDescriptor; let kind: Kind; let start: UInt64 }
    /// In-flight TCP/UDP probes by file descriptor.
    var active: [Int32: Active] = [:]

    struct EchoKey: Hashable { let id: UInt16; let sequence: UInt16 }
    struct Echo { let index: Int; let start: UInt64; let socket: ICMPSocketKey }
    struct ICMPSocketKey: Hashable { let party: Party; let ipv6: Bool; var interface: String? = nil }
    /// One raw socket per (sender, family): every raw ICMP socket in a namespace sees every ICMP packet,
    /// so sharing one avoids n² copies; replies are matched by (id, sequence) and sender.
    var icmpSockets: [ICMPSocketKey: FileDescriptor] = [:]
    var echoes: [EchoKey: Echo] = [:]
    var buffer = [UInt8](repeating: 0, count: 2048)

    init(probes: [Probe], namespaces: [Party: NamespaceHandle], sources: [Party: (v4: IPAddress?, v6: IPAddress?)],
         options: ProbeRunner.Options, id: UInt16) {
        self.probes = probes
        self.namespaces = namespaces
        self.sources = sources
        let c = options.timeout.components
        timeout = UInt64(max(0, c.seconds)) * 1_000_000_000 + UInt64(max(0, c.attoseconds) / 1_000_000_000)
        maxInFlight = options.maxInFlight
        self.id = id
        results = Array(repeating: nil, count: probes.count)
    }

    func run() throws -> [ProbeResult] {
        var next = 0
        while next < probes.count || !active.isEmpty || !echoes.isEmpty {
            while active.count + echoes.count < maxInFlight, next < probes.count {
                try start(next)
                next += 1
            }
            if active.isEmpty && echoes.isEmpty { continue }
            wait()
            expire()
        }
        return results.map { $0! }
    }

    // MARK: Starting

    private func source(for p: Probe) -> IPAddress? {
        guard let s = sources[p.from] else { return nil }
        return p.to.isIPv4 ? s.v4 : s.v6
    }

    private func start(_ i: Int) throws {
        let p = probes[i]
        let ns = namespaces[p.from]!
        let ipv6 = !p.to.isIPv4
        let family = ipv6 ? AF_INET6 : AF_INET
        let now = monotonicNanoseconds()
        switch p.traffic {
        case .tcp(let port):
            let fd = try ns.socket(domain: family, type: socketStream, protocol: 0)
            if let e = bindDevice(fd, p) { return finish(i, errno: e, start: now) }
            // Abort on close: no TIME_WAIT left behind by hundreds of probes.
            _ = fd.setOption(SOL_SOCKET, SO_LINGER, linger(l_onoff: 1, l_linger: 0))
            QueuedError.enable(on: fd, ipv6: ipv6)
            if let e = bindSource(fd, p), e != 0 { return finish(i, errno: e, start: now) }
            let e = fd.connect(SocketAddress(p.to, port: port))
            if e == 0 { return finish(i, .answered, nil, start: now) }
            if e != EINPROGRESS { return finish(i, errno: e, start: now) }
            active[fd.raw] = Active(index: i, fd: fd, kind: .tcp, start: now)
        case .udp(let port):
            let fd = try ns.socket(domain: family, type: socketDatagram, protocol: 0)
            if let e = bindDevice(fd, p) { return finish(i, errno: e, start: now) }
            QueuedError.enable(on: fd, ipv6: ipv6)
            if let e = bindSource(fd, p), e != 0 { return finish(i, errno: e, start: now) }
            // Connected, so the kernel reports ICMP errors (port unreachable → ECONNREFUSED) on this
            // socket and drops datagrams from anyone but the destination.
            let e = fd.connect(SocketAddress(p.to, port: port))
            if e != 0 { return finish(i, errno: e, start: now) }
            let token = Array("bulkhead probe \(id) \(i)".utf8)
            if send(fd.raw, token, token.count, Int32(MSG_DONTWAIT)) < 0 { return finish(i, errno: errno, start: now) }
            active[fd.raw] = Active(index: i, fd: fd, kind: .udp(token: token), start: now)
        case .icmp:
            let key = ICMPSocketKey(party: p.from, ipv6: ipv6, interface: p.interface)
            let fd = try icmpSocket(key, ns: ns, probe: p)
            let echo = EchoKey(id: id &+ UInt16(truncatingIfNeeded: i >> 16), sequence: UInt16(truncatingIfNeeded: i))
            let packet = ICMP.echoRequest(ipv6: ipv6, id: echo.id, sequence: echo.sequence, payload: Array("bulkhead probe".utf8))
            let dest = SocketAddress(p.to)
            let sent = dest.withPointer { sendto(fd.raw, packet, packet.count, Int32(MSG_DONTWAIT), $0, $1) }
            if sent < 0 { return finish(i, errno: errno, start: now) }
            echoes[echo] = Echo(index: i, start: now, socket: key)
        case .other:
            finish(i, .unreachable, "unsupported traffic", start: now)
        }
    }

    /// A link-local probe leaves through its interface (SO_BINDTODEVICE): the kernel then needs no
    /// scope id and picks the interface's link-local source. Returns an errno on failure.
    private func bindDevice(_ fd: FileDescriptor, _ p: Probe) -> Int32? {
        guard let name = p.interface else { return nil }
        var bytes = Array(name.utf8.prefix(15)) + [0]
        let r = setsockopt(fd.raw, SOL_SOCKET, SO_BINDTODEVICE, &bytes, socklen_t(bytes.count))
        return r == 0 ? nil : errno
    }

    private func bindSource(_ fd: FileDescriptor, _ p: Probe) -> Int32? {
        guard p.interface == nil, let s = source(for: p) else { return nil }
        return fd.bind(SocketAddress(s))
    }

    private func icmpSocket(_ key: ICMPSocketKey, ns: NamespaceHandle, probe: Probe) throws -> FileDescriptor {
        if let fd = icmpSockets[key] { return fd }
        let fd = try ns.socket(domain: key.ipv6 ? AF_INET6 : AF_INET, type: socketRaw,
                               protocol: key.ipv6 ? Int32(IPPROTO_ICMPV6) : Int32(IPPROTO_ICMP))
        if let e = bindDevice(fd, probe) {
            throw LabError.system(call: "setsockopt(SO_BINDTODEVICE)", target: "ICMP socket of \(key.party) in \(ns.name)", errno: e)
        }
        if let e = bindSource(fd, probe), e != 0 {
            throw LabError.system(call: "bind", target: "ICMP socket of \(key.party) in \(ns.name)", errno: e)
        }
        icmpSockets[key] = fd
        return fd
    }

    // MARK: Finishing

    private func finish(_ i: Int, _ outcome: ProbeOutcome, _ detail: String?, start: UInt64) {
        guard results[i] == nil else { return }
        let elapsed = monotonicNanoseconds() - start
        results[i] = ProbeResult(probe: probes[i], outcome: outcome, detail: detail, elapsed: .nanoseconds(Int64(elapsed)))
    }

    /// An error returned by connect or send itself: it never left this host.
    private func finish(_ i: Int, errno e: Int32, start: UInt64) {
        let detail = "\(errnoName(e)): \(String(cString: strerror(e)))"
        switch e {
        case ECONNREFUSED: finish(i, .refused, detail, start: start)
        // Netfilter drops in the sender's own output path surface as EPERM on connect/send.
        case EPERM, EACCES: finish(i, .blockedLocally, detail, start: start)
        default: finish(i, .unreachable, detail, start: start)
        }
    }

    /// An error reported later, from the network: prefer the queued ICMP error, which says who sent
    /// what; EACCES here is an ICMP "administratively prohibited", not a local drop.
    private func finish(_ a: Active, asyncErrno e: Int32, ipv6: Bool) {
        if let q = QueuedError.read(from: a.fd, ipv6: ipv6) {
            return finish(a.index, q.outcome, q.detail, start: a.start)
        }
        let detail = "\(errnoName(e)): \(String(cString: strerror(e)))"
        switch e {
        case ECONNREFUSED: finish(a.index, .refused, detail, start: a.start)
        case ETIMEDOUT: finish(a.index, .timedOut, detail, start: a.start)
        default: finish(a.index, .unreachable, detail, start: a.start)
        }
    }

    // MARK: Waiting

    private func wait() {
        let now = monotonicNanoseconds()
        var earliest = UInt64.max
        for a in active.values { earliest = min(earliest, a.start + timeout) }
        for e in echoes.values { earliest = min(earliest, e.start + timeout) }
        let waitMs = earliest <= now ? 0 : Int32(min((earliest - now + 999_999) / 1_000_000, 60_000))

        var entries: [(fd: Int32, icmp: ICMPSocketKey?)] = active.keys.map { ($0, nil) }
        let wantedICMP = Set(echoes.values.map(\.socket))
        for key in wantedICMP { entries.append((icmpSockets[key]!.raw, key)) }
        var fds = entries.map { e -> pollfd in
            let events: Int16
            if e.icmp == nil, case .tcp = active[e.fd]!.kind { events = Int16(POLLOUT) } else { events = Int16(POLLIN) }
            return pollfd(fd: e.fd, events: events, revents: 0)
        }
        let n = poll(&fds, nfds_t(fds.count), waitMs)
        guard n > 0 else { return }
        for (k, pfd) in fds.enumerated() where pfd.revents != 0 {
            if let key = entries[k].icmp {
                readICMP(key)
            } else if let a = active[pfd.fd] {
                service(a, revents: pfd.revents)
            }
        }
    }

    private func service(_ a: Active, revents: Int16) {
        let ipv6 = !probes[a.index].to.isIPv4
        switch a.kind {
        case .tcp:
            let e = a.fd.pendingError
            if e != 0 {
                finish(a, asyncErrno: e, ipv6: ipv6)
            } else if revents & Int16(POLLOUT) != 0 {
                finish(a.index, .answered, nil, start: a.start)
            } else if let q = QueuedError.read(from: a.fd, ipv6: ipv6) {
                // A soft ICMP error: the kernel would keep retrying the SYN, but the answer is in.
                finish(a.index, q.outcome, q.detail, start: a.start)
            } else {
                return
            }
            active[a.fd.raw] = nil
        case .udp(let token):
            while true {
                let n = recv(a.fd.raw, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n < 0 {
                    let e = errno
                    if e == EAGAIN || e == EWOULDBLOCK || e == EINTR { return }
                    finish(a, asyncErrno: e, ipv6: ipv6)
                    active[a.fd.raw] = nil
                    return
                }
                if n == token.count, Array(buffer[0..<n]) == token {
                    finish(a.index, .answered, nil, start: a.start)
                    active[a.fd.raw] = nil
                    return
                }
            }
        }
    }

    private func readICMP(_ key: ICMPSocketKey) {
        guard let fd = icmpSockets[key] else { return }
        while true {
            var from = SocketAddress()
            let n = withUnsafeMutableBytes(of: &from.storage) { raw in
                var len = socklen_t(raw.count)
                let r = recvfrom(fd.raw, &buffer, buffer.count, Int32(MSG_DONTWAIT),
                                 raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len)
                return r
            }
            if n < 0 { return }
            let packet = Array(buffer[0..<n])
            let message: ICMP.Message?
            if key.ipv6 {
                guard let sender = from.address else { continue }
                message = ICMP.parseV6(packet, from: sender)
            } else {
                message = ICMP.parseV4(packet)
            }
            switch message {
            case .reply(let id, let seq, let sender)?:
                let k = EchoKey(id: id, sequence: seq)
                guard let echo = echoes[k], echo.socket == key, probes[echo.index].to == sender else { continue }
                finish(echo.index, .answered, nil, start: echo.start)
                echoes[k] = nil
            case .error(let id, let seq, let destination, let sender, let type, let code)?:
                let k = EchoKey(id: id, sequence: seq)
                guard let echo = echoes[k], echo.socket == key, probes[echo.index].to == destination else { continue }
                finish(echo.index, .unreachable, ICMP.describe(type: type, code: code, ipv6: key.ipv6) + " from \(sender)", start: echo.start)
                echoes[k] = nil
            case nil:
                continue
            }
        }
    }

    private func expire() {
        let now = monotonicNanoseconds()
        for (fd, a) in active where now >= a.start + timeout {
            finish(a.index, .timedOut, nil, start: a.start)
            active[fd] = nil
        }
        for (k, e) in echoes where now >= e.start + timeout {
            finish(e.index, .timedOut, nil, start: e.start)
            echoes[k] = nil
        }
    }
}
