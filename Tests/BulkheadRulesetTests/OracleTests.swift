import Testing
import BulkheadRuleset

/// Each test loads our script form with `nft -f` in a fresh namespace and checks that
/// `nft list table` prints exactly our rendering of the same table.
@Suite(.enabled(if: Oracle.enabled, "needs root (or CI=true, where it must fail instead of skip)"), .serialized)
struct OracleTests {
    func expectRoundTrip(_ table: Table, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let tx = try Diff.between(desired: table, live: nil)
        let listed = try Oracle.withNamespace { ns in
            try Oracle.load(tx.description, in: ns)
            return try Oracle.list("\(table.family.rawValue) \(table.name)", in: ns)
        }
        let ours = NFTText.table(table)
        #expect(listed == ours, "nft list differs from our rendering\n--- nft\n\(listed)--- ours\n\(ours)", sourceLocation: sourceLocation)
    }

    @Test func architectureDataplane() throws {
        try expectRoundTrip(architectureTable())
    }

    @Test func everyStatementInInet() throws {
        try expectRoundTrip(kitchenSink())
    }

    @Test func setsOfEveryKeyTypeWrapAndSortLikeNft() throws {
        try expectRoundTrip(setZoo())
    }

    @Test func ipAndIp6FamilyDefaults() throws {
        let ip = Table(family: .ip, name: "bh4", chains: [
            Chain(name: "input", base: BaseChain(hook: .input, priority: 0, policy: .drop)),
            Chain(name: "pre", base: BaseChain(hook: .prerouting, priority: -300)),
            Chain(name: "post", base: BaseChain(hook: .postrouting, priority: 105)),
        ], rules: [
            Rule(chain: "input", [.match(Match(.ipSaddr, .value(.ipv4(v4("1.1.1.1"))))),
                                  .match(Match(.tcpDport, .value(.port(22)))), .verdict(.accept)]),
            Rule(chain: "input", [.match(Match(.icmpType, .value(.icmpType(8)))), .reject(.default)]),
            Rule(chain: "input", [.reject(.icmp(13))]),
            Rule(chain: "pre", [.reject(.tcpReset)]),
        ])
        try expectRoundTrip(ip)
        let ip6 = Table(family: .ip6, name: "bh6", flags: .dormant, chains: [
            Chain(name: "output", base: BaseChain(hook: .output, priority: -155)),
        ], rules: [
            Rule(chain: "output", [.match(Match(.ip6Daddr, .prefix(.ipv6(v6("fd00::")), 64))), .reject(.default)]),
            Rule(chain: "output", [.match(Match(.icmpv6Type, .anonymousSet([SetElement(.icmpv6Type(135)), SetElement(.icmpv6Type(128))]))), .verdict(.accept)]),
            Rule(chain: "output", [.reject(.icmpv6(1))]),
        ])
        try expectRoundTrip(ip6)
    }

