/// Where a matched field comes from in the packet or its metadata: the "load" half of a match.
///
/// Every field maps to exactly one libnftnl load expression (`load`) and, in some families, an
/// implicit protocol dependency (`dependency`) that nft inserts before the load and hides again
/// when listing. Values compared against the field have type `dataType`.
public enum Field: String, Hashable, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case ipSaddr = "ip saddr"
    case ipDaddr = "ip daddr"
    case ip6Saddr = "ip6 saddr"
    case ip6Daddr = "ip6 daddr"
    case metaL4proto = "meta l4proto"
    case metaNfproto = "meta nfproto"
    case iifname = "iifname"
    case oifname = "oifname"
    /// Transport destination port with no protocol check (`th dport`).
    case thDport = "th dport"
    case tcpDport = "tcp dport"
    case udpDport = "udp dport"
    case icmpType = "icmp type"
    case icmpv6Type = "icmpv6 type"
    case ctState = "ct state"
    /// `skb->priority` (a `classid`). Bulkhead reads it only after writing it in the same rule
    /// (`Statement.setFromMap`): the dispatch's scratch between two lookups (see the compiler).
    case metaPriority = "meta priority"
    /// Bridge family: the frame's ethertype as on the wire. For a VLAN-tagged frame whose tag
    /// the kernel moved into skb metadata (veth and most NICs do), the kernel rebuilds the tag
    /// for this load, so it reads 0x8100/0x88a8 — unlike `meta protocol`, which reads the inner type.
    case etherType = "ether type"
    case etherSaddr = "ether saddr"
    /// ARP sender hardware and protocol address (Ethernet/IPv4 ARP layout).
    case arpSaddrEther = "arp saddr ether"
    case arpSaddrIP = "arp saddr ip"
    /// Target address of an ICMPv6 neighbour solicitation/advertisement (bytes 8-23 of the
    /// ICMPv6 message). nft 1.0.6 has no keyword for it and lists the raw load, `@th,64,128`
    /// (newer nft: `icmpv6 taddr`); we render what the installed nft prints.
    case icmpv6Taddr = "@th,64,128"

    /// Text as nft prints it.
    public var description: String { rawValue }

    public var dataType: DataType {
        switch self {
        case .ipSaddr, .ipDaddr: .ipv4Addr
        case .ip6Saddr, .ip6Daddr: .ipv6Addr
        case .metaL4proto: .inetProto
        case .metaNfproto: .nfProto
        case .iifname, .oifname: .ifname
        case .thDport, .tcpDport, .udpDport: .inetService
        case .icmpType: .icmpType
        case .icmpv6Type: .icmpv6Type
        case .ctState: .ctState
        case .metaPriority: .classid
        case .etherType: .etherType
        case .etherSaddr, .arpSaddrEther: .etherAddr
        case .arpSaddrIP: .ipv4Addr
        case .icmpv6Taddr: .ipv6Addr
        }
    }

    /// The libnftnl expression that loads this field into a register.
    public var load: Load {
        switch self {
        case .ipSaddr: .payload(base: .network, offset: 12, length: 4)
        case .ipDaddr: .payload(base: .network, offset: 16, length: 4)
        case .ip6Saddr: .payload(base: .network, offset: 8, length: 16)
        case .ip6Daddr: .payload(base: .network, offset: 24, length: 16)
        case .thDport, .tcpDport, .udpDport: .payload(base: .transport, offset: 2, length: 2)
        case .icmpType, .icmpv6Type: .payload(base: .transport, offset: 0, length: 1)
        case .metaL4proto: .meta(.l4proto)
        case .metaNfproto: .meta(.nfproto)
        case .iifname: .meta(.iifname)
        case .oifname: .meta(.oifname)
        case .ctState: .ct(.state)
        case .metaPriority: .meta(.priority)
        case .etherType: .payload(base: .link, offset: 12, length: 2)
        case .etherSaddr: .payload(base: .link, offset: 6, length: 6)
        case .arpSaddrEther: .payload(base: .network, offset: 8, length: 6)
        case .arpSaddrIP: .payload(base: .network, offset: 14, length: 4)
        case .icmpv6Taddr: .payload(base: .transport, offset: 8, length: 16)
        }
    }

    /// The protocol check nft emits before loading this field in a table of `family`, unless an
    /// earlier expression in the same rule already established it (nft's protocol context).
    /// Observed with `nft --debug=netlink` (1.0.6): in inet, `ip saddr` is preceded by
    /// `meta load nfproto; cmp eq 2`; in every family `tcp dport` by `meta load l4proto; cmp eq 6`
    /// and `icmp type` by `meta l4proto 1` (plus `meta nfproto ipv4` first in inet); in bridge,
    /// ip fields by `meta load protocol; cmp eq 0x0800` (ip6: 0x86dd). `th dport`, meta, ct: none.
    public func dependencies(in family: TableFamily) -> [Dependency] {
        var deps: [Dependency] = []
        switch self {
        case .ipSaddr, .ipDaddr, .icmpType:
            if family == .inet { deps.append(.nfproto(NFProto.ipv4)) }
            if family == .bridge { deps.append(.etherType(0x0800)) }
        case .arpSaddrEther, .arpSaddrIP:
            deps.append(.etherType(0x0806))
        case .ip6Saddr, .ip6Daddr, .icmpv6Type, .icmpv6Taddr:
            if family == .inet { deps.append(.nfproto(NFProto.ipv6)) }
            if family == .bridge { deps.append(.etherType(0x86dd)) }
        default:
            break
        }
        switch self {
        case .tcpDport: deps.append(.l4proto(IPProto.tcp))
        case .udpDport: deps.append(.l4proto(IPProto.udp))
        case .icmpType: deps.append(.l4proto(IPProto.icmp))
        case .icmpv6Type, .icmpv6Taddr: deps.append(.l4proto(IPProto.icmpv6))
        default: break
        }
        return deps
    }
}

/// A load of packet data or metadata into a register.
public enum Load: Hashable, Sendable {
    /// libnftnl `payload`: `NFTNL_EXPR_PAYLOAD_BASE/OFFSET/LEN`.
    case payload(base: PayloadBase, offset: UInt32, length: UInt32)
    /// libnftnl `meta`: `NFTNL_EXPR_META_KEY`.
    case meta(MetaKey)
    /// libnftnl `ct`: `NFTNL_EXPR_CT_KEY`.
    case ct(CtKey)
}

/// `enum nft_payload_bases`.
public enum PayloadBase: UInt32, Hashable, Sendable {
    case link = 0, network = 1, transport = 2
}

/// `enum nft_meta_keys` values we use.
public enum MetaKey: UInt32, Hashable, Sendable {
    case `protocol` = 1, priority = 2, iifname = 6, oifname = 7, nfproto = 15, l4proto = 16
}

/// `enum nft_ct_keys` values we use.
public enum CtKey: UInt32, Hashable, Sendable {
    case state = 0
}

/// An implicit protocol check (see `Field.dependencies(in:)`).
public enum Dependency: Hashable, Sendable {
    /// `meta load nfproto => reg; cmp eq reg <1 byte>`.
    case nfproto(UInt8)
    /// `meta load l4proto => reg; cmp eq reg <1 byte>`.
    case l4proto(UInt8)
    /// `meta load protocol => reg; cmp eq reg <2 bytes, network order>` (bridge family).
    case etherType(UInt16)
}
