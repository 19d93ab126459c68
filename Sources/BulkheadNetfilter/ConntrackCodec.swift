import BulkheadConntrack
import BulkheadInventory
import CNetfilter

/// ctnetlink messages (NFNL_SUBSYS_CTNETLINK) as bytes: the dump request, the delete request,
/// and the decoding of one dumped entry.
///
/// The decoder walks attributes itself over a byte array, bounds-checked at every step, so any
/// datagram — truncated, lying lengths, unknown protocols, missing fields — yields an entry, nil
/// (not an IPv4/IPv6 entry, or not one we can name) or `ConntrackError.malformedReply`, never a
/// crash (`ConntrackCodecTests` feeds it mutated and random bytes). Attribute numbers come from
/// <linux/netfilter/nfnetlink_conntrack.h> through CNetfilter.
enum ConntrackCodec {
    static let headerLength = 16  // struct nlmsghdr
    static let nfgenLength = 4    // struct nfgenmsg
    /// NLA_F_NESTED | NLA_F_NET_BYTEORDER: flags in an attribute's type, not part of it.
    static let attributeTypeMask: UInt16 = 0x3fff

    static func messageType(_ msg: UInt32) -> UInt16 { UInt16(NFNL_SUBSYS_CTNETLINK) << 8 | UInt16(msg) }

