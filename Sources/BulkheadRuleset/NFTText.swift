/// Rendering of the model as nft 1.0.6 prints it with `nft list table FAMILY NAME`.
///
/// Rules found with the nft oracle (see `Tests/BulkheadRulesetTests/OracleTests.swift`):
/// - one tab per level; sets and maps first, then chains, each in creation order, separated by an
///   empty line; a `flags` line of the table is followed by an empty line;
/// - set block: `type`, `flags` (constant, interval; timeout only when no default timeout is
///   given), `timeout`, then `elements = { … }`;
/// - elements are sorted (see `ElementOrder`) and wrapped after every 5 (ports, protocols, marks),
///   2 (IPv4 addresses, ct states) or 1 (everything else, including every concatenation)
///   element(s) with `",\n\t\t\t     "` (nft `calculate_delim`); anonymous sets never wrap;
/// - a range prints as `a/len` for prefix-aligned addresses, `a-b` otherwise;
/// - `mark` prints as `0x%08x`, protocols by `/etc/protocols` name, ICMP types by name;
/// - `log` omits the default level (warn), `limit` omits the default burst (5 packets, 0 bytes);
/// - base chain priorities print symbolically when within 10 of a standard one (`ChainPriority`).
public enum NFTText {
    /// `nft list table` output for `table`, including the final newline.
    public static func table(_ table: Table) -> String {
        var out = "table \(table.family.rawValue) \(table.name) {\n"
        var delim = ""
        if !table.flags.isEmpty {
            out += "\tflags \(tableFlags(table.flags))\n"
            delim = "\n"
        }
        for set in table.sets {
            out += delim + setBlock(set)
            delim = "\n"
        }
        let rulesByChain = Dictionary(grouping: table.rules, by: \.chain)
        for chain in table.chains {
            out += delim + chainBlock(chain, family: table.family, rules: rulesByChain[chain.name] ?? [])
            delim = "\n"
        }
        return out + "}\n"
    }

    /// nft 1.0.6 knows `dormant` and `owner` and leaves `persist`, which it does not know, out:
    /// an `owner,persist` table lists as `flags owner` (checked against nft by
    /// `ConstructRoundTripTests.everyConstructRoundTripsAndNftAgrees`; nft also appends
    /// `# progname NAME` of the owning process to the table line, which a rendering cannot know),
    /// and a table whose only flag is `persist` (orphaned) as `flags ` and nothing else.
    static func tableFlags(_ flags: TableFlags) -> String {
        var names: [String] = []
        if flags.contains(.dormant) { names.append("dormant") }
        if flags.contains(.owner) { names.append("owner") }
        return names.joined(separator: ",")
    }

    /// A `set NAME { … }` / `map NAME { … }` block at one tab of indentation.
    public static func setBlock(_ set: NFTSet) -> String {
        var out = "\t\(set.isMap ? "map" : "set") \(set.name) {\n"
        out += "\t\ttype \(set.key)"
        if let data = set.data { out += " : \(data)" }
        out += "\n"
        let flags = printedFlags(set)
        if !flags.isEmpty { out += "\t\tflags \(flags.joined(separator: ","))\n" }
        if let t = set.timeoutMilliseconds { out += "\t\ttimeout \(duration(t))\n" }
        if !set.elements.isEmpty {
            out += "\t\telements = \(elementList(set.elements, perLine: perLine(set.key)))\n"
        }
        return out + "\t}\n"
    }

    static func printedFlags(_ set: NFTSet) -> [String] {
        SetFlags.nftNames.compactMap { flag, name in
            guard set.flags.contains(flag) else { return nil }
            if flag == .timeout, set.timeoutMilliseconds != nil { return nil }
            return name
        }
    }

    static func perLine(_ key: KeyType) -> Int {
        key.isConcatenation ? 1 : key.fields[0].elementsPerLine
    }

    /// `{ a, b,\n\t\t\t     c }`; `perLine` nil means one line (anonymous sets).
    static func elementList(_ elements: [SetElement], perLine: Int?) -> String {
        var out = "{ "
        var count = 0
        for (i, e) in elements.enumerated() {
            if i > 0 {
                if let perLine, count >= perLine {
                    out += ",\n\t\t\t     "
                    count = 0
                } else {
                    out += ", "
                }
            }
            out += element(e)
            count += 1
        }
        return out + " }"
    }

    /// A `chain NAME { … }` block at one tab of indentation.
    public static func chainBlock(_ chain: Chain, family: TableFamily, rules: [Rule]) -> String {
        var out = "\tchain \(chain.name) {\n"
        if let b = chain.base {
            out += "\t\t\(baseChainSpec(b, family: family))\n"
        }
        for r in rules { out += "\t\t\(rule(r))\n" }
        return out + "\t}\n"
    }

    /// `type filter hook forward priority filter - 10; policy accept;`
    public static func baseChainSpec(_ b: BaseChain, family: TableFamily) -> String {
        "type \(b.type.rawValue) hook \(b.hook.rawValue) priority "
            + "\(ChainPriority.text(b.priority, family: family, hook: b.hook)); policy \(b.policy.rawValue);"
    }

