import BulkheadCompiler
import Foundation
import BulkheadRuleset
import Testing
@testable import BulkheadNetfilter

/// Rules grouped by chain, in evaluation order (the kernel lists them chain by chain).
func rulesByChain(_ t: Table?) -> [String: [Rule]] {
    Dictionary(grouping: t?.rules ?? [], by: \.chain)
}

/// Lines that differ between two renderings, for readable failures.
func lineDiff(_ a: String, _ b: String) -> String {
    let x = a.split(separator: "\n", omittingEmptySubsequences: false), y = b.split(separator: "\n", omittingEmptySubsequences: false)
    var out: [String] = []
    for i in 0..<max(x.count, y.count) {
        let l = i < x.count ? String(x[i]) : "<none>", r = i < y.count ? String(y[i]) : "<none>"
        if l != r { out.append("line \(i + 1):\n  nft:   \(l)\n  model: \(r)") }
    }
    return out.joined(separator: "\n")
}

@Suite(.serialized, .enabled(if: Kernel.enabled, "needs root"))
struct KernelRoundTripTests {
    /// model → kernel → dump → the same model, for every construct the encoder knows.
    @Test func everyConstructRoundTrips() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            let table = everyConstructTable()
            let tx = try creation(of: table)
            try nf.apply(tx, expectedGeneration: try nf.generation())
            let got = comparable(try nf.dump(table: table.id))
            let want = comparable(tx.expected)!
            #expect(got?.sets == want.sets)
            #expect(got?.chains == want.chains)
            #expect(got?.flags == want.flags)
            let g = rulesByChain(got), w = rulesByChain(want)
            #expect(g.keys.sorted() == w.keys.sorted())
            for chain in w.keys.sorted() {
                #expect(g[chain]?.count == w[chain]?.count, "rules in \(chain)")
                for (a, b) in zip(g[chain] ?? [], w[chain] ?? []) where a != b {
                    Issue.record("rule in \(chain) differs:\n  dumped \(a)\n  model  \(b)")
                }
            }
            // Handles come back on every dumped rule.
            #expect(try nf.dump(table: table.id)?.rules.allSatisfy { $0.handle != nil } == true)
        }
    }

    /// `nft list table` of what we programmed prints exactly our rendering.
    @Test func nftListsWhatWeRender() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let table = everyConstructTable()
            let tx = try creation(of: table)
            try nf.apply(tx, expectedGeneration: nil)
            let listed = try Kernel.nft(["list", "table", "inet", "bulkhead"], in: ns)
            let rendered = NFTText.table(tx.expected!)
            #expect(listed == rendered, "\(lineDiff(listed, rendered))")
        }
    }

    @Test func missingTableDumpsAsNil() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            #expect(try nf.dump(table: TableID(family: .inet, name: "nothing")) == nil)
        }
    }
}

// MARK: - Coverage of every construct the model (and so the compiler) can emit

/// The constructs of the model, by name. Each `…Kind` mirrors one model enum and `Coverage.keys`
/// classifies with switches that have no `default`: a new case in `Statement`, `Operand`,
/// `MapRef`, `Reject`, `Verdict`, `TimeUnit`, `Value`, `ElementData` or `KeyPart` stops this file
/// from compiling until it has a kind here, and then `coverageTablesUseEveryConstruct` fails until
/// `Coverage.tables` uses it — so nothing reaches the kernel that the round trip never ran.
/// `Field`, `DataType`, `LogLevel` and `Hook` are `CaseIterable` and required case by case.
/// Not required here: table families other than inet and bridge and chain types other than
/// filter, which the compiler never emits (the ip family's encoding is in `GoldenBytesTests`).
enum Coverage {
    enum StatementKind: String, CaseIterable { case match, vmap, setFromMap, counter, log, limit, reject, verdict }
    enum OperandKind: String, CaseIterable {
        case value, prefix, range, set, anonymousSet, anonymousIntervalSet, concatenatedSet, concatenatedAnonymousSet
    }
    enum MapKind: String, CaseIterable { case named, anonymous }
    enum RejectKind: String, CaseIterable { case `default`, tcpReset, icmp, icmpv6, icmpx }
    enum VerdictKind: String, CaseIterable { case accept, drop, `continue`, `return`, jump, goto }
    enum UnitKind: String, CaseIterable { case second, minute, hour, day, week }
    enum LimitKind: String, CaseIterable { case packets, bytes, over, defaultBurst, customBurst }
    enum LogKind: String, CaseIterable { case prefix, group, level, bare }
    enum ValueKind: String, CaseIterable {
        case ipv4, ipv6, port, proto, nfProto, ifname, ifnameWildcard, mark, classid, icmpType, icmpv6Type, ctState, etherAddr, etherType
    }
    enum SetKind: String, CaseIterable {
        case plain, constant, interval, timeoutFlag, defaultTimeout, verdictMap, dataMap, concatenation, concatenatedInterval,
             rangeElement, emptySet
    }
    enum TableKind: String, CaseIterable { case inet, bridge, dormant, owner, persist }
    enum RuleKind: String, CaseIterable { case comment, negatedMatch, baseChainDrop, baseChainAccept, regularChain }

