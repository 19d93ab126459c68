/// One statement of a rule, in order. See the guide at the top of `Model.swift` for the nft
/// text and the libnftnl expressions of each case.
public enum Statement: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Compare one field (or a concatenation of fields) with an operand.
    case match(Match)
    /// `FIELDS vmap @map` or `FIELDS vmap { k : verdict, … }`: look the key up and take the
    /// element's verdict; no match means continue.
    case vmap(fields: [Field], map: MapRef)
    /// `TARGET set FIELDS map @map`: look the key up in a data map and write the element's value
    /// to a writable field (only `meta priority`); no match ends the rule (nothing is written).
    /// libnftnl: loads, `lookup` with a data register, `meta set` from it.
    case setFromMap(target: Field, fields: [Field], map: String)
    /// `counter packets P bytes B`. Counts are live state: `Rule.sameContent` ignores them.
    case counter(packets: UInt64 = 0, bytes: UInt64 = 0)
    case log(Log)
    case limit(Limit)
    case reject(Reject)
    case verdict(Verdict)

    public var description: String { NFTText.statement(self) }
}

/// A comparison: `fields [!=] operand`.
public struct Match: Hashable, Sendable, Codable {
    /// One field, or several for a concatenated lookup (`ip saddr . tcp dport @s`); a
    /// concatenation is only allowed with a set operand.
    public var fields: [Field]
    /// `!=` / `!= @set`: libnftnl `cmp neq`, `range neq`, or `lookup` with `NFT_LOOKUP_F_INV`.
    public var negated: Bool
    public var operand: Operand

    public init(_ fields: [Field], negated: Bool = false, _ operand: Operand) {
        self.fields = fields
        self.negated = negated
        self.operand = operand
    }

    public init(_ field: Field, negated: Bool = false, _ operand: Operand) {
        self.init([field], negated: negated, operand)
    }
}

/// Right-hand side of a match.
public enum Operand: Hashable, Sendable, Codable {
    /// A single value (`cmp`; for `ct state` a bitmask test, see the guide).
    case value(Value)
    /// An address prefix `addr/len` (`bitwise` mask + `cmp`).
    case prefix(Value, UInt8)
    /// An inclusive range `low-high` (libnftnl `range`).
    case range(Value, Value)
    /// A named set `@name` (libnftnl `lookup` by set name).
    case set(String)
    /// An anonymous set `{ a, b }`: nft creates a set `__set%d` with flags anonymous|constant
    /// (|interval when any entry is a range) in the same batch and looks it up.
    case anonymousSet([SetElement])
}

/// Where `vmap` looks up its verdict.
public enum MapRef: Hashable, Sendable, Codable {
    case named(String)
    /// An anonymous verdict map `{ key : verdict, … }`.
    case anonymous([SetElement])
}

/// `log` statement. `group` (nflog) and `level` (syslog) are mutually exclusive in the kernel.
public struct Log: Hashable, Sendable, Codable {
    public var prefix: String?
    public var group: UInt16?
    /// Nil means the kernel default, warn; `.warn` is normalised to nil because nft does not
    /// print it.
    public var level: LogLevel?

    public init(prefix: String? = nil, group: UInt16? = nil, level: LogLevel? = nil) {
        self.prefix = prefix
        self.group = group
        self.level = level == .warn ? nil : level
    }
}

/// Syslog levels (`NFTNL_EXPR_LOG_LEVEL`).
public enum LogLevel: String, Hashable, Sendable, Codable, CaseIterable {
    case emerg, alert, crit, err, warn, notice, info, debug

    public var number: UInt32 {
        UInt32(LogLevel.allCases.firstIndex(of: self) ?? 4)
    }
}

/// `limit rate [over] N/unit [burst B packets]` or the byte form.
public struct Limit: Hashable, Sendable, Codable {
    /// Packets per unit, or bytes per unit when `bytes` is true.
    public var rate: UInt64
    public var unit: TimeUnit
    /// nft's default burst is 5 packets (and 0 for bytes); it prints `burst` only otherwise.
    public var burst: UInt32
    /// `NFT_LIMIT_PKT_BYTES` instead of `NFT_LIMIT_PKTS`.
    public var bytes: Bool
    /// `over`: matches when the rate is exceeded (`NFT_LIMIT_F_INV`).
    public var over: Bool

    public init(rate: UInt64, per unit: TimeUnit, burst: UInt32? = nil, bytes: Bool = false, over: Bool = false) {
        self.rate = rate
        self.unit = unit
        self.burst = burst ?? (bytes ? 0 : 5)
        self.bytes = bytes
        self.over = over
    }
}

/// Limit time unit (`NFTNL_EXPR_LIMIT_UNIT` is in seconds).
public enum TimeUnit: String, Hashable, Sendable, Codable {
    case second, minute, hour, day, week

    public var seconds: UInt64 {
        switch self {
        case .second: 1
        case .minute: 60
        case .hour: 3600
        case .day: 86400
        case .week: 604_800
        }
    }
}

/// `reject` statement (libnftnl `reject`: `NFTNL_EXPR_REJECT_TYPE` / `_CODE`).
public enum Reject: Hashable, Sendable, Codable {
    /// The family default, printed as plain `reject`: icmpx port-unreachable in inet and bridge
    /// (type 2 code 1), icmp port-unreachable in ip (type 0 code 3), icmpv6 port-unreachable in
    /// ip6 (type 0 code 4).
    case `default`
    /// `reject with tcp reset` (type 1). In inet and bridge tables the rule must already have
    /// established tcp (`meta l4proto tcp` or a `tcp dport` match), which nft lists. In ip and
    /// ip6 tables nft hides a `meta l4proto tcp` right before it, so the model leaves it out and
    /// the encoder emits `meta load l4proto; cmp eq 6` unless a tcp match came earlier.
    case tcpReset
    /// `reject with icmp CODE` (type 0); in inet implies `meta nfproto ipv4`.
    case icmp(UInt8)
    /// `reject with icmpv6 CODE` (type 0); in inet implies `meta nfproto ipv6`.
    case icmpv6(UInt8)
    /// `reject with icmpx CODE` (type 2).
    case icmpx(UInt8)
}
