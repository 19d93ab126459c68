import BulkheadInventory
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One network interface as rtnetlink reports it (`RTM_NEWLINK`).
public struct LinkInfo: Sendable, Hashable {
    public var index: Int32
    public var name: String
    /// `IFLA_ADDRESS`, lower-case `aa:bb:cc:dd:ee:ff` for Ethernet-like links.
    public var mac: String?
    /// `IFLA_LINK`: for a veth, the ifindex of its peer (in the peer's namespace).
    public var peerIndex: Int32?
    /// `IFLA_MASTER`: the bridge this interface is a port of.
    public var master: Int32?
}

/// Reads interfaces with an `RTM_GETLINK` dump on a `NETLINK_ROUTE` socket, and finds the host
/// side of a container's veths: the container interface's `IFLA_LINK` is the ifindex of the
/// host-side peer, whose name is the bridge port (issue 8: port binding).
///
/// Every byte from the kernel is bounds-checked; a malformed reply is an error, never a crash.
public enum LinkTable {
    // include/uapi/linux/rtnetlink.h, if_link.h, netlink.h
    static let rtmNewLink: UInt16 = 16, rtmGetLink: UInt16 = 18
    static let nlmsgError: UInt16 = 2, nlmsgDone: UInt16 = 3
    static let iflaAddress: UInt16 = 1, iflaIfname: UInt16 = 3, iflaLink: UInt16 = 5, iflaMaster: UInt16 = 10

    /// The links of network namespace `namespace` (a name under /var/run/netns or an absolute
    /// path such as Docker's `/var/run/docker/netns/…` or `/proc/PID/ns/net`; nil: the caller's).
    /// The socket is opened inside the namespace (a synchronous `setns` on the calling thread,
    /// undone before returning) and read from outside it.
    public static func dump(namespace: String? = nil) throws -> [LinkInfo] {
        let fd: Int32
        if let namespace {
            fd = try withNamespaceEntered(namespace) { try openSocket() }
        } else {
            fd = try openSocket()
        }
        defer { close(fd) }
        return try dump(fd: fd, what: namespace ?? "the current namespace")
    }