    /// Every key the tables must produce.
    static var required: Set<String> {
        var r: Set<String> = []
        r.formUnion(StatementKind.allCases.map { "statement \($0)" })
        r.formUnion(OperandKind.allCases.map { "operand \($0)" })
        r.formUnion(MapKind.allCases.map { "vmap \($0)" })
        r.formUnion(RejectKind.allCases.map { "reject \($0)" })
        r.formUnion(VerdictKind.allCases.map { "verdict \($0)" })
        r.formUnion(VerdictKind.allCases.map { "map verdict \($0)" })
        r.formUnion(UnitKind.allCases.map { "limit per \($0)" })
        r.formUnion(LimitKind.allCases.map { "limit \($0)" })
        r.formUnion(LogKind.allCases.map { "log \($0)" })
        // `warn` is the kernel default, which the model holds as nil (nft does not print it).
        r.formUnion(LogLevel.allCases.filter { $0 != .warn }.map { "log level \($0)" })
        r.formUnion(ValueKind.allCases.map { "value \($0)" })
        r.formUnion(SetKind.allCases.map { "set \($0)" })
        r.formUnion(DataType.allCases.map { "set key \($0)" })
        r.formUnion(Field.allCases.map { "field \($0)" })
        r.formUnion(Hook.allCases.map { "hook \($0)" })
        r.formUnion(TableKind.allCases.map { "table \($0)" })
        r.formUnion(RuleKind.allCases.map { "rule \($0)" })
        return r
    }

    /// The keys `tables` exercise.
    static func keys(_ tables: [Table]) -> Set<String> {
        var k: Set<String> = []
        for t in tables {
            k.insert("table \(t.family == .bridge ? "bridge" : "inet")")
            if t.flags.contains(.dormant) { k.insert("table dormant") }
            if t.flags.contains(.owner) { k.insert("table owner") }
            if t.flags.contains(.persist) { k.insert("table persist") }
            for c in t.chains {
                if let b = c.base {
                    k.insert("hook \(b.hook)")
                    k.insert(b.policy == .drop ? "rule baseChainDrop" : "rule baseChainAccept")
                } else {
                    k.insert("rule regularChain")
                }
            }
            for s in t.sets { k.formUnion(keys(s)) }
            for r in t.rules {
                if r.comment != nil { k.insert("rule comment") }
                for s in r.statements { k.formUnion(keys(s)) }
            }
        }
        return k
    }

    static func keys(_ s: NFTSet) -> Set<String> {
        var k: Set<String> = ["set plain"]
        for f in s.key.fields { k.insert("set key \(f)") }
        if s.flags.contains(.constant) { k.insert("set constant") }
        if s.flags.contains(.interval) { k.insert("set interval") }
        if s.flags.contains(.timeout) { k.insert("set timeoutFlag") }
        if s.timeoutMilliseconds != nil { k.insert("set defaultTimeout") }
        if s.key.isConcatenation { k.insert(s.flags.contains(.interval) ? "set concatenatedInterval" : "set concatenation") }
        if s.elements.isEmpty { k.insert("set emptySet") }
        switch s.data {
        case nil: break
        case .verdict: k.insert("set verdictMap")
        case .value: k.insert("set dataMap")
        }
        for e in s.elements { k.formUnion(keys(e, mapVerdicts: true)) }
        return k
    }