    /// One rule as nft prints it, without indentation.
    public static func rule(_ r: Rule) -> String {
        var parts = r.statements.map(statement)
        if let c = r.comment { parts.append("comment \(quoted(c))") }
        return parts.joined(separator: " ")
    }

    public static func statement(_ s: Statement) -> String {
        switch s {
        case .match(let m):
            return match(m)
        case .vmap(let fields, let map):
            let source: String
            switch map {
            case .named(let n): source = "@\(n)"
            case .anonymous(let els):
                source = elementList(ElementOrder.sorted(els, key: KeyType(fields.map(\.dataType))), perLine: nil)
            }
            return fields.map(\.rawValue).joined(separator: " . ") + " vmap " + source
        case .setFromMap(let target, let fields, let map):
            return "\(target.rawValue) set " + fields.map(\.rawValue).joined(separator: " . ") + " map @\(map)"
        case .counter(let p, let b):
            return "counter packets \(p) bytes \(b)"
        case .log(let l):
            var out = "log"
            if let p = l.prefix { out += " prefix \(quoted(p))" }
            if let g = l.group { out += " group \(g)" }
            if let lv = l.level { out += " level \(lv.rawValue)" }
            return out
        case .limit(let l):
            var out = "limit rate \(l.over ? "over " : "")"
            if l.bytes {
                out += "\(byteAmount(l.rate))/\(l.unit.rawValue)"
                if l.burst != 0 { out += " burst \(byteAmount(UInt64(l.burst)))" }
            } else {
                out += "\(l.rate)/\(l.unit.rawValue)"
                if l.burst != 5 { out += " burst \(l.burst) packets" }
            }
            return out
        case .reject(let r):
            return reject(r)
        case .verdict(let v):
            return v.description
        }
    }

    static func match(_ m: Match) -> String {
        let lhs = m.fields.map(\.rawValue).joined(separator: " . ")
        let op = m.negated ? " != " : " "
        switch m.operand {
        case .value(let v): return lhs + op + value(v)
        case .prefix(let v, let len): return lhs + op + value(v) + "/\(len)"
        case .range(let a, let b): return lhs + op + rangeEnd(a) + "-" + rangeEnd(b)
        case .set(let name): return lhs + op + "@" + name
        case .anonymousSet(let els):
            let sorted = ElementOrder.sorted(els, key: KeyType(m.fields.map(\.dataType)))
            return lhs + op + elementList(sorted, perLine: nil)
        }
    }

    static func reject(_ r: Reject) -> String {
        switch r {
        case .default: return "reject"
        case .tcpReset: return "reject with tcp reset"
        case .icmp(let c): return "reject with icmp \(name(c, in: icmpCodeNames))"
        case .icmpv6(let c): return "reject with icmpv6 \(name(c, in: icmpv6CodeNames))"
        case .icmpx(let c): return "reject with icmpx \(name(c, in: icmpxCodeNames))"
        }
    }

    /// `"text"`. nft has no escape for `"`, so validation rejects it; nothing is escaped here.
    static func quoted(_ s: String) -> String { "\"\(s)\"" }

    /// nft `get_rate`: the largest of bytes/kbytes/mbytes that divides the amount exactly.
    static func byteAmount(_ n: UInt64) -> String {
        var v = n
        var unit = 0
        let units = ["bytes", "kbytes", "mbytes"]
        while v != 0, v % 1024 == 0, unit < units.count - 1 {
            v /= 1024
            unit += 1
        }
        return "\(v) \(units[unit])"
    }

    /// nft `time_print`: `1d2h3m4s5ms`, zero components omitted.
    static func duration(_ ms: UInt64) -> String {
        let parts: [(UInt64, String)] = [(86_400_000, "d"), (3_600_000, "h"), (60000, "m"), (1000, "s"), (1, "ms")]
        var rest = ms
        var out = ""
        for (size, suffix) in parts where rest >= size {
            out += "\(rest / size)\(suffix)"
            rest %= size
        }
        return out.isEmpty ? "0s" : out
    }

    // MARK: values

    public static func value(_ v: Value) -> String {
        switch v {
        case .ipv4(let a): return a.description
        case .ipv6(let a): return a.description
        case .port(let p): return String(p)
        case .proto(let p): return protocolNames[p] ?? String(p)
        case .nfProto(let p): return p == NFProto.ipv4 ? "ipv4" : p == NFProto.ipv6 ? "ipv6" : String(p)
        case .ifname(let n): return quoted(n)
        case .etherAddr(let a): return a.description
        case .etherType(let t):
            switch t {
            case EtherTypes.ipv4: return "ip"
            case EtherTypes.ipv6: return "ip6"
            case EtherTypes.arp: return "arp"
            case 0x8100: return "8021q"
            case 0x88a8: return "8021ad"
            default:
                let hex = String(t, radix: 16)
                return "0x" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
            }
        case .mark(let m):
            let hex = String(m, radix: 16)
            return "0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex
        case .classid(let h):
            // nft `tchandle_type_print`: `root`, `none`, else `%x:%x` (major, minor).
            if h == 0xffff_ffff { return "root" }
            if h == 0 { return "none" }
            return String(h >> 16, radix: 16) + ":" + String(h & 0xffff, radix: 16)
        case .icmpType(let t): return name(t, in: icmpTypeNames)
        case .icmpv6Type(let t): return name(t, in: icmpv6TypeNames)
        case .ctState(let s):
            let names = CtState.names.filter { s.contains($0.0) }.map(\.1)
            return names.isEmpty ? "0x0" : names.joined(separator: ",")
        }
    }