    /// Host-side port of each of a container's veths, by the container interface's MAC
    /// (lower case): `[mac: port name]`. Links of the container without a peer are left out.
    /// - Parameters:
    ///   - containerNamespace: the container's netns path (Docker's `SandboxKey`, or `/proc/PID/ns/net`).
    ///   - hostLinks: the host's links (`dump()` in the namespace holding the bridges).
    public static func hostPorts(containerNamespace: String, hostLinks: [LinkInfo]) throws -> [String: String] {
        let byIndex = Dictionary(hostLinks.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [String: String] = [:]
        for link in try dump(namespace: containerNamespace) {
            // Both ends must name each other (ifindexes are per namespace).
            guard let mac = link.mac, let peer = link.peerIndex, peer != link.index, let host = byIndex[peer],
                  host.peerIndex == link.index else { continue }
            out[mac] = host.name
        }
        return out
    }

    static func openSocket() throws -> Int32 {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0 /* NETLINK_ROUTE */)
        if fd < 0 { throw NetfilterError.systemCall(call: "socket(AF_NETLINK, 0 /* NETLINK_ROUTE */)", errno: errno, context: "listing network interfaces") }
        // A hang guard: a dump that never ends fails after 5 s instead of blocking the caller.
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func dump(fd: Int32, what: String) throws -> [LinkInfo] {
        // A dump that links changed under (NLM_F_DUMP_INTR: veths come and go while containers
        // start and stop) may miss some: a container whose veth was left out would be unbound and
        // its frames dropped. Ask again; only a consistent dump counts.
        for attempt in 1...5 {
            let (links, interrupted) = try dumpOnce(fd: fd, what: what, sequence: UInt32(attempt))
            if !interrupted { return links }
        }
        throw NetfilterError.malformedReply("the link dump of \(what) was interrupted by changes 5 times in a row (NLM_F_DUMP_INTR)")
    }

    static func dumpOnce(fd: Int32, what: String, sequence: UInt32) throws -> (links: [LinkInfo], interrupted: Bool) {
        // nlmsghdr (16) + ifinfomsg (16, family AF_UNSPEC): every link.
        var request = [UInt8](repeating: 0, count: 32)
        func put32(_ v: UInt32, at i: Int) { for k in 0..<4 { request[i + k] = UInt8((v >> (8 * UInt32(k))) & 0xff) } }
        func put16(_ v: UInt16, at i: Int) { request[i] = UInt8(v & 0xff); request[i + 1] = UInt8(v >> 8) }
        put32(32, at: 0)
        put16(rtmGetLink, at: 4)
        put16(0x1 | 0x300, at: 6)  // NLM_F_REQUEST | NLM_F_DUMP
        put32(sequence, at: 8)
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        if sent != request.count {
            throw NetfilterError.systemCall(call: "send(RTM_GETLINK)", errno: errno, context: "listing network interfaces of \(what)")
        }
        var links: [LinkInfo] = []
        var interrupted = false
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw NetfilterError.systemCall(call: "recv(RTM_GETLINK)", errno: errno, context: "listing network interfaces of \(what)")
            }
            if n == 0 { throw NetfilterError.malformedReply("rtnetlink closed the link dump of \(what) early") }
            let part = try parse(buffer[0..<n], what: what)
            links += part.links
            interrupted = interrupted || part.interrupted
            if part.done { return (links, interrupted) }
        }
    }

    /// Parses one datagram of the dump; `done` when it held `NLMSG_DONE`.
    static func parse(_ data: ArraySlice<UInt8>, what: String) throws -> (links: [LinkInfo], done: Bool, interrupted: Bool) {
        func u16(_ i: Int) -> UInt16 { UInt16(data[i]) | UInt16(data[i + 1]) << 8 }
        func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) | UInt32(u16(i + 2)) << 16 }
        var links: [LinkInfo] = []
        var interrupted = false
        var at = data.startIndex
        while at + 16 <= data.endIndex {
            let length = Int(u32(at)), type = u16(at + 4)
            if u16(at + 6) & 0x10 != 0 { interrupted = true }  // NLM_F_DUMP_INTR
            guard length >= 16, at + length <= data.endIndex else {
                throw NetfilterError.malformedReply("rtnetlink message of \(length) bytes in a \(data.count)-byte reply (link dump of \(what))")
            }
            let end = at + length
            switch type {
            case nlmsgDone:
                return (links, true, interrupted)
            case nlmsgError:
                let code = at + 20 <= end ? -Int32(bitPattern: u32(at + 16)) : 0
                throw NetfilterError.systemCall(call: "RTM_GETLINK", errno: code, context: "listing network interfaces of \(what)")
            case rtmNewLink where length >= 32:
                var link = LinkInfo(index: Int32(bitPattern: u32(at + 20)), name: "")
                var a = at + 32
                while a + 4 <= end {
                    let alen = Int(u16(a)), atype = u16(a + 2) & 0x3fff
                    guard alen >= 4, a + alen <= end else { break }
                    let payload = data[(a + 4)..<(a + alen)]
                    switch atype {
                    case iflaIfname:
                        link.name = String(decoding: payload.prefix { $0 != 0 }, as: UTF8.self)
                    case iflaAddress where payload.count == 6:
                        link.mac = payload.map { b in let h = String(b, radix: 16); return h.count == 1 ? "0" + h : h }.joined(separator: ":")
                    case iflaLink where payload.count >= 4:
                        link.peerIndex = Int32(bitPattern: u32(payload.startIndex))
                    case iflaMaster where payload.count >= 4:
                        link.master = Int32(bitPattern: u32(payload.startIndex))
                    default:
                        break
                    }
                    a += (alen + 3) & ~3
                }
                links.append(link)
            default:
                break
            }
            at += (length + 3) & ~3
        }
        return (links, false, interrupted)
    }
}