    static func keys(_ e: SetElement, mapVerdicts: Bool) -> Set<String> {
        var k: Set<String> = []
        for p in e.key {
            switch p {
            case .value(let v): k.insert("value \(kind(v))")
            case .range(let lo, let hi):
                k.insert("set rangeElement")
                k.insert("value \(kind(lo))")
                k.insert("value \(kind(hi))")
            }
        }
        switch e.data {
        case nil: break
        case .verdict(let v)?: if mapVerdicts { k.insert("map verdict \(kind(v))") }
        case .value(let v)?: k.insert("value \(kind(v))")
        }
        return k
    }

    static func keys(_ s: Statement) -> Set<String> {
        switch s {
        case .match(let m):
            var k: Set<String> = ["statement match"]
            if m.negated { k.insert("rule negatedMatch") }
            for f in m.fields { k.insert("field \(f)") }
            switch m.operand {
            case .value(let v): k.formUnion(["operand value", "value \(kind(v))"])
            case .prefix(let v, _): k.formUnion(["operand prefix", "value \(kind(v))"])
            case .range(let lo, _): k.formUnion(["operand range", "value \(kind(lo))"])
            case .set: k.insert(m.fields.count > 1 ? "operand concatenatedSet" : "operand set")
            case .anonymousSet(let els):
                k.insert(m.fields.count > 1 ? "operand concatenatedAnonymousSet"
                         : els.contains { $0.key.contains(where: \.isRange) } ? "operand anonymousIntervalSet" : "operand anonymousSet")
                for e in els { k.formUnion(keys(e, mapVerdicts: false)) }
            }
            return k
        case .vmap(let fields, let map):
            var k: Set<String> = ["statement vmap"]
            for f in fields { k.insert("field \(f)") }
            switch map {
            case .named: k.insert("vmap named")
            case .anonymous(let els):
                k.insert("vmap anonymous")
                for e in els { k.formUnion(keys(e, mapVerdicts: true)) }
            }
            return k
        case .setFromMap(let target, let fields, _):
            return Set(["statement setFromMap", "field \(target)"] + fields.map { "field \($0)" })
        case .counter:
            return ["statement counter"]
        case .log(let l):
            var k: Set<String> = ["statement log"]
            if l.prefix != nil { k.insert("log prefix") }
            if l.group != nil { k.insert("log group") }
            if let level = l.level { k.formUnion(["log level", "log level \(level)"]) }
            if l.prefix == nil && l.group == nil && l.level == nil { k.insert("log bare") }
            return k
        case .limit(let l):
            var k: Set<String> = ["statement limit", "limit \(l.bytes ? "bytes" : "packets")"]
            if l.over { k.insert("limit over") }
            k.insert(l.burst == (l.bytes ? 0 : 5) ? "limit defaultBurst" : "limit customBurst")
            let unit: UnitKind = switch l.unit {
            case .second: .second
            case .minute: .minute
            case .hour: .hour
            case .day: .day
            case .week: .week
            }
            k.insert("limit per \(unit)")
            return k
        case .reject(let r):
            let kind: RejectKind = switch r {
            case .default: .default
            case .tcpReset: .tcpReset
            case .icmp: .icmp
            case .icmpv6: .icmpv6
            case .icmpx: .icmpx
            }
            return ["statement reject", "reject \(kind)"]
        case .verdict(let v):
            return ["statement verdict", "verdict \(kind(v))"]
        }
    }

    static func kind(_ v: Verdict) -> VerdictKind {
        switch v {
        case .accept: .accept
        case .drop: .drop
        case .continue: .continue
        case .return: .return
        case .jump: .jump
        case .goto: .goto
        }
    }

    static func kind(_ v: Value) -> ValueKind {
        switch v {
        case .ipv4: .ipv4
        case .ipv6: .ipv6
        case .port: .port
        case .proto: .proto
        case .nfProto: .nfProto
        case .ifname: v.isWildcard ? .ifnameWildcard : .ifname
        case .mark: .mark
        case .classid: .classid
        case .icmpType: .icmpType
        case .icmpv6Type: .icmpv6Type
        case .ctState: .ctState
        case .etherAddr: .etherAddr
        case .etherType: .etherType
        }
    }