    /// The diff's script, run by nft on top of the live table, yields exactly the desired table.
    @Test func diffScriptsConvergeInNft() throws {
        let live = architectureTable()
        var desired = live
        desired.chains = desired.chains.filter { $0.name != "in_shop_api" } + [Chain(name: "in_shop_db")]
        desired.sets = desired.sets.filter { $0.name != "svc_shop_frontend_v4" }
            + [NFTSet(name: "svc_shop_api_v4", key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("172.18.0.4")))])]
        desired.sets[0].setElements([SetElement(.ipv4(v4("172.18.0.5")), .verdict(.jump("in_shop_db")))])
        desired.sets[2].setElements([SetElement(key: [.prefix(v4("172.19.0.0"), 16)]), SetElement(key: [.prefix(v4("172.18.0.0"), 16)])])
        desired.rules = desired.rules.filter { $0.chain != "in_shop_api" } + [
            Rule(chain: "in_shop_db", [.match(Match(.ipSaddr, .set("svc_shop_api_v4"))), .match(Match(.tcpDport, .value(.port(5432)))), .verdict(.accept)], comment: "policies/db.yaml:3"),
            Rule(chain: "in_shop_db", [.counter(), .verdict(.drop)]),
        ]
        desired.chains[0].base?.policy = .drop
        desired.rules[0] = Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState([.established, .related])))), .counter(), .verdict(.accept)])
        let create = try Diff.between(desired: live, live: nil)
        let change = try Diff.between(desired: desired, live: live)
        let listed = try Oracle.withNamespace { ns in
            try Oracle.load(create.description, in: ns)
            try Oracle.load(change.description, in: ns)
            return try Oracle.list("inet bulkhead", in: ns)
        }
        #expect(listed == NFTText.table(desired), "--- nft\n\(listed)--- ours\n\(NFTText.table(desired))--- script\n\(change)")
    }

    @Test func emptyAndDormantTables() throws {
        try expectRoundTrip(Table(family: .inet, name: "empty"))
        try expectRoundTrip(Table(family: .inet, name: "dormant", flags: .dormant))
        try expectRoundTrip(Table(family: .inet, name: "dormant2", flags: .dormant, chains: [Chain(name: "a")]))
    }
}

