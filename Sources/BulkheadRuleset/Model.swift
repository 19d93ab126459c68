/// # The Bulkhead nftables model
///
/// A `Table` holds `sets` (named sets and maps, with their `elements`), `chains` (base chains
/// with hook/priority/policy, and regular chains) and `rules` (each names its chain; order within
/// a chain is evaluation order). Everything is a value type; sets keep elements in `nft list`
/// order; tables keep sets and chains in creation order, which is how the kernel and
/// `nft list` order them. `NFTText` renders a table exactly like `nft list table` (nft 1.0.6),
/// `Transaction.description` renders an `nft -f` script.
///
/// ## Statements, nft text, and libnftnl expressions
///
/// Registers: `reg 1` is `NFT_REG_1`; concatenations load field *i* into 32-bit register
/// `NFT_REG32_00 + 4·i'` where each field advances by its length rounded up to 4 bytes
/// (nft prints them as reg 1, reg 9, reg 10 …). Verdicts go to `NFT_REG_VERDICT` (0).
/// Before a field's load, emit `Field.dependencies(in:)` not yet established in the rule (nft's
/// protocol context: an earlier dependency or an earlier field of the same protocol counts).
///
/// | model | nft text | libnftnl |
/// |---|---|---|
/// | `.match(Match(f, .value(v)))` | `f v` | load f; `cmp eq reg1 v.bytes` |
/// | `.match(Match(f, negated: true, .value(v)))` | `f != v` | load f; `cmp neq` |
/// | `.match(Match(.ipSaddr, .prefix(a, 24)))` | `ip saddr 10.0.0.0/24` | payload; `bitwise` mask/xor 0; `cmp eq` (nft loads fewer bytes for byte-aligned prefixes; both list the same) |
/// | `.match(Match(.tcpDport, .range(a, b)))` | `tcp dport 1000-2000` | payload; `range eq from to` (nft itself uses `cmp gte`+`cmp lte`; `!=` must use `range neq`) |
/// | `.match(Match(f, .set("s")))` | `f @s` | load f; `lookup sreg set "s"` (`!=`: flags `NFT_LOOKUP_F_INV`) |
/// | `.match(Match([f1, f2], .set("c")))` | `f1 . f2 @c` | load f1 → reg, f2 → next padded reg; `lookup` from the first |
/// | `.match(Match(f, .anonymousSet(els)))` | `f { a, b }` | new set `__set%d` (anonymous, constant, interval if ranges; `NFTA_SET_ID`) + elements in the same batch; `lookup` by set id |
/// | `.vmap(fields: [f], map: .named("m"))` | `f vmap @m` | load f; `lookup … dreg 0` |
/// | `.match(Match(.ctState, .value(.ctState(s))))` | `ct state established,related` | `ct load state`; `bitwise & s ^ 0`; `cmp neq 0` |
/// | `… negated: true` with one state | `ct state != established` | `ct load state`; `cmp neq s` |
/// | `… negated: true` with several states | rejected: nft 1.0.6 makes it `cmp neq a\|b` (always true); use `!= { a, b }` | – |
/// | `.match(Match(.iifname, .value(.ifname("eth0"))))` | `iifname "eth0"` | `meta load iifname`; `cmp eq` 16 bytes NUL padded |
/// | `.ifname("veth*")` | `iifname "veth*"` | `cmp` of the prefix bytes only (length 4 for `veth`) |
/// | `.counter(packets:bytes:)` | `counter packets 0 bytes 0` | `counter` |
/// | `.log(Log(prefix:group:level:))` | `log prefix "p" group 2` / `log level info` | `log` (`PREFIX`, `GROUP`, `LEVEL`) |
/// | `.limit(Limit(rate: 10, per: .second))` | `limit rate 10/second` | `limit` rate, unit seconds, burst, type, flags (1 = over) |
/// | `.reject(.default)` | `reject` | `reject` type/code per family (see `Reject`) |
/// | `.verdict(.jump("c"))` | `jump c` | `immediate reg 0 jump -> c` |
///
/// Values: `Value.bytes` is exactly the kernel data; set keys (`NFTA_SET_ELEM_KEY`) of
/// concatenations pad each field to 4 bytes. Interval sets: single-field ones get a start element
/// and an end element `high + 1` flagged `NFT_SET_ELEM_INTERVAL_END` (nft also adds a `0.0.0.0`
/// end element when the first range does not start at zero); concatenated ones (flag
/// `NFT_SET_CONCAT`) send `NFTA_SET_ELEM_KEY` = low and `NFTA_SET_ELEM_KEY_END` = high.
/// Map data: verdicts as `NFTA_SET_ELEM_DATA`/`NFTA_DATA_VERDICT`, values as `Value.bytes`.
///
/// Rule comment: `Rule.userdata` (TLV type 0, NUL terminated), as nft writes it.
public struct Table: Hashable, Sendable, Codable {
    public var family: TableFamily
    public var name: String
    public var flags: TableFlags
    /// Sets and maps, in creation order.
    public var sets: [NFTSet]
    /// Chains, in creation order.
    public var chains: [Chain]
    /// All rules; `Rule.chain` says where each belongs, and the relative order within a chain is
    /// evaluation order.
    public var rules: [Rule]

    public init(family: TableFamily, name: String, flags: TableFlags = [], sets: [NFTSet] = [],
                chains: [Chain] = [], rules: [Rule] = []) {
        self.family = family
        self.name = name
        self.flags = flags
        self.sets = sets
        self.chains = chains
        self.rules = rules
    }

    public var id: TableID { TableID(family: family, name: name) }

    public func set(named name: String) -> NFTSet? { sets.first { $0.name == name } }
    public func chain(named name: String) -> Chain? { chains.first { $0.name == name } }
    public func rules(in chain: String) -> [Rule] { rules.filter { $0.chain == chain } }

    /// The table without sets, chains or rules: what `add table` creates.
    public var header: Table { Table(family: family, name: name, flags: flags) }
}

/// A table's identity.
public struct TableID: Hashable, Sendable, Codable, CustomStringConvertible {
    public var family: TableFamily
    public var name: String

    public init(family: TableFamily, name: String) {
        self.family = family
        self.name = name
    }

    /// `inet bulkhead`, as nft commands spell it.
    public var description: String { "\(family.rawValue) \(name)" }
}

/// Address family of a table (`NFPROTO_*`, sent as `nfgenmsg.nfgen_family`).
public enum TableFamily: String, Hashable, Sendable, Codable, CaseIterable {
    case ip, ip6, inet, arp, bridge, netdev

    public var number: UInt8 {
        switch self {
        case .inet: 1
        case .ip: 2
        case .arp: 3
        case .netdev: 5
        case .bridge: 7
        case .ip6: 10
        }
    }
}

/// Table flags (`NFTA_TABLE_FLAGS`).
public struct TableFlags: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NFT_TABLE_F_DORMANT`: hooks unregistered.
    public static let dormant = TableFlags(rawValue: 0x1)
    /// `NFT_TABLE_F_OWNER`: only the creating netlink socket may change it; without `persist`
    /// the table disappears when that socket closes.
    public static let owner = TableFlags(rawValue: 0x2)
    /// `NFT_TABLE_F_PERSIST` (newer than Debian's header): an owned table survives its owner.
    public static let persist = TableFlags(rawValue: 0x4)
}
