import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

/// Kernel tests: each runs in a network namespace it creates and always deletes, and never
/// programs nftables anywhere else.
enum Kernel {
    static var isRoot: Bool { TestSystem.isRoot }
    static var inCI: Bool { TestSystem.inCI }
    /// Root tests run as root; in CI they also run without root, so they fail instead of skipping.
    static var enabled: Bool { isRoot || inCI }

    typealias Failure = TestSystem.Failure

    @discardableResult
    static func run(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
        let r = try TestSystem.run(args, stdin: stdin)
        return (r.status, r.out, r.err)
    }

    /// Creates `bh-nf-<random>`, runs `body`, deletes the namespace even when `body` throws.
    static func withNamespace<T>(_ body: (String) throws -> T) throws -> T {
        try TestSystem.withNamespace(prefix: "bh-nf", body)
    }

    /// `nft ARGS` inside `ns` (the oracle and "another process"; the product never runs nft).
    @discardableResult
    static func nft(_ args: [String], in ns: String, stdin: String? = nil) throws -> String {
        try TestSystem.nft(args, in: ns, stdin: stdin)
    }
}

func v4(_ s: String) -> IPv4Address { IPv4Address(s)! }
func v6(_ s: String) -> IPv6Address { IPv6Address(s)! }

/// A table that uses every construct the encoder knows.
func everyConstructTable(name: String = "bulkhead", flags: TableFlags = []) -> Table {
    Table(
        family: .inet, name: name, flags: flags,
        sets: [
            NFTSet(name: "svc_v4", key: KeyType(.ipv4Addr),
                   elements: [SetElement(.ipv4(v4("172.18.0.3"))), SetElement(.ipv4(v4("172.18.0.2")))]),
            NFTSet(name: "svc_v6", key: KeyType(.ipv6Addr), elements: [SetElement(.ipv6(v6("fd00::2")))]),
            NFTSet(name: "governed_v4", key: KeyType(.ipv4Addr), flags: .interval,
                   elements: [SetElement(key: [.prefix(v4("172.18.0.0"), 16)]),
                              SetElement(key: [.between(.ipv4(v4("10.0.0.5")), .ipv4(v4("10.0.0.9")))]),
                              SetElement(.ipv4(v4("192.168.1.1")))]),
            NFTSet(name: "governed_v6", key: KeyType(.ipv6Addr), flags: .interval,
                   elements: [SetElement(key: [.prefix(v6("fd00::"), 64)])]),
            NFTSet(name: "flows", key: KeyType(.ipv4Addr, .ipv4Addr, .inetService),
                   elements: [SetElement(.ipv4(v4("1.2.3.4")), .ipv4(v4("5.6.7.8")), .port(80)),
                              SetElement(.ipv4(v4("1.2.3.4")), .ipv4(v4("5.6.7.9")), .port(443))]),
            NFTSet(name: "ranges", key: KeyType(.ipv4Addr, .inetService), flags: .interval,
                   elements: [SetElement(key: [.prefix(v4("10.1.0.0"), 16), .between(.port(1000), .port(2000))])]),
            NFTSet(name: "ports", key: KeyType(.inetService), elements: [SetElement(.port(22)), SetElement(.port(8080))]),
            NFTSet(name: "ingress_v4", key: KeyType(.ipv4Addr), data: .verdict,
                   elements: [SetElement(.ipv4(v4("172.18.0.4")), .verdict(.jump("in_api"))),
                              SetElement(.ipv4(v4("172.18.0.5")), .verdict(.drop)),
                              SetElement(.ipv4(v4("172.18.0.6")), .verdict(.goto("in_api")))]),
            NFTSet(name: "egress_v4", key: KeyType(.ipv4Addr), data: .verdict),
            NFTSet(name: "marks", key: KeyType(.ipv4Addr), data: .value(.mark),
                   elements: [SetElement(.ipv4(v4("10.0.0.1")), .value(.mark(0x10))), SetElement(.ipv4(v4("10.0.0.2")), .value(.mark(0xff00)))]),
            NFTSet(name: "expiring", key: KeyType(.ipv4Addr), timeoutMilliseconds: 90_000),
            NFTSet(name: "fixed_ports", key: KeyType(.inetService), flags: .constant,
                   elements: [SetElement(.port(53)), SetElement(.port(123))]),
            NFTSet(name: "ifaces", key: KeyType(.ifname), elements: [SetElement(.ifname("eth0")), SetElement(.ifname("veth1"))]),
            NFTSet(name: "protos", key: KeyType(.inetProto), elements: [SetElement(.proto(IPProto.tcp)), SetElement(.proto(IPProto.udp))]),
            NFTSet(name: "v6_ports", key: KeyType(.ipv6Addr, .inetService), elements: [SetElement(.ipv6(v6("fd00::1")), .port(443))]),
        ],
        chains: [
            Chain(name: "forward", base: BaseChain(hook: .forward, priority: -10)),
            Chain(name: "input", base: BaseChain(hook: .input, priority: 0, policy: .accept)),
            Chain(name: "in_api"),
        ],
        rules: [
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState([.established, .related])))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState(.invalid)))), .verdict(.drop)]),
            Rule(chain: "forward", [.vmap(fields: [.ipDaddr], map: .named("ingress_v4"))]),
            Rule(chain: "forward", [.vmap(fields: [.ipSaddr], map: .named("egress_v4"))]),
            Rule(chain: "forward", [.match(Match(.ipDaddr, .set("governed_v4"))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ip6Saddr, negated: true, .set("governed_v6"))), .counter(), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match([.ipSaddr, .ipDaddr, .tcpDport], .set("flows"))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match([.ipSaddr, .thDport], .set("ranges"))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, .prefix(.ipv4(v4("10.16.0.0")), 12))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, negated: true, .prefix(.ipv4(v4("10.0.0.0")), 8))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ip6Saddr, .prefix(.ipv6(v6("fd00::")), 64))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.iifname, .value(.ifname("eth0")))), .match(Match(.oifname, .value(.ifname("veth*")))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ctState, negated: true, .value(.ctState(.established)))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.tcpDport, negated: true, .range(.port(1000), .port(2000)))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.udpDport, .range(.port(53), .port(54)))), .counter(), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.thDport, .value(.port(53)))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.metaL4proto, .value(.proto(IPProto.tcp)))), .reject(.tcpReset)]),
            Rule(chain: "forward", [.match(Match(.metaNfproto, .value(.nfProto(NFProto.ipv6)))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.icmpType, .value(.icmpType(8)))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.icmpv6Type, .value(.icmpv6Type(128)))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, .value(.ipv4(v4("10.0.0.1"))))), .verdict(.jump("in_api"))]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, .anonymousSet([SetElement(.ipv4(v4("10.0.0.1"))), SetElement(.ipv4(v4("10.0.0.2")))]))), .verdict(.goto("in_api"))]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, .anonymousSet([SetElement(key: [.prefix(v4("10.9.0.0"), 16)])]))), .verdict(.accept)]),
            Rule(chain: "forward", [.vmap(fields: [.tcpDport], map: .anonymous([SetElement(.port(22), .verdict(.accept)), SetElement(.port(80), .verdict(.jump("in_api")))]))]),
            Rule(chain: "forward", [.log(Log(prefix: "bh ", group: 3))]),
            Rule(chain: "forward", [.log(Log(prefix: "bh2 "))]),
            Rule(chain: "forward", [.log(Log(level: .info))]),
            Rule(chain: "forward", [.limit(Limit(rate: 10, per: .second)), .verdict(.accept)]),
            Rule(chain: "forward", [.limit(Limit(rate: 1_048_576, per: .second, bytes: true, over: true)), .verdict(.drop)]),
            Rule(chain: "forward", [.reject(.default)]),
            Rule(chain: "forward", [.reject(.icmpx(3))]),
            Rule(chain: "forward", [.reject(.icmp(10))]),
            Rule(chain: "forward", [.match(Match(.metaL4proto, .value(.proto(IPProto.udp)))), .match(Match(.ipSaddr, .value(.ipv4(v4("10.0.0.7"))))), .verdict(.drop)]),
            Rule(chain: "in_api", [
                .match(Match(.ipSaddr, .set("svc_v4"))),
                .match(Match(.tcpDport, .value(.port(8080)))), .verdict(.accept),
            ], comment: "policies/shop.yaml:14"),
            Rule(chain: "in_api", [.match(Match(.ip6Saddr, .set("svc_v6"))), .match(Match(.tcpDport, .set("ports"))), .verdict(.accept)]),
            Rule(chain: "in_api", [.match(Match(.iifname, .set("ifaces"))), .match(Match(.metaL4proto, .set("protos"))), .verdict(.accept)]),
            Rule(chain: "in_api", [.match(Match([.ip6Daddr, .tcpDport], .set("v6_ports"))), .verdict(.accept)]),
            Rule(chain: "in_api", [.match(Match(.thDport, negated: true, .set("fixed_ports"))), .verdict(.drop)]),
            Rule(chain: "in_api", [.verdict(.return)]),
            Rule(chain: "input", [.counter(), .verdict(.continue)]),
        ])
}

/// A transaction that creates `table` from nothing.
func creation(of table: Table) throws -> Transaction {
    var tx = Transaction(table: table.id, current: nil)
    try tx.add(.table(table.header))
    for c in table.chains { try tx.add(.chain(c)) }
    for s in table.sets { try tx.add(.set(s)) }
    for r in table.rules { try tx.add(.rule(r)) }
    return tx
}

/// The table without live state (handles, counter values) and ownership flags.
func comparable(_ t: Table?) -> Table? {
    guard var t else { return nil }
    t.flags.subtract([.owner, .persist])
    t.rules = t.rules.map { r in
        Rule(chain: r.chain, handle: nil, r.statements.map {
            if case .counter = $0 { return .counter(packets: 0, bytes: 0) }
            return $0
        }, comment: r.comment)
    }
    return t
}