func kitchenSink() -> Table {
    let any4 = Value.ipv4(v4("10.0.0.1"))
    func r(_ s: [Statement], comment: String? = nil) -> Rule { Rule(chain: "rules", s, comment: comment) }
    return Table(
        family: .inet, name: "bh",
        sets: [
            NFTSet(name: "s4", key: KeyType(.ipv4Addr)),
            NFTSet(name: "s6", key: KeyType(.ipv6Addr)),
            NFTSet(name: "ports", key: KeyType(.inetService), flags: .interval),
            NFTSet(name: "flows", key: KeyType(.ipv4Addr, .ipv4Addr, .inetService)),
            NFTSet(name: "ifs", key: KeyType(.ifname)),
            NFTSet(name: "m", key: KeyType(.ipv4Addr), data: .verdict,
                   elements: [SetElement(any4, .verdict(.jump("target"))), SetElement(.ipv4(v4("10.0.0.2")), .verdict(.goto("target"))),
                              SetElement(.ipv4(v4("10.0.0.3")), .verdict(.drop))]),
            NFTSet(name: "m6", key: KeyType(.ipv6Addr), data: .verdict),
        ],
        chains: [
            Chain(name: "forward", base: BaseChain(hook: .forward, priority: -10)),
            Chain(name: "rules"),
            Chain(name: "target"),
        ],
        rules: [
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState([.established, .related])))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState(.invalid)))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ctState, negated: true, .value(.ctState(.established))))]),
            Rule(chain: "forward", [.match(Match(.ctState, negated: true, .anonymousSet([SetElement(.ctState(.related)), SetElement(.ctState(.established))])))]),
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState([.new, .untracked])))), .counter()]),
            Rule(chain: "forward", [.match(Match(.ctState, .anonymousSet([SetElement(.ctState(.new)), SetElement(.ctState(.invalid))]))), .verdict(.accept)]),
            Rule(chain: "forward", [.vmap(fields: [.ipDaddr], map: .named("m"))]),
            Rule(chain: "forward", [.vmap(fields: [.ip6Saddr], map: .named("m6"))]),
            Rule(chain: "forward", [.vmap(fields: [.ipSaddr], map: .anonymous([SetElement(.ipv4(v4("10.9.0.2")), .verdict(.jump("target"))), SetElement(any4, .verdict(.accept))]))]),
            Rule(chain: "forward", [.vmap(fields: [.tcpDport], map: .anonymous([SetElement(.port(22), .verdict(.accept))]))]),
            Rule(chain: "forward", [.verdict(.jump("rules"))]),
            r([.match(Match(.ipSaddr, .value(any4))), .match(Match(.ipDaddr, negated: true, .value(.ipv4(v4("10.0.0.2"))))),
               .match(Match(.tcpDport, .value(.port(22)))), .verdict(.accept)]),
            r([.match(Match(.ipSaddr, .set("s4"))), .match(Match(.udpDport, .range(.port(1000), .port(2000)))), .verdict(.drop)]),
            r([.match(Match(.ipSaddr, negated: true, .set("s4"))), .match(Match(.thDport, .value(.port(53))))]),
            r([.match(Match(.ip6Daddr, .set("s6"))), .verdict(.drop)]),
            r([.match(Match([.ipSaddr, .ipDaddr, .tcpDport], .set("flows"))), .verdict(.accept)]),
            r([.match(Match([.ipSaddr, .tcpDport], .anonymousSet([SetElement(any4, .port(22))]))), .verdict(.accept)]),
            r([.match(Match(.ipSaddr, .anonymousSet([SetElement(.ipv4(v4("10.0.0.5"))), SetElement(any4)]))), .match(Match(.udpDport, .range(.port(1000), .port(2000)))), .verdict(.accept)]),
            r([.match(Match(.ipSaddr, negated: true, .anonymousSet([SetElement(.ipv4(v4("10.0.0.5"))), SetElement(any4)]))), .verdict(.drop)]),
            r([.match(Match(.ipSaddr, .anonymousSet([SetElement(key: [.prefix(v4("10.0.0.0"), 8)]), SetElement(key: [.between(.ipv4(v4("192.168.0.0")), .ipv4(v4("192.168.0.10")))])]))), .verdict(.accept)]),
            r([.match(Match(.ipSaddr, .prefix(.ipv4(v4("10.0.0.0")), 8))), .verdict(.accept)]),
            r([.match(Match(.ipSaddr, .prefix(.ipv4(v4("10.1.2.0")), 23))), .verdict(.accept)]),
            r([.match(Match(.ip6Saddr, .value(.ipv6(v6("fd00::1"))))), .match(Match(.ip6Daddr, negated: true, .prefix(.ipv6(v6("fd00::")), 64))), .verdict(.accept)]),
            r([.match(Match(.thDport, .anonymousSet([SetElement(.port(54)), SetElement(.port(53))]))), .verdict(.accept)]),
            r([.match(Match(.tcpDport, .set("ports"))), .verdict(.accept)]),
            r([.match(Match(.tcpDport, negated: true, .value(.port(22)))), .verdict(.accept)]),
            r([.match(Match(.tcpDport, negated: true, .range(.port(1000), .port(2000)))), .verdict(.accept)]),
            r([.match(Match(.tcpDport, .anonymousSet([SetElement(key: [.value(.port(22))]), SetElement(key: [.between(.port(80), .port(90))])]))), .verdict(.accept)]),
            r([.match(Match(.metaL4proto, .value(.proto(IPProto.tcp)))), .verdict(.accept)]),
            r([.match(Match(.metaL4proto, negated: true, .value(.proto(IPProto.udp)))), .verdict(.accept)]),
            r([.match(Match(.metaL4proto, .anonymousSet([SetElement(.proto(17)), SetElement(.proto(6))]))), .verdict(.accept)]),
            r([.match(Match(.metaNfproto, .value(.nfProto(NFProto.ipv6)))), .verdict(.accept)]),
            r([.match(Match(.metaNfproto, .value(.nfProto(NFProto.ipv4)))), .match(Match(.metaL4proto, .value(.proto(IPProto.tcp))))]),
            r([.match(Match(.metaL4proto, .value(.proto(IPProto.tcp)))), .match(Match(.tcpDport, .value(.port(23)))), .verdict(.accept)]),
            r([.match(Match(.icmpType, .value(.icmpType(8)))), .verdict(.accept)]),
            r([.match(Match(.icmpType, negated: true, .value(.icmpType(8)))), .verdict(.accept)]),
            r([.match(Match(.icmpv6Type, .anonymousSet([SetElement(.icmpv6Type(135)), SetElement(.icmpv6Type(128))]))), .verdict(.accept)]),
            r([.match(Match(.iifname, .value(.ifname("eth0")))), .match(Match(.oifname, negated: true, .value(.ifname("veth1")))), .verdict(.accept)]),
            r([.match(Match(.iifname, .value(.ifname("veth*")))), .verdict(.accept)]),
            r([.match(Match(.iifname, .set("ifs"))), .verdict(.accept)]),
            r([.match(Match(.oifname, .anonymousSet([SetElement(.ifname("veth1")), SetElement(.ifname("eth0"))]))), .verdict(.accept)]),
            r([.counter(), .log(Log(prefix: "bh: ", group: 2)), .verdict(.drop)]),
            r([.log(Log(prefix: "x", level: .warn))]),
            r([.log(Log(level: .info))]),
            r([.log(Log(group: 0))]),
            r([.log(Log())]),
            r([.limit(Limit(rate: 10, per: .second)), .verdict(.accept)]),
            r([.limit(Limit(rate: 10, per: .second, burst: 10)), .verdict(.accept)]),
            r([.limit(Limit(rate: 10, per: .minute, over: true)), .verdict(.drop)]),
            r([.limit(Limit(rate: 100 * 1024, per: .second, burst: 1000, bytes: true))]),
            r([.limit(Limit(rate: 1, per: .hour))]),
            r([.limit(Limit(rate: 2, per: .day))]),
            r([.reject(.default)]),
            r([.match(Match(.metaL4proto, .value(.proto(IPProto.tcp)))), .reject(.tcpReset)]),
            r([.match(Match(.tcpDport, .value(.port(25)))), .reject(.tcpReset)]),
            r([.reject(.icmp(3))]),
            r([.reject(.icmpx(3))]),
            r([.reject(.icmpv6(1))]),
            r([.verdict(.goto("target"))]),
            r([.match(Match(.metaL4proto, .value(.proto(IPProto.tcp)))), .counter(), .verdict(.drop)], comment: "policies/shop.yaml:14"),
            r([.match(Match(.ipSaddr, .value(any4)))], comment: "x"),
            r([.verdict(.return)]),
            Rule(chain: "target", [.verdict(.continue)]),
        ])
}