    /// IPCTNL_MSG_CT_GET with NLM_F_DUMP for every family (AF_UNSPEC: ctnetlink then skips no
    /// layer-3 protocol) and every zone.
    static func dumpRequest(seq: UInt32) -> [UInt8] {
        message(type: messageType(IPCTNL_MSG_CT_GET.rawValue), flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP), seq: seq, family: 0, attributes: [])
    }

    /// IPCTNL_MSG_CT_DELETE of one entry with NLM_F_ACK: the original tuple (the kernel's own
    /// bytes when the entry came from a dump), the zone, and the id, so a connection that
    /// re-used the tuple since the dump is not the one removed.
    static func deleteRequest(_ entry: ConntrackEntry, seq: UInt32) -> [UInt8] {
        var attributes = entry.kernelTuple ?? encodeTuple(entry.original, type: UInt16(CTA_TUPLE_ORIG.rawValue))
        if entry.zone != 0 { attributes += attribute(UInt16(CTA_ZONE.rawValue), bigEndian16(entry.zone)) }
        if let id = entry.id { attributes += attribute(UInt16(CTA_ID.rawValue), bigEndian32(id)) }
        let family = UInt8(entry.original.source.isIPv4 ? AF_INET : AF_INET6)
        return message(type: messageType(IPCTNL_MSG_CT_DELETE.rawValue), flags: UInt16(NLM_F_REQUEST | NLM_F_ACK), seq: seq,
                       family: family, attributes: attributes)
    }

    static func message(type: UInt16, flags: UInt16, seq: UInt32, family: UInt8, attributes: [UInt8]) -> [UInt8] {
        let length = UInt32(headerLength + nfgenLength + attributes.count)
        var bytes = littleOrNative32(length) + native16(type) + native16(flags) + littleOrNative32(seq) + littleOrNative32(0)
        bytes += [family, UInt8(NFNETLINK_V0), 0, 0]  // nfgenmsg: family, version, res_id (big endian 0)
        return bytes + attributes
    }

    static func encodeTuple(_ tuple: ConntrackTuple, type: UInt16) -> [UInt8] {
        let v4 = tuple.source.isIPv4
        let ip = attribute(UInt16(v4 ? CTA_IP_V4_SRC.rawValue : CTA_IP_V6_SRC.rawValue), tuple.source.bytes)
            + attribute(UInt16(v4 ? CTA_IP_V4_DST.rawValue : CTA_IP_V6_DST.rawValue), tuple.destination.bytes)
        var proto = attribute(UInt16(CTA_PROTO_NUM.rawValue), [tuple.proto])
        if let p = tuple.sourcePort { proto += attribute(UInt16(CTA_PROTO_SRC_PORT.rawValue), bigEndian16(p)) }
        if let p = tuple.destinationPort { proto += attribute(UInt16(CTA_PROTO_DST_PORT.rawValue), bigEndian16(p)) }
        return attribute(type | nested, attribute(UInt16(CTA_TUPLE_IP.rawValue) | nested, ip) + attribute(UInt16(CTA_TUPLE_PROTO.rawValue) | nested, proto))
    }

    static let nested = UInt16(NLA_F_NESTED)

    static func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        let length = 4 + payload.count
        var bytes = native16(UInt16(length)) + native16(type) + payload
        bytes += [UInt8](repeating: 0, count: (4 - length % 4) % 4)
        return bytes
    }

    // Netlink headers are in host order (this is Linux on little- or big-endian hardware);
    // conntrack payloads (addresses, ports, zone, id) are in network order.
    static func native16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
    static func littleOrNative32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
    static func bigEndian16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func bigEndian32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }

    // MARK: Decoding

    /// One attribute: its type (flags masked), payload range in `bytes`, and the whole
    /// attribute's range (to send it back verbatim).
    struct Attribute {
        var type: UInt16
        var payload: Range<Int>
        var whole: Range<Int>
    }

    /// The attributes in `range` of `bytes`. Stops with an error at the first length that does
    /// not fit; a trailing run shorter than an attribute header is padding and ignored.
    static func attributes(_ bytes: [UInt8], _ range: Range<Int>) throws(ConntrackError) -> [Attribute] {
        var result: [Attribute] = []
        var at = range.lowerBound
        while range.upperBound - at >= 4 {
            let length = Int(readNative16(bytes, at))
            let type = readNative16(bytes, at + 2) & attributeTypeMask
            guard length >= 4, at + length <= range.upperBound else {
                throw .malformedReply("attribute type \(type) at byte \(at) claims \(length) bytes; \(range.upperBound - at) remain")
            }
            result.append(Attribute(type: type, payload: (at + 4)..<(at + length), whole: at..<(at + length)))
            at += (length + 3) & ~3
        }
        return result
    }

    static func readNative16(_ b: [UInt8], _ at: Int) -> UInt16 {
        var v: UInt16 = 0
        withUnsafeMutableBytes(of: &v) { $0[0] = b[at]; $0[1] = b[at + 1] }
        return v
    }

    static func readNative32(_ b: [UInt8], _ at: Int) -> UInt32 {
        var v: UInt32 = 0
        withUnsafeMutableBytes(of: &v) { for i in 0..<4 { $0[i] = b[at + i] } }
        return v
    }

    static func bigEndian(_ b: [UInt8], _ r: Range<Int>) -> UInt64 { b[r].reduce(0) { $0 << 8 | UInt64($1) } }

    /// Decodes one ctnetlink entry message (header included). Returns nil for messages that are
    /// not an IPv4/IPv6 entry with both tuples (other families, other message types); throws
    /// for bytes that are not a well-formed message.
    static func decodeEntry(_ bytes: [UInt8]) throws(ConntrackError) -> ConntrackEntry? {
        guard bytes.count >= headerLength + nfgenLength else {
            throw .malformedReply("a \(bytes.count)-byte conntrack message is shorter than its headers")
        }
        let length = Int(readNative32(bytes, 0))
        guard length >= headerLength + nfgenLength, length <= bytes.count else {
            throw .malformedReply("a conntrack message claims \(length) bytes; \(bytes.count) were received")
        }
        let type = readNative16(bytes, 4)
        // IPCTNL_MSG_CT_NEW is what a dump answers with (also what events carry).
        guard type == messageType(IPCTNL_MSG_CT_NEW.rawValue) else { return nil }
        let family = Int32(bytes[headerLength])
        guard family == AF_INET || family == AF_INET6 else { return nil }
        var original: (ConntrackTuple, Range<Int>)?
        var reply: ConntrackTuple?
        var zone: UInt16 = 0
        var id: UInt32?
        for a in try attributes(bytes, (headerLength + nfgenLength)..<length) {
            switch UInt32(a.type) {
            case CTA_TUPLE_ORIG.rawValue:
                if let t = try decodeTuple(bytes, a.payload, ipv4: family == AF_INET) { original = (t, a.whole) }
            case CTA_TUPLE_REPLY.rawValue:
                reply = try decodeTuple(bytes, a.payload, ipv4: family == AF_INET)
            case CTA_ZONE.rawValue where a.payload.count == 2:
                zone = UInt16(bigEndian(bytes, a.payload))
            case CTA_ID.rawValue where a.payload.count == 4:
                id = UInt32(bigEndian(bytes, a.payload))
            default:
                continue
            }
        }
        guard let original, let reply else { return nil }
        return ConntrackEntry(original: original.0, reply: reply, zone: zone, id: id, kernelTuple: Array(bytes[original.1]))
    }

    /// A tuple (CTA_TUPLE_IP + CTA_TUPLE_PROTO), or nil when an address or the protocol is
    /// missing or of the wrong size for the message's family.
    static func decodeTuple(_ bytes: [UInt8], _ range: Range<Int>, ipv4: Bool) throws(ConntrackError) -> ConntrackTuple? {
        var source: IPAddress?, destination: IPAddress?
        var proto: UInt8?
        var sourcePort: UInt16?, destinationPort: UInt16?
        func address(_ r: Range<Int>) -> IPAddress? {
            if ipv4, r.count == 4 { return .v4(UInt32(bigEndian(bytes, r))) }
            if !ipv4, r.count == 16 { return .v6(bytes[r].reduce(UInt128(0)) { $0 << 8 | UInt128($1) }) }
            return nil
        }
        for a in try attributes(bytes, range) {
            switch UInt32(a.type) {
            case CTA_TUPLE_IP.rawValue:
                for ip in try attributes(bytes, a.payload) {
                    switch UInt32(ip.type) {
                    case CTA_IP_V4_SRC.rawValue, CTA_IP_V6_SRC.rawValue: source = address(ip.payload)
                    case CTA_IP_V4_DST.rawValue, CTA_IP_V6_DST.rawValue: destination = address(ip.payload)
                    default: continue
                    }
                }
            case CTA_TUPLE_PROTO.rawValue:
                for p in try attributes(bytes, a.payload) {
                    switch UInt32(p.type) {
                    case CTA_PROTO_NUM.rawValue where p.payload.count == 1: proto = bytes[p.payload.lowerBound]
                    case CTA_PROTO_SRC_PORT.rawValue where p.payload.count == 2: sourcePort = UInt16(bigEndian(bytes, p.payload))
                    case CTA_PROTO_DST_PORT.rawValue where p.payload.count == 2: destinationPort = UInt16(bigEndian(bytes, p.payload))
                    default: continue
                    }
                }
            default:
                continue
            }
        }
        guard let source, let destination, let proto else { return nil }
        return ConntrackTuple(source: source, destination: destination, proto: proto, sourcePort: sourcePort, destinationPort: destinationPort)
    }
}
