import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Receives what netfilter's `log group N` statements send (nfnetlink_log) in one namespace of a lab,
/// so a test can prove a packet was logged, not only that a rule carries a log statement.
///
/// The socket binds the group as a logging instance in that namespace (only one listener per group
/// and namespace can); each logged packet then arrives as an `NFULNL_MSG_PACKET` message whose
/// `NFULA_PREFIX` attribute is the rule's prefix. The queue threshold is set to 1 so the kernel sends
/// every packet at once instead of batching up to 100 packets or a second.
public final class NFLogListener: @unchecked Sendable {
    private let fd: FileDescriptor
    public let namespace: String
    public let group: UInt16
    private var sequence: UInt32 = 1

    // <linux/netfilter/nfnetlink.h>, <linux/netfilter/nfnetlink_log.h>: kernel ABI.
    private static let netlinkNetfilter: Int32 = 12       // NETLINK_NETFILTER
    private static let subsystemULOG: UInt16 = 4          // NFNL_SUBSYS_ULOG
    private static let messagePacket: UInt16 = 0          // NFULNL_MSG_PACKET
    private static let messageConfig: UInt16 = 1          // NFULNL_MSG_CONFIG
    private static let attributeConfigCommand: UInt16 = 1 // NFULA_CFG_CMD
    private static let attributeConfigQueueThreshold: UInt16 = 5 // NFULA_CFG_QTHRESH
    private static let commandBind: UInt8 = 1             // NFULNL_CFG_CMD_BIND
    private static let attributePrefix: UInt16 = 10       // NFULA_PREFIX

    /// Opens the socket in `namespace` (one of `lab`'s) and binds `group` there.
    public init(lab: Lab, namespace: String, group: UInt16) throws(LabError) {
        guard lab.layout.namespaces.contains(namespace) else { throw .foreignNamespace(namespace, lab: lab.name) }
        let ns = try NamespaceHandle(named: namespace)
        fd = try ns.socket(domain: AF_NETLINK, type: Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), protocol: Self.netlinkNetfilter)
        self.namespace = namespace
        self.group = group
        var config = Self.attribute(Self.attributeConfigCommand, [Self.commandBind])
        config += Self.attribute(Self.attributeConfigQueueThreshold, withUnsafeBytes(of: UInt32(1).bigEndian) { Array($0) })
        try request(Self.messageConfig, config, what: "binding nflog group \(group) in \(namespace)")
    }

    /// The prefixes of packets logged to the group, read until `done` says enough or `hangGuard`
    /// passes (a hang guard: the caller asserts on what came, never on how long it took).
    public func prefixes(hangGuard: Duration = .seconds(10), until done: ([String]) -> Bool) -> [String] {
        var out: [String] = []
        let deadline = ContinuousClock.now + hangGuard
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done(out) {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { break }
            var p = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
            let ms = Int32(min(left.components.seconds * 1000 + Int64(left.components.attoseconds / 1_000_000_000_000_000) + 1, 60_000))
            guard poll(&p, 1, ms) > 0 else { continue }
            let n = recv(fd.raw, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            guard n > 0 else { continue }
            for (type, payload) in Self.messages(Array(buffer[0..<n])) where type == Self.subsystemULOG << 8 | Self.messagePacket {
                // After the 4-byte nfgenmsg come the attributes.
                for (attr, value) in Self.attributes(Array(payload.dropFirst(4))) where attr == Self.attributePrefix {
                    out.append(String(decoding: value.prefix { $0 != 0 }, as: UTF8.self))
                }
            }
        }
        return out
    }

    private func request(_ message: UInt16, _ attributes: [UInt8], what: String) throws(LabError) {
        let seq = sequence
        sequence += 1
        // nfgenmsg: family AF_UNSPEC, version 0, res_id = the group (big-endian).
        let body = [0, 0, UInt8(group >> 8), UInt8(group & 0xff)] + attributes
        var header = [UInt8]()
        header += withUnsafeBytes(of: UInt32(16 + body.count)) { Array($0) }
        header += withUnsafeBytes(of: Self.subsystemULOG << 8 | message) { Array($0) }
        header += withUnsafeBytes(of: UInt16(0x1 | 0x4)  /* NLM_F_REQUEST | NLM_F_ACK */) { Array($0) }
        header += withUnsafeBytes(of: seq) { Array($0) }
        header += withUnsafeBytes(of: UInt32(0)) { Array($0) }
        let packet = header + body
        // Unconnected netlink sockets send to the kernel (port id 0) when no address is given.
        let sent = send(fd.raw, packet, packet.count, 0)
        guard sent == packet.count else { throw .system(call: "sendto", target: what, errno: errno) }
        var buffer = [UInt8](repeating: 0, count: 8192)
        var p = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
        // Hang guard: the kernel acks at once.
        guard poll(&p, 1, 5000) > 0 else { throw .system(call: "poll", target: what + " (no ack within the 5 s hang guard)", errno: ETIMEDOUT) }
        let n = recv(fd.raw, &buffer, buffer.count, 0)
        guard n > 0 else { throw .system(call: "recv", target: what, errno: errno) }
        for (type, payload) in Self.messages(Array(buffer[0..<n])) where type == 2 /* NLMSG_ERROR */ && payload.count >= 4 {
            let code = payload.withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            if code != 0 { throw .system(call: "NFULNL_MSG_CONFIG", target: what, errno: -code) }
        }
    }

    private static func attribute(_ type: UInt16, _ value: [UInt8]) -> [UInt8] {
        var out = withUnsafeBytes(of: UInt16(4 + value.count)) { Array($0) } + withUnsafeBytes(of: type) { Array($0) } + value
        while out.count % 4 != 0 { out.append(0) }
        return out
    }

    /// (type, payload) of each netlink message in a datagram.
    private static func messages(_ bytes: [UInt8]) -> [(UInt16, [UInt8])] {
        var out: [(UInt16, [UInt8])] = []
        var i = 0
        while i + 16 <= bytes.count {
            let length = Int(bytes[i..<i + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
            let type = bytes[i + 4..<i + 6].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }
            guard length >= 16, i + length <= bytes.count else { break }
            out.append((type, Array(bytes[i + 16..<i + length])))
            i += (length + 3) & ~3
        }
        return out
    }

    /// (type without the nested/byte-order flags, value) of each attribute.
    private static func attributes(_ bytes: [UInt8]) -> [(UInt16, [UInt8])] {
        var out: [(UInt16, [UInt8])] = []
        var i = 0
        while i + 4 <= bytes.count {
            let length = Int(bytes[i..<i + 2].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) })
            let type = bytes[i + 2..<i + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } & 0x3fff
            guard length >= 4, i + length <= bytes.count else { break }
            out.append((type, Array(bytes[i + 4..<i + length])))
            i += (length + 3) & ~3
        }
        return out
    }
}