    // MARK: the tables

    /// `everyConstructTable` plus what it lacks: every limit unit, burst and log level, reject
    /// icmpv6, sets keyed by ct state, mark, ICMP types, nf_proto, IPv6 ranges, wildcard
    /// interfaces, timeouts, every verdict in a map.
    static func inet() -> Table {
        var t = everyConstructTable()
        t.chains[1].base?.policy = .drop  // input: a drop policy (in a throwaway namespace)
        t.sets += [
            NFTSet(name: "states", key: KeyType(.ctState),
                   elements: [SetElement(.ctState(.established)), SetElement(.ctState(.related)), SetElement(.ctState(.new))]),
            NFTSet(name: "mark_set", key: KeyType(.mark), elements: [SetElement(.mark(1)), SetElement(.mark(0xdead_beef))]),
            NFTSet(name: "icmp_types", key: KeyType(.icmpType), elements: [SetElement(.icmpType(0)), SetElement(.icmpType(8))]),
            NFTSet(name: "icmpv6_types", key: KeyType(.icmpv6Type), elements: [SetElement(.icmpv6Type(128)), SetElement(.icmpv6Type(135))]),
            NFTSet(name: "families", key: KeyType(.nfProto), elements: [SetElement(.nfProto(NFProto.ipv4)), SetElement(.nfProto(NFProto.ipv6))]),
            NFTSet(name: "v6_ranges", key: KeyType(.ipv6Addr), flags: .interval,
                   elements: [SetElement(key: [.between(.ipv6(v6("fd10::1")), .ipv6(v6("fd10::9")))]),
                              SetElement(key: [.prefix(v6("fd11::"), 48)]), SetElement(.ipv6(v6("fd12::1")))]),
            NFTSet(name: "wild_ifaces", key: KeyType(.ifname), flags: .interval,
                   elements: [SetElement(key: [.value(.ifname("veth*"))]), SetElement(.ifname("eth0"))]),
            NFTSet(name: "timed", key: KeyType(.ipv4Addr), flags: .timeout),
            NFTSet(name: "every_verdict", key: KeyType(.inetService), data: .verdict,
                   elements: [SetElement(.port(1), .verdict(.accept)), SetElement(.port(2), .verdict(.drop)),
                              SetElement(.port(3), .verdict(.continue)), SetElement(.port(4), .verdict(.return)),
                              SetElement(.port(5), .verdict(.jump("in_api"))), SetElement(.port(6), .verdict(.goto("in_api")))]),
            // The compiler's dispatch: address → classid, `meta priority set … map`, classid → verdict.
            NFTSet(name: "numbers_v6", key: KeyType(.ipv6Addr), data: .value(.classid),
                   elements: [SetElement(.ipv6(v6("fd40::1")), .value(.classid(0x10))), SetElement(.ipv6(v6("fd40::2")), .value(.classid(0x0001_fff0)))]),
            NFTSet(name: "by_number", key: KeyType(.classid), data: .verdict,
                   elements: [SetElement(.classid(0x10), .verdict(.jump("in_api"))), SetElement(.classid(0x0001_fff0), .verdict(.drop))]),
        ]
        t.chains.append(Chain(name: "limits"))
        var rules: [Rule] = [
            Rule(chain: "forward", [.match(Match(.ctState, .set("states"))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ctState, negated: true, .anonymousSet([SetElement(.ctState(.invalid)), SetElement(.ctState(.untracked))]))),
                                    .verdict(.jump("limits"))]),
            Rule(chain: "forward", [.match(Match(.icmpType, .set("icmp_types"))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.icmpv6Type, negated: true, .set("icmpv6_types"))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.metaNfproto, .set("families"))), .counter()]),
            Rule(chain: "forward", [.match(Match(.ip6Daddr, .set("v6_ranges"))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ip6Daddr, .range(.ipv6(v6("fd20::1")), .ipv6(v6("fd20::ff"))))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ip6Saddr, negated: true, .range(.ipv6(v6("fd21::")), .ipv6(v6("fd21::ffff"))))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ip6Saddr, .anonymousSet([SetElement(key: [.prefix(v6("fd30::"), 64)]),
                                                                          SetElement(key: [.between(.ipv6(v6("fd31::1")), .ipv6(v6("fd31::5")))])]))),
                                    .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.icmpType, .range(.icmpType(3), .icmpType(5)))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.oifname, .set("wild_ifaces"))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match([.ipSaddr, .tcpDport], .anonymousSet([SetElement(.ipv4(v4("10.0.0.1")), .port(22))]))), .verdict(.accept)]),
            Rule(chain: "forward", [.vmap(fields: [.thDport], map: .named("every_verdict"))]),
            Rule(chain: "forward", [.setFromMap(target: .metaPriority, fields: [.ip6Daddr], map: "numbers_v6"),
                                    .vmap(fields: [.metaPriority], map: .named("by_number"))]),
            Rule(chain: "forward", [.vmap(fields: [.udpDport], map: .anonymous([SetElement(.port(53), .verdict(.accept)), SetElement(.port(54), .verdict(.return)),
                                                                                 SetElement(.port(55), .verdict(.continue)), SetElement(.port(56), .verdict(.drop))]))]),
            Rule(chain: "forward", [.reject(.icmpv6(1))]),
            Rule(chain: "forward", [.reject(.icmpv6(4))]),
            Rule(chain: "forward", [.match(Match(.tcpDport, .value(.port(25)))), .reject(.tcpReset)]),
            Rule(chain: "forward", [.reject(.icmp(3))]),
            Rule(chain: "forward", [.reject(.icmpx(0))]),
            Rule(chain: "forward", [.log(Log())]),
            Rule(chain: "forward", [.log(Log(group: 0))]),
            Rule(chain: "forward", [.log(Log(prefix: "lvl ", level: .debug)), .counter()]),
        ]
        for level in LogLevel.allCases where level != .warn {
            rules.append(Rule(chain: "limits", [.log(Log(prefix: "\(level) ", level: level))], comment: "log \(level)"))
        }
        let units: [TimeUnit] = [.second, .minute, .hour, .day, .week]
        for (i, unit) in units.enumerated() {
            rules.append(Rule(chain: "limits", [.limit(Limit(rate: UInt64(3 + i), per: unit)), .verdict(.accept)]))
            rules.append(Rule(chain: "limits", [.limit(Limit(rate: UInt64(30 + i), per: unit, burst: UInt32(7 + i))), .counter()]))
            rules.append(Rule(chain: "limits", [.limit(Limit(rate: UInt64(1000 * (i + 1)), per: unit, burst: UInt32(2000 + i), bytes: true)), .counter()]))
            rules.append(Rule(chain: "limits", [.limit(Limit(rate: UInt64(40 + i), per: unit, over: true)), .verdict(.drop)]))
        }
        rules.append(Rule(chain: "limits", [.limit(Limit(rate: 512, per: .second, bytes: true)), .verdict(.accept)]))
        t.rules += rules
        return t
    }

    /// The bridge family: what `PortBinding` emits and more (ether type incl. VLAN, ether saddr,
    /// ARP sender fields, the ND target, concatenations with interface names).
    static func bridge() -> Table {
        let mac = EtherAddress("02:42:ac:11:00:02")!
        return Table(
            family: .bridge, name: "bulkhead",
            sets: [
                NFTSet(name: "ports", key: KeyType(.ifname), elements: [SetElement(.ifname("veth0")), SetElement(.ifname("veth1"))]),
                NFTSet(name: "bind_ether", key: KeyType(.ifname, .etherAddr), elements: [SetElement(.ifname("veth0"), .etherAddr(mac))]),
                NFTSet(name: "bind_v4", key: KeyType(.ifname, .ipv4Addr), elements: [SetElement(.ifname("veth0"), .ipv4(v4("172.17.0.2")))]),
                NFTSet(name: "bind_v6", key: KeyType(.ifname, .ipv6Addr), elements: [SetElement(.ifname("veth0"), .ipv6(v6("fe80::42:acff:fe11:2")))]),
                NFTSet(name: "bind_arp", key: KeyType(.ifname, .etherAddr, .ipv4Addr),
                       elements: [SetElement(.ifname("veth0"), .etherAddr(mac), .ipv4(v4("172.17.0.2")))]),
                NFTSet(name: "macs", key: KeyType(.etherAddr), elements: [SetElement(.etherAddr(mac))]),
                NFTSet(name: "ether_types", key: KeyType(.etherType), elements: [SetElement(.etherType(EtherTypes.ipv4)), SetElement(.etherType(EtherTypes.arp))]),
            ],
            chains: [
                Chain(name: "prerouting", base: BaseChain(hook: .prerouting, priority: -200)),
                Chain(name: "output", base: BaseChain(hook: .output, priority: -200)),
                Chain(name: "postrouting", base: BaseChain(hook: .postrouting, priority: 300, policy: .accept)),
            ],
            rules: [
                Rule(chain: "prerouting", [.match(Match(.iifname, negated: true, .set("ports"))), .verdict(.accept)]),
                Rule(chain: "prerouting", [.match(Match(.etherType, .value(.etherType(0x8100)))), .counter(), .verdict(.drop)], comment: "vlan"),
                Rule(chain: "prerouting", [.match(Match(.etherType, negated: true, .anonymousSet([SetElement(.etherType(EtherTypes.ipv4)), SetElement(.etherType(EtherTypes.arp)),
                                                                                                 SetElement(.etherType(EtherTypes.ipv6))]))),
                                           .counter(), .verdict(.drop)]),
                Rule(chain: "prerouting", [.match(Match(.etherType, .set("ether_types"))), .counter()]),
                Rule(chain: "prerouting", [.match(Match(.etherSaddr, .set("macs"))), .counter()]),
                Rule(chain: "prerouting", [.match(Match(.etherSaddr, .value(.etherAddr(mac)))), .counter()]),
                Rule(chain: "prerouting", [.match(Match([.iifname, .etherSaddr], negated: true, .set("bind_ether"))), .counter(), .verdict(.drop)]),
                Rule(chain: "prerouting", [.match(Match(.arpSaddrIP, .value(.ipv4(v4("0.0.0.0"))))), .match(Match([.iifname, .arpSaddrEther], .set("bind_ether"))), .verdict(.accept)]),
                Rule(chain: "prerouting", [.match(Match([.iifname, .arpSaddrEther, .arpSaddrIP], negated: true, .set("bind_arp"))), .counter(), .verdict(.drop)]),
                Rule(chain: "prerouting", [.match(Match([.iifname, .ipSaddr], negated: true, .set("bind_v4"))), .counter(), .verdict(.drop)]),
                Rule(chain: "prerouting", [.match(Match(.ip6Saddr, .value(.ipv6(v6("::"))))),
                                           .match(Match(.icmpv6Type, .anonymousSet([SetElement(.icmpv6Type(131)), SetElement(.icmpv6Type(135)), SetElement(.icmpv6Type(143))]))),
                                           .verdict(.accept)]),
                Rule(chain: "prerouting", [.match(Match([.iifname, .ip6Saddr], negated: true, .set("bind_v6"))), .counter(), .verdict(.drop)]),
                Rule(chain: "prerouting", [.match(Match(.icmpv6Type, .value(.icmpv6Type(136)))),
                                           .match(Match([.iifname, .icmpv6Taddr], negated: true, .set("bind_v6"))), .counter(), .verdict(.drop)]),
                Rule(chain: "prerouting", [.match(Match(.ip6Saddr, .prefix(.ipv6(v6("fe80::")), 10))),
                                           .match(Match(.metaL4proto, negated: true, .value(.proto(IPProto.icmpv6)))), .counter(), .verdict(.drop)]),
                Rule(chain: "output", [.match(Match(.oifname, negated: true, .set("ports"))), .verdict(.accept)]),
                Rule(chain: "postrouting", [.match(Match(.ipDaddr, .value(.ipv4(v4("172.17.0.2"))))), .counter()]),
            ])
    }

    /// Tables that differ only in their flags (each is its own table in the kernel).
    static func flagged() -> [Table] {
        [Table(family: .inet, name: "bh_dormant", flags: .dormant, chains: [Chain(name: "input", base: BaseChain(hook: .input, priority: 0))]),
         Table(family: .inet, name: "bh_owned", flags: [.owner, .persist])]
    }

    static var tables: [Table] { [inet(), bridge()] + flagged() }
}

