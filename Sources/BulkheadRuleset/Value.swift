/// Connection-tracking states as the `ct state` bitmask (`NF_CT_STATE_*_BIT` values).
public struct CtState: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let invalid = CtState(rawValue: 1)
    public static let established = CtState(rawValue: 2)
    public static let related = CtState(rawValue: 4)
    public static let new = CtState(rawValue: 8)
    public static let untracked = CtState(rawValue: 64)

    /// nft prints set bits in ascending order with these names, comma separated.
    static let names: [(CtState, String)] = [
        (.invalid, "invalid"), (.established, "established"), (.related, "related"),
        (.new, "new"), (.untracked, "untracked"),
    ]
}

/// A 48-bit MAC address (`aa:bb:cc:dd:ee:ff`).
public struct EtherAddress: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    /// Exactly 6 bytes.
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive, two hex digits per byte); nil otherwise.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var b: [UInt8] = []
        for p in parts {
            guard p.count == 2, p.allSatisfy(\.isHexDigit), let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        bytes = b
    }

    /// Lower-case, colon separated, as nft and `ip link` print it.
    public var description: String {
        bytes.map { b in let h = String(b, radix: 16); return h.count == 1 ? "0" + h : h }.joined(separator: ":")
    }

    public static func < (a: Self, b: Self) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// Well-known ethertypes.
public enum EtherTypes {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    public static let ipv6: UInt16 = 0x86dd
}

/// Well-known `nf_proto` values (`NFPROTO_*`).
public enum NFProto {
    public static let ipv4: UInt8 = 2
    public static let ipv6: UInt8 = 10
}

/// Well-known IP protocol numbers.
public enum IPProto {
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let icmpv6: UInt8 = 58
}

/// One typed constant: a match operand, a set key field or a map value.
///
/// `bytes` is the kernel representation (what goes in `cmp`/`range` data and element keys).
public enum Value: Hashable, Sendable, Codable, CustomStringConvertible {
    case ipv4(IPv4Address)
    case ipv6(IPv6Address)
    /// A transport port (`inet_service`).
    case port(UInt16)
    /// An IP protocol number (`inet_proto`), e.g. `IPProto.tcp`.
    case proto(UInt8)
    /// An `nf_proto` family number, e.g. `NFProto.ipv4`.
    case nfProto(UInt8)
    /// An interface name. A trailing `*` is a wildcard (`"veth*"`): a prefix compare in a rule,
    /// a range element in an interval set.
    case ifname(String)
    case mark(UInt32)
    /// A `classid` (`meta priority`): major in the high 16 bits, minor in the low 16.
    case classid(UInt32)
    case icmpType(UInt8)
    case icmpv6Type(UInt8)
    case ctState(CtState)
    /// A MAC address, 6 bytes (`ether_addr`).
    case etherAddr(EtherAddress)
    /// An ethertype (`ether type ip6` is `.etherType(0x86dd)`).
    case etherType(UInt16)

    public var dataType: DataType {
        switch self {
        case .ipv4: .ipv4Addr
        case .ipv6: .ipv6Addr
        case .port: .inetService
        case .proto: .inetProto
        case .nfProto: .nfProto
        case .ifname: .ifname
        case .mark: .mark
        case .classid: .classid
        case .icmpType: .icmpType
        case .icmpv6Type: .icmpv6Type
        case .ctState: .ctState
        case .etherAddr: .etherAddr
        case .etherType: .etherType
        }
    }

    /// True for an interface name ending in `*`.
    public var isWildcard: Bool {
        if case .ifname(let n) = self { return n.hasSuffix("*") }
        return false
    }

    /// Kernel bytes, `dataType.byteLength` long. Big-endian types are in network order, `mark` and
    /// `ct state` in host order (little endian on every platform we run on), ifname NUL padded to
    /// 16 (a wildcard contributes its prefix only, zero padded).
    public var bytes: [UInt8] {
        switch self {
        case .ipv4(let a): return a.bytes
        case .ipv6(let a): return a.bytes
        case .port(let p), .etherType(let p): return [UInt8(p >> 8), UInt8(p & 0xff)]
        case .etherAddr(let a): return a.bytes
        case .proto(let v), .nfProto(let v), .icmpType(let v), .icmpv6Type(let v): return [v]
        case .mark(let m), .classid(let m): return Value.hostOrder(m)
        case .ctState(let s): return Value.hostOrder(s.rawValue)
        case .ifname(let n):
            var b = Array((n.hasSuffix("*") ? String(n.dropLast()) : n).utf8.prefix(16))
            b += Array(repeating: 0, count: 16 - b.count)
            return b
        }
    }

