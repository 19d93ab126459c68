import BulkheadRuleset

/// Shorthands for building test tables.
func v4(_ s: String) -> IPv4Address {
    guard let a = IPv4Address(s) else { fatalError("bad test address \(s)") }
    return a
}

func v6(_ s: String) -> IPv6Address {
    guard let a = IPv6Address(s) else { fatalError("bad test address \(s)") }
    return a
}

/// The dataplane shape from ARCHITECTURE.md.
func architectureTable() -> Table {
    Table(
        family: .inet, name: "bulkhead",
        sets: [
            NFTSet(name: "svc_shop_frontend_v4", key: KeyType(.ipv4Addr),
                   elements: [SetElement(.ipv4(v4("172.18.0.3"))), SetElement(.ipv4(v4("172.18.0.2")))]),
            NFTSet(name: "ingress_v4", key: KeyType(.ipv4Addr), data: .verdict,
                   elements: [SetElement(.ipv4(v4("172.18.0.4")), .verdict(.jump("in_shop_api")))]),
            NFTSet(name: "egress_v4", key: KeyType(.ipv4Addr), data: .verdict),
            NFTSet(name: "governed_v4", key: KeyType(.ipv4Addr), flags: .interval,
                   elements: [SetElement(key: [.prefix(v4("172.18.0.0"), 16)])]),
        ],
        chains: [
            Chain(name: "forward", base: BaseChain(hook: .forward, priority: -10)),
            Chain(name: "in_shop_api"),
        ],
        rules: [
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState([.established, .related])))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState(.invalid)))), .verdict(.drop)]),
            Rule(chain: "forward", [.vmap(fields: [.ipDaddr], map: .named("ingress_v4"))]),
            Rule(chain: "forward", [.vmap(fields: [.ipSaddr], map: .named("egress_v4"))]),
            Rule(chain: "forward", [.match(Match(.ipDaddr, .set("governed_v4"))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, .set("governed_v4"))), .verdict(.drop)]),
            Rule(chain: "in_shop_api", [
                .match(Match(.ipSaddr, .set("svc_shop_frontend_v4"))),
                .match(Match(.tcpDport, .value(.port(8080)))), .verdict(.accept),
            ], comment: "policies/shop.yaml:14"),
            Rule(chain: "in_shop_api", [.counter(), .verdict(.drop)]),
        ])
}