/// Needs no kernel: it checks the tables that `ConstructRoundTripTests` sends.
struct ConstructCoverageTests {
    /// The round-trip tables use every construct of the model (see `Coverage`).
    @Test func coverageTablesUseEveryConstruct() {
        let used = Coverage.keys(Coverage.tables)
        let missing = Coverage.required.subtracting(used)
        #expect(Coverage.required.count > 100, "the coverage table lists \(Coverage.required.count) constructs")
        #expect(missing.isEmpty, "constructs no round-trip table uses: \(missing.sorted().joined(separator: ", "))")
    }
}

@Suite(.enabled(if: Kernel.enabled, "needs root"))
struct ConstructRoundTripTests {
    /// encode → kernel → dump → decode gives the model back, for every table of `Coverage` (both
    /// families in one batch), and `nft list table` (the independent oracle) prints exactly our
    /// rendering of each.
    @Test func everyConstructRoundTripsAndNftAgrees() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let tables = Coverage.tables
            let txs = try tables.map(creation(of:))
            try nf.apply(txs, expectedGeneration: try nf.generation())
            #expect(txs.count == 4)
            for (table, tx) in zip(tables, txs) {
                let want = try #require(tx.expected)
                let got = try #require(try nf.dump(table: table.id), "\(table.id) is not in the kernel")
                expectSameTable(got, want)
                // nft names the owning process of an `owner` table (`# progname NAME`), which
                // no rendering of the model can know.
                let listed = try Kernel.nft(["list", "table", table.family.rawValue, table.name], in: ns)
                    .replacingOccurrences(of: #" # progname [^\n]*"#, with: "", options: .regularExpression)
                let rendered = NFTText.table(want)
                #expect(listed == rendered, "\(table.id):\n\(lineDiff(listed, rendered))")
            }
        }
    }

    /// What the compiler emits for the example policies (with ports and MACs, so the bridge
    /// table binds them) round-trips the same way.
    @Test func compiledExamplePoliciesRoundTrip() throws {
        let compiled = Compiler.compile(try exampleDiffPolicies(), withPorts(try exampleDiffInventory()))
        let keys = Coverage.keys([compiled.table, compiled.bridgeTable])
        #expect(keys.contains("table bridge") && keys.contains("set concatenation"), "the compiled bridge table binds ports")
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let txs = try [compiled.table, compiled.bridgeTable].map(creation(of:))
            try nf.apply(txs, expectedGeneration: try nf.generation())
            for tx in txs {
                let want = try #require(tx.expected)
                let got = try #require(try nf.dump(table: tx.table))
                expectSameTable(got, want)
                let listed = try Kernel.nft(["list", "table", tx.table.family.rawValue, tx.table.name], in: ns)
                #expect(listed == NFTText.table(want), "\(tx.table):\n\(lineDiff(listed, NFTText.table(want)))")
            }
        }
    }
}