/// `PortFinder` over rtnetlink: bridges and their ports from a link dump of the current
/// namespace, a container's veth peers from a dump of its namespace (entered on the calling thread
/// only while the socket is opened).
///
/// `sandboxPorts()` reads every namespace file in `sandboxDirectory` once (a file is one
/// container's lifetime: cached by name and inode), so a reconcile costs one host link dump plus
/// one dump per container started since, and no Docker API call.
public final class NetlinkPortFinder: PortFinder, @unchecked Sendable {
    /// The namespace holding the bridges (nil: the caller's), as the agent's `--netns`.
    public let namespace: String?
    /// Where the runtime keeps its containers' network namespaces.
    public let sandboxDirectory: String
    private let lock = NSLock()
    /// Namespace file (name, inode) → its interfaces' MAC → host-side port name (and ifindex).
    private var scanned: [String: (inode: UInt64, ports: [String: (index: Int32, name: String)])] = [:]

    public init(namespace: String? = nil, sandboxDirectory: String = "/var/run/docker/netns") {
        self.namespace = namespace
        self.sandboxDirectory = sandboxDirectory
    }

    public func bridgePorts() throws -> [String: [String]] {
        let links = try LinkTable.dump(namespace: namespace)
        let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        var out: [String: [String]] = [:]
        for link in links {
            guard let master = link.master, let bridge = names[master] else { continue }
            out[bridge, default: []].append(link.name)
        }
        return out.mapValues { $0.sorted() }
    }

    public func hostPorts(containerNamespace: String) throws -> [String: String] {
        try LinkTable.hostPorts(containerNamespace: containerNamespace, hostLinks: try LinkTable.dump(namespace: namespace))
    }

    public func sandboxPorts(wanted: Set<String>) throws -> [String: String]? {
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: sandboxDirectory) else { return nil }
        let hostLinks = Dictionary(try LinkTable.dump(namespace: namespace).map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
        let host = hostLinks.mapValues(\.name)
        return lock.withLock {
            var seen = Set<String>()
            var macs: [String: String] = [:], ambiguous = Set<String>()
            for file in files.sorted() where !file.hasPrefix(".") {
                let path = sandboxDirectory + "/" + file
                var st = stat()
                guard stat(path, &st) == 0 else { continue }
                seen.insert(file)
                // A cached file is re-read when any of its ports is gone or renumbered (a network
                // disconnected and connected again gives the container a new veth).
                // A cached file is also re-read when it has a MAC the runtime does not report (read
                // before the runtime set the container's MAC, or a container that changed it).
                var ports = scanned[file].flatMap { entry in
                    entry.inode == UInt64(st.st_ino) && entry.ports.values.allSatisfy({ host[$0.index] == $0.name })
                        && entry.ports.keys.allSatisfy(wanted.contains) ? entry.ports : nil
                }
                if ports == nil {
                    // Unreadable (a namespace being torn down) or not wired yet: try again next time.
                    guard let links = try? LinkTable.dump(namespace: path) else { continue }
                    var found: [String: (index: Int32, name: String)] = [:]
                    for l in links {
                        // Both ends must name each other: ifindexes are per namespace, so a peer
                        // index alone could point at an unrelated host interface.
                        guard let mac = l.mac, let peer = l.peerIndex, peer != l.index, let h = hostLinks[peer],
                              h.peerIndex == l.index else { continue }
                        found[mac] = (peer, h.name)
                    }
                    if !found.isEmpty { scanned[file] = (UInt64(st.st_ino), found) }
                    ports = found
                }
                for (mac, port) in ports ?? [:] {
                    if macs[mac] != nil && macs[mac] != port.name { ambiguous.insert(mac) }
                    macs[mac] = port.name
                }
            }
            scanned = scanned.filter { seen.contains($0.key) }
            for mac in ambiguous { macs[mac] = nil }
            return macs
        }
    }
}