func setZoo() -> Table {
    let ports: [UInt16] = [9, 1, 2, 3, 4, 5, 6, 7, 8, 300, 256, 65535]
    let v4s = ["10.0.0.3", "10.0.0.1", "10.0.0.2", "192.168.1.1", "10.0.0.10", "10.0.0.11", "10.0.0.12"]
    return Table(
        family: .inet, name: "zoo",
        sets: [
            NFTSet(name: "p", key: KeyType(.inetService), elements: ports.map { SetElement(.port($0)) }),
            NFTSet(name: "a4", key: KeyType(.ipv4Addr), elements: v4s.map { SetElement(.ipv4(v4($0))) }),
            NFTSet(name: "a6", key: KeyType(.ipv6Addr), elements: ["fd00::2", "fd00::1", "::1", "2001:db8::1"].map { SetElement(.ipv6(v6($0))) }),
            NFTSet(name: "ifs", key: KeyType(.ifname), elements: ["eth0", "veth1", "abc", "b", "veth10", "a"].map { SetElement(.ifname($0)) }),
            NFTSet(name: "c", key: KeyType(.ipv4Addr, .inetService), elements: [
                SetElement(.ipv4(v4("1.1.1.2")), .port(80)), SetElement(.ipv4(v4("1.1.1.1")), .port(443)),
                SetElement(.ipv4(v4("1.1.1.1")), .port(80)), SetElement(.ipv4(v4("2.0.0.0")), .port(1)),
                SetElement(.ipv4(v4("1.0.0.3")), .port(256)),
            ]),
            NFTSet(name: "c3", key: KeyType(.ipv4Addr, .ipv4Addr, .inetService), elements: [
                SetElement(.ipv4(v4("10.0.0.1")), .ipv4(v4("10.0.0.2")), .port(8080)),
            ]),
            NFTSet(name: "ci", key: KeyType(.ipv4Addr, .ipv4Addr, .inetService), flags: .interval, elements: [
                SetElement(key: [.prefix(v4("10.0.0.0"), 8), .value(.ipv4(v4("1.1.1.1"))), .between(.port(80), .port(90))]),
            ]),
            NFTSet(name: "g4", key: KeyType(.ipv4Addr), flags: .interval, elements: [
                SetElement(key: [.between(.ipv4(v4("10.0.0.0")), .ipv4(v4("10.0.0.255")))]),
                SetElement(key: [.between(.ipv4(v4("10.1.0.0")), .ipv4(v4("10.1.0.254")))]),
                SetElement(.ipv4(v4("10.2.0.5"))),
                SetElement(key: [.prefix(v4("10.3.0.0"), 31)]),
            ]),
            NFTSet(name: "g6", key: KeyType(.ipv6Addr), flags: .interval, elements: [
                SetElement(key: [.prefix(v6("fd00::"), 64)]),
                SetElement(key: [.between(.ipv6(v6("2001:db8::1")), .ipv6(v6("2001:db8::5")))]),
            ]),
            NFTSet(name: "pi", key: KeyType(.inetService), flags: .interval, elements: [
                SetElement(key: [.between(.port(0), .port(1023))]), SetElement(.port(2000)),
                SetElement(key: [.between(.port(3000), .port(3001))]), SetElement(.port(8080)),
            ]),
            NFTSet(name: "pr", key: KeyType(.inetProto), elements: [1, 6, 17, 58, 132, 33, 136, 47, 50, 51, 4, 41, 200].map { SetElement(.proto($0)) }),
            NFTSet(name: "mk", key: KeyType(.mark), elements: [1, 2, 3, 0x100].map { SetElement(.mark($0)) }),
            NFTSet(name: "ic", key: KeyType(.icmpType), elements: [0, 3, 8, 11, 100].map { SetElement(.icmpType($0)) }),
            NFTSet(name: "ic6", key: KeyType(.icmpv6Type), elements: [1, 2, 128, 129, 135, 99].map { SetElement(.icmpv6Type($0)) }),
            NFTSet(name: "cts", key: KeyType(.ctState), elements: [CtState.new, .established, .related, .invalid, .untracked].map { SetElement(.ctState($0)) }),
            NFTSet(name: "nfp", key: KeyType(.nfProto), elements: [SetElement(.nfProto(10)), SetElement(.nfProto(2))]),
            NFTSet(name: "const", key: KeyType(.ipv4Addr), flags: .constant, elements: [SetElement(.ipv4(v4("1.2.3.4")))]),
            NFTSet(name: "tflag", key: KeyType(.ipv4Addr), flags: .timeout),
            NFTSet(name: "tval", key: KeyType(.ipv4Addr), timeoutMilliseconds: 3_600_000),
            NFTSet(name: "tval2", key: KeyType(.ipv4Addr), timeoutMilliseconds: 90_500),
            NFTSet(name: "marks", key: KeyType(.ipv4Addr), data: .value(.mark), elements: [SetElement(.ipv4(v4("10.0.0.1")), .value(.mark(1)))]),
            NFTSet(name: "v6", key: KeyType(.ipv6Addr), data: .verdict, elements: [
                SetElement(.ipv6(v6("fd00::1")), .verdict(.jump("a"))), SetElement(.ipv6(v6("fd00::2")), .verdict(.goto("a"))),
                SetElement(.ipv6(v6("fd00::3")), .verdict(.accept)),
            ]),
            NFTSet(name: "ifmap", key: KeyType(.ifname, .inetService), data: .verdict, elements: [
                SetElement(key: [.value(.ifname("eth0")), .value(.port(22))], data: .verdict(.accept)),
                SetElement(key: [.value(.ifname("veth1")), .value(.port(22))], data: .verdict(.drop)),
            ]),
        ],
        chains: [Chain(name: "a")])
}