/// Sets, chains, flags and rules (chain by chain) equal, counters and handles aside; one issue
/// per differing rule.
func expectSameTable(_ dumped: Table, _ model: Table, sourceLocation: SourceLocation = #_sourceLocation) {
    let got = comparable(dumped)!, want = comparable(model)!
    #expect(dumped.flags == model.flags, "\(model.id) flags", sourceLocation: sourceLocation)
    #expect(got.sets.map(\.name) == want.sets.map(\.name), "\(model.id) sets", sourceLocation: sourceLocation)
    for (a, b) in zip(got.sets, want.sets) where a != b {
        Issue.record("set \(b.name) differs:\n  dumped \(a)\n  model  \(b)", sourceLocation: sourceLocation)
    }
    #expect(got.chains == want.chains, "\(model.id) chains", sourceLocation: sourceLocation)
    let g = rulesByChain(got), w = rulesByChain(want)
    #expect(g.keys.sorted() == w.keys.sorted(), sourceLocation: sourceLocation)
    for chain in w.keys.sorted() {
        #expect(g[chain]?.count == w[chain]?.count, "rules in \(chain)", sourceLocation: sourceLocation)
        for (a, b) in zip(g[chain] ?? [], w[chain] ?? []) where a != b {
            Issue.record("rule in \(chain) differs:\n  dumped \(a)\n  model  \(b)", sourceLocation: sourceLocation)
        }
    }
}
