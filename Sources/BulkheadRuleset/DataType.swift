/// An nft datatype that Bulkhead uses as a set key, map value or match operand.
///
/// `typeID` and `byteLength` are what goes into `NFTA_SET_KEY_TYPE`/`NFTA_SET_KEY_LEN` (and the
/// data equivalents); the ids are nft's `enum datatypes` (nftables `include/datatype.h`), which the
/// kernel stores opaquely and nft reads back to know how to print a set.
public enum DataType: String, Hashable, Sendable, Codable, CaseIterable, CustomStringConvertible {
    case ipv4Addr = "ipv4_addr"
    case ipv6Addr = "ipv6_addr"
    case inetService = "inet_service"
    case inetProto = "inet_proto"
    case nfProto = "nf_proto"
    case ifname = "ifname"
    case mark = "mark"
    /// A traffic-control handle (`classid`, 4 bytes, host order): the type of `meta priority`,
    /// which the dispatch uses to carry an identity number from one lookup to the next.
    case classid = "classid"
    case icmpType = "icmp_type"
    case icmpv6Type = "icmpv6_type"
    case ctState = "ct_state"
    /// A MAC address (`ether_addr`, 6 bytes).
    case etherAddr = "ether_addr"
    /// An ethertype (`ether_type`, 2 bytes, network order).
    case etherType = "ether_type"

    /// nft's datatype id (`TYPE_IPADDR` = 7, …).
    public var typeID: UInt32 {
        switch self {
        case .nfProto: 2
        case .ipv4Addr: 7
        case .ipv6Addr: 8
        case .inetProto: 12
        case .inetService: 13
        case .icmpType: 14
        case .mark: 19
        case .classid: 23
        case .ctState: 26
        case .icmpv6Type: 29
        case .ifname: 41
        case .etherAddr: 9
        case .etherType: 10
        }
    }

    /// Bytes the value occupies in a register / set key before padding (ifname is `IFNAMSIZ`).
    public var byteLength: Int {
        switch self {
        case .ipv4Addr, .mark, .classid, .ctState: 4
        case .ipv6Addr, .ifname: 16
        case .inetService, .etherType: 2
        case .etherAddr: 6
        case .inetProto, .nfProto, .icmpType, .icmpv6Type: 1
        }
    }

    /// True when the kernel holds the value in network byte order; false for host order (mark,
    /// ct state) and strings. This decides element sort order in `nft list` and the set's
    /// `NFTNL_UDATA_SET_KEYBYTEORDER` userdata that nft writes (1 = host, 2 = big endian).
    public var isBigEndian: Bool {
        switch self {
        case .ipv4Addr, .ipv6Addr, .inetService, .etherAddr, .etherType: true
        case .inetProto, .nfProto, .icmpType, .icmpv6Type, .mark, .classid, .ctState, .ifname: false
        }
    }

    /// nft prints ranges of these types as `addr/len` when they are prefix aligned
    /// (its `DTYPE_F_PREFIX`); other types always print `low-high`.
    var printsPrefixes: Bool { self == .ipv4Addr || self == .ipv6Addr }

    /// How many elements nft prints per line in a named set with this key type before it wraps
    /// (nft `calculate_delim`): integer-like types 5, addresses and ct state 2, everything else 1.
    var elementsPerLine: Int {
        switch self {
        case .nfProto, .inetProto, .inetService, .mark, .classid: 5
        case .ipv4Addr, .ctState: 2
        case .ipv6Addr, .ifname, .icmpType, .icmpv6Type, .etherAddr, .etherType: 1
        }
    }

    public var description: String { rawValue }
}

/// The key of a set or map: one datatype, or several concatenated with ` . `.
///
/// For a concatenation the kernel sees one key whose type id is nft's packed form
/// `((id1 << 6) | id2) << 6 | id3 …` (nftables `src/datatype.c` `concat_type_alloc`, `TYPE_BITS`
/// = 6) and whose length is the sum of the field lengths, each rounded up to 4 bytes because every
/// field starts in its own 32-bit register (`netlink_padded_len`). A concatenated set also carries
/// `NFTA_SET_DESC_CONCAT` with the unpadded field lengths and the `NFT_SET_CONCAT` flag.
public struct KeyType: Hashable, Sendable, Codable, CustomStringConvertible {
    public var fields: [DataType]

    public init(_ fields: [DataType]) { self.fields = fields }
    public init(_ fields: DataType...) { self.fields = fields }

    public var isConcatenation: Bool { fields.count > 1 }

    /// `NFTA_SET_KEY_TYPE`.
    public var typeID: UInt32 {
        fields.reduce(0) { ($0 << 6) | $1.typeID }
    }

    /// `NFTA_SET_KEY_LEN`.
    public var byteLength: Int {
        if fields.count == 1 { return fields[0].byteLength }
        return fields.reduce(0) { $0 + ($1.byteLength + 3) / 4 * 4 }
    }

    /// Unpadded length of each field, for `NFTA_SET_DESC_CONCAT`.
    public var fieldLengths: [Int] { fields.map(\.byteLength) }

    /// `ipv4_addr . ipv4_addr . inet_service`, as in a `type` line.
    public var description: String { fields.map(\.rawValue).joined(separator: " . ") }
}

/// What a map stores per element.
public enum MapData: Hashable, Sendable, Codable, CustomStringConvertible {
    /// A verdict map (`type K : verdict`): kernel data type `NFT_DATA_VERDICT` (0xffffff00).
    case verdict
    /// A data map such as `type ipv4_addr : mark`.
    case value(DataType)

    /// `NFTA_SET_DATA_TYPE`.
    public var typeID: UInt32 {
        switch self {
        case .verdict: 0xffff_ff00
        case .value(let t): t.typeID
        }
    }

    public var description: String {
        switch self {
        case .verdict: "verdict"
        case .value(let t): t.rawValue
        }
    }
}
