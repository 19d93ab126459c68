import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Testing

/// The example policies (policies/shop.yaml, monitoring.yaml, dns.yaml over policies/inventory.json)
/// read by hand: which services each container belongs to, and every (from, to, port) that may pass.
/// Written from the YAML, not computed, so that neither the evaluator nor the naive oracle can move
/// them. Update them together with the example policies.
enum ExampleTables {
    static let membership: [String: Set<String>] = [
        "shop-frontend-1": ["shop/frontend"],
        "shop-api-1": ["shop/api"],
        "shop-api-2": ["shop/api"],
        "shop-worker-1": ["shop/worker"],
        "shop-db-1": ["shop/db"],
        "shop-cache-1": ["shop/cache"],
        "monitoring-prometheus-1": ["monitoring/prometheus"],
        "monitoring-grafana-1": ["monitoring/grafana"],
        "infra-resolver-1": ["dns/resolver"],
    ]

    /// "FROM -> TO TRAFFIC": FROM and TO are a container, `host` or `world` (every world address), or
    /// one world address; TRAFFIC `*` is every kind. Everything else is denied (dropped).
    static let allowed: Set<String> = [
        // shop.yaml
        "world -> shop-frontend-1 tcp/80", "world -> shop-frontend-1 tcp/443",
        "host -> shop-frontend-1 tcp/80",
        "shop-frontend-1 -> shop-api-1 tcp/8080", "shop-frontend-1 -> shop-api-2 tcp/8080",
        "shop-api-1 -> shop-db-1 tcp/5432", "shop-api-2 -> shop-db-1 tcp/5432", "shop-worker-1 -> shop-db-1 tcp/5432",
        "shop-api-1 -> shop-cache-1 tcp/6379", "shop-api-2 -> shop-cache-1 tcp/6379", "shop-worker-1 -> shop-cache-1 tcp/6379",
        "shop-api-1 -> 192.0.2.10 tcp/443", "shop-api-2 -> 192.0.2.10 tcp/443",
        "shop-api-1 -> infra-resolver-1 udp/53", "shop-api-2 -> infra-resolver-1 udp/53", "shop-worker-1 -> infra-resolver-1 udp/53",
        "shop-api-1 -> infra-resolver-1 tcp/53", "shop-api-2 -> infra-resolver-1 tcp/53", "shop-worker-1 -> infra-resolver-1 tcp/53",
        // monitoring.yaml
        "monitoring-prometheus-1 -> shop-frontend-1 tcp/9100", "monitoring-prometheus-1 -> shop-api-1 tcp/9100",
        "monitoring-prometheus-1 -> shop-api-2 tcp/9100", "monitoring-prometheus-1 -> shop-worker-1 tcp/9100",
        "monitoring-prometheus-1 -> infra-resolver-1 tcp/9153",
        "monitoring-grafana-1 -> monitoring-prometheus-1 tcp/9090",
        "world -> monitoring-grafana-1 tcp/3000",
        "monitoring-prometheus-1 -> infra-resolver-1 udp/53", "monitoring-grafana-1 -> infra-resolver-1 udp/53",
        // dns.yaml
        "infra-resolver-1 -> world udp/53", "infra-resolver-1 -> world tcp/53",
        "host -> infra-resolver-1 udp/53", "host -> infra-resolver-1 icmp",
        // neither side is governed: not Bulkhead's traffic
        "host -> world *", "world -> host *",
    ]

    /// Whether the hand table lets `from` reach `to` (a party, and the address when it is the world's).
    static func allows(from: String, to: String, address: IPAddress, _ traffic: Traffic) -> Bool {
        let t = traffic.description
        let targets = to == "world" ? ["world", address.description] : [to]
        return targets.contains { allowed.contains("\(from) -> \($0) \(t)") || allowed.contains("\(from) -> \($0) *") }
    }

    static func name(_ party: BulkheadLab.Party) -> String {
        switch party {
        case .host: return "host"
        case .world: return "world"
        case .container(let c): return c
        }
    }
}

/// Without a kernel: the product's classification (`Evaluator.membership`, `Evaluator.evaluate`) and
/// the naive oracle both equal the hand-written tables of the example policies, on every pair of
/// parties and every address, for every kind of traffic the policies name plus tcp/22.
@Test func exampleEvaluatorAndNaiveOracleEqualTheHandWrittenTables() throws {
    let policies = try examplePolicies()
    let inventory = try exampleInventory()
    let evaluator = Evaluator(policies: policies, inventory: inventory)
    let naive = NaiveOracle(policies: policies, inventory: inventory)
    let evaluated = Dictionary(uniqueKeysWithValues: evaluator.membership.map { ($0.key, Set($0.value.map(\.description))) })
    #expect(evaluated == ExampleTables.membership, "Evaluator.membership differs from the hand-written table")
    #expect(naive.membership == ExampleTables.membership, "the naive oracle's membership differs from the hand-written table")

    // Parties as a probe sees them: a container sends from any of its addresses (all are its own),
    // the world from its first address of the family, the host from its own stack.
    let world = LabConfiguration.defaultWorldAddresses.map(\.address)
    var parties: [(name: String, sources: [IPAddress?], addresses: [IPAddress])] = [
        ("host", [nil], inventory.networks.flatMap(\.gateways)),
        ("world", [IPAddress("203.0.113.10")!, IPAddress("2001:db8:ffff::10")!], world),
    ]
    for c in inventory.containers { parties.append((c.name, c.addresses, c.addresses)) }
    let traffic = probeTraffic(for: policies)
    var checked = 0, allowed = 0
    var wrong: [String] = []
    for a in parties {
        for b in parties where b.name != a.name {
            for address in b.addresses {
                for source in a.sources where source.map({ $0.isIPv4 == address.isIPv4 }) ?? true {
                    for t in traffic {
                        let expected = ExampleTables.allows(from: a.name, to: b.name, address: address, t)
                        let product = evaluator.evaluate(from: source.map { .address($0) } ?? .host, to: .address(address), t)
                        let second = naive.passes(from: source, to: address, t)
                        checked += 1
                        if expected { allowed += 1 }
                        if product.passes != expected || second.passes != expected {
                            wrong.append("\(a.name) (\(source?.description ?? "host")) -> \(b.name) \(address) \(t): table \(expected), evaluator \(product.passes) (\(product.reason)), naive \(second.passes) (\(second.why))")
                        }
                    }
                }
            }
        }
    }
    #expect(wrong.isEmpty, "\(wrong.count) of \(checked) verdicts differ from the hand-written table:\n\(wrong.prefix(30).joined(separator: "\n"))")
    #expect(checked > 3000 && allowed > 100, "checked \(checked) verdicts, \(allowed) allowed")
}