    /// nft prints the ends of a range as numbers even for types whose single values it names:
    /// `icmp type 3-5`, `meta l4proto 6-17`, `icmp type { 3-5, echo-request }` (nft 1.0.6;
    /// found by `ConstructRoundTripTests`, which printed `destination-unreachable-redirect`).
    static func rangeEnd(_ v: Value) -> String {
        switch v {
        case .proto(let n), .nfProto(let n), .icmpType(let n), .icmpv6Type(let n): String(n)
        default: value(v)
        }
    }

    public static func keyPart(_ p: KeyPart) -> String {
        switch p {
        case .value(let v): return value(v)
        case .range(let a, let b):
            if let len = prefixLength(a, b) { return value(a) + "/\(len)" }
            return rangeEnd(a) + "-" + rangeEnd(b)
        }
    }

    public static func element(_ e: SetElement) -> String {
        var out = e.key.map(keyPart).joined(separator: " . ")
        if let d = e.data { out += " : \(d)" }
        return out
    }

    /// The prefix length when `low-high` is exactly one address prefix.
    static func prefixLength(_ low: Value, _ high: Value) -> Int? {
        switch (low, high) {
        case (.ipv4(let a), .ipv4(let b)):
            let x = a.value ^ b.value
            guard x & (x &+ 1) == 0, a.value & x == 0, b.value & x == x else { return nil }
            return 32 - x.nonzeroBitCount
        case (.ipv6(let a), .ipv6(let b)):
            let xh = a.high ^ b.high, xl = a.low ^ b.low
            let contiguous: Bool
            if xh == 0 { contiguous = xl & (xl &+ 1) == 0 } else { contiguous = xl == ~0 && xh & (xh &+ 1) == 0 }
            guard contiguous, a.high & xh == 0, a.low & xl == 0 else { return nil }
            return 128 - xh.nonzeroBitCount - xl.nonzeroBitCount
        default:
            return nil
        }
    }

    static func name(_ n: UInt8, in table: [UInt8: String]) -> String { table[n] ?? String(n) }

    /// `/etc/protocols` on Debian (netbase), which nft consults through `getprotobynumber`.
    static let protocolNames: [UInt8: String] = [
        0: "ip", 1: "icmp", 2: "igmp", 3: "ggp", 4: "ipencap", 5: "st", 6: "tcp", 8: "egp", 9: "igp",
        12: "pup", 17: "udp", 20: "hmp", 22: "xns-idp", 27: "rdp", 29: "iso-tp4", 33: "dccp", 36: "xtp",
        37: "ddp", 38: "idpr-cmtp", 41: "ipv6", 43: "ipv6-route", 44: "ipv6-frag", 45: "idrp",
        46: "rsvp", 47: "gre", 50: "esp", 51: "ah", 57: "skip", 58: "ipv6-icmp", 59: "ipv6-nonxt",
        60: "ipv6-opts", 73: "rspf", 81: "vmtp", 88: "eigrp", 89: "ospf", 93: "ax.25", 94: "ipip",
        97: "etherip", 98: "encap", 103: "pim", 108: "ipcomp", 112: "vrrp", 115: "l2tp", 124: "isis",
        132: "sctp", 133: "fc", 135: "mobility-header", 136: "udplite", 137: "mpls-in-ip",
        138: "manet", 139: "hip", 140: "shim6", 141: "wesp", 142: "rohc", 143: "ethernet",
    ]

    static let icmpTypeNames: [UInt8: String] = [
        0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect",
        8: "echo-request", 9: "router-advertisement", 10: "router-solicitation", 11: "time-exceeded",
        12: "parameter-problem", 13: "timestamp-request", 14: "timestamp-reply", 15: "info-request",
        16: "info-reply", 17: "address-mask-request", 18: "address-mask-reply",
    ]

    static let icmpv6TypeNames: [UInt8: String] = [
        1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem",
        128: "echo-request", 129: "echo-reply", 130: "mld-listener-query", 131: "mld-listener-report",
        132: "mld-listener-done", 133: "nd-router-solicit", 134: "nd-router-advert",
        135: "nd-neighbor-solicit", 136: "nd-neighbor-advert", 137: "nd-redirect",
        138: "router-renumbering", 141: "ind-neighbor-solicit", 142: "ind-neighbor-advert",
        143: "mld2-listener-report",
    ]

    static let icmpCodeNames: [UInt8: String] = [
        0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable",
        9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited",
    ]

    static let icmpv6CodeNames: [UInt8: String] = [
        0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable",
        5: "policy-fail", 6: "reject-route",
    ]

    static let icmpxCodeNames: [UInt8: String] = [
        0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited",
    ]
}