    /// Writes `bytes` to `p`, which has room for `dataType.byteLength` bytes, without allocating:
    /// the bulk paths (validating, sorting and encoding 100,000 elements) call it once per field.
    public func writeBytes(to p: UnsafeMutablePointer<UInt8>) {
        func bigEndian(_ v: UInt64, _ n: Int, at: Int = 0) {
            for i in 0..<n { p[at + i] = UInt8(truncatingIfNeeded: v >> UInt64(8 * (n - 1 - i))) }
        }
        func hostOrder(_ v: UInt32) {
            for i in 0..<4 { p[i] = UInt8(truncatingIfNeeded: v.littleEndian >> UInt32(8 * i)) }
        }
        switch self {
        case .ipv4(let a): bigEndian(UInt64(a.value), 4)
        case .ipv6(let a):
            bigEndian(a.high, 8)
            bigEndian(a.low, 8, at: 8)
        case .port(let v), .etherType(let v): bigEndian(UInt64(v), 2)
        case .proto(let v), .nfProto(let v), .icmpType(let v), .icmpv6Type(let v): p[0] = v
        case .mark(let m), .classid(let m): hostOrder(m)
        case .ctState(let s): hostOrder(s.rawValue)
        case .etherAddr, .ifname:
            for (i, b) in bytes.enumerated() { p[i] = b }
        }
    }

    static func hostOrder(_ v: UInt32) -> [UInt8] {
        withUnsafeBytes(of: v) { Array($0) }
    }

    /// Text as `nft list` prints it (ports numeric, protocols and ICMP types by name).
    public var description: String { NFTText.value(self) }
}

/// One key field of a set element or anonymous set entry: a value, or an inclusive range.
///
/// Ranges are only valid in interval sets. `nft list` prints a range as a single value when both
/// ends are equal, as `addr/len` for prefix-aligned address ranges and as `low-high` otherwise;
/// `KeyPart.range` normalises equal ends to `.value` so equality matches what the kernel returns.
public enum KeyPart: Hashable, Sendable, Codable, CustomStringConvertible {
    case value(Value)
    case range(Value, Value)

    /// An inclusive range; equal ends collapse to a single value.
    public static func between(_ low: Value, _ high: Value) -> KeyPart {
        low == high ? .value(low) : .range(low, high)
    }

    /// An IPv4 prefix such as `10.0.0.0/8`, held as its range.
    public static func prefix(_ address: IPv4Address, _ length: Int) -> KeyPart {
        let len = max(0, min(32, length))
        let mask: UInt32 = len == 0 ? 0 : ~UInt32(0) << (32 - len)
        return between(.ipv4(IPv4Address(address.value & mask)), .ipv4(IPv4Address(address.value | ~mask)))
    }

    /// An IPv6 prefix such as `fd00::/64`, held as its range.
    public static func prefix(_ address: IPv6Address, _ length: Int) -> KeyPart {
        let len = max(0, min(128, length))
        let hm: UInt64 = len >= 64 ? ~0 : (len == 0 ? 0 : ~UInt64(0) << (64 - len))
        let lm: UInt64 = len <= 64 ? 0 : (len == 128 ? ~0 : ~UInt64(0) << (128 - len))
        let lo = IPv6Address(high: address.high & hm, low: address.low & lm)
        let hi = IPv6Address(high: address.high | ~hm, low: address.low | ~lm)
        return between(.ipv6(lo), .ipv6(hi))
    }

    public var dataType: DataType {
        switch self {
        case .value(let v), .range(let v, _): v.dataType
        }
    }

    /// The low end (the value itself for `.value`).
    public var low: Value {
        switch self {
        case .value(let v), .range(let v, _): v
        }
    }

    /// The high end (the value itself for `.value`).
    public var high: Value {
        switch self {
        case .value(let v), .range(_, let v): v
        }
    }

    public var isRange: Bool {
        if case .range = self { return true }
        return low.isWildcard
    }

    public var description: String { NFTText.keyPart(self) }
}
