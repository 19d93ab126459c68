import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

/// Enforcement proved by traffic: a lab of network namespaces built from an inventory, the
/// policies applied to its host namespace through netlink, and every probe compared with the
/// evaluator. Denied means the probe timed out (dropped); allowed means it was answered.
struct Enforced {
    let lab: Lab
    let runner: ProbeRunner
    let backend: NetlinkNetfilter
    var policies: PolicySet
    var inventory: Inventory

    init(policies: PolicySet, inventory: Inventory) throws {
        try TestSystem.requireRoot("an enforcement test")
        lab = try Lab(inventory: inventory)
        runner = ProbeRunner(lab: lab)
        backend = try NetlinkNetfilter(namespace: lab.hostNamespace)
        self.policies = policies
        // The lab host's own addresses (its link to the world) are `host`, as the kernel sees them;
        // the lab adds each network's bridge and each container's MAC and port (port binding).
        var inventory = lab.inventory
        inventory.hostAddresses = lab.addresses(of: .host)
        self.inventory = inventory
        _ = try BridgeNetfilter.ensureEnabled(namespace: lab.hostNamespace)
        try apply()
    }

    /// Plans against the kernel and applies; returns the `inet bulkhead` transaction that was sent.
    @discardableResult
    func apply() throws -> Transaction {
        try applyBoth().inet
    }

    /// Plans against the kernel and applies; returns both transactions (one batch).
    @discardableResult
    func applyBoth() throws -> (inet: Transaction, bridge: Transaction) {
        let plan = try Planner().plan(policies: policies, inventory: inventory, backend: backend)
        try Planner().apply(plan, to: backend)
        return (plan.transaction, plan.bridgeTransaction)
    }

    /// Re-reads the lab's inventory (after churn), keeping the host's addresses.
    mutating func refreshInventory() {
        let host = inventory.hostAddresses
        inventory = lab.inventory
        inventory.hostAddresses = host
    }

    func verify(_ traffic: [Traffic], parties: [BulkheadLab.Party]? = nil, linkLocal: Bool = false) throws -> [TruthTableRow] {
        try runner.verify(Evaluator(policies: policies, inventory: inventory), traffic: traffic, parties: parties, linkLocal: linkLocal)
    }

    func destroy() {
        runner.stopServers()
        _ = lab.destroy()
    }
}

func examplePolicies() throws -> PolicySet {
    let loaded = PolicyLoader.load(paths: [TestSystem.repositoryRoot + "/policies"])
    #expect(!loaded.hasErrors)
    return loaded.policies
}

func exampleInventory() throws -> Inventory {
    let (inventory, _) = InventoryLoader.load(path: TestSystem.repositoryRoot + "/policies/inventory.json")
    return try #require(inventory)
}

func policies(_ yaml: String) throws -> PolicySet {
    let loaded = PolicyLoader.load(sources: [("test.yaml", Array(yaml.utf8))])
    #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
    return loaded.policies
}

func expectAllMatch(_ rows: [TruthTableRow], sourceLocation: SourceLocation = #_sourceLocation) {
    let mismatches = rows.filter { !$0.matches }
    #expect(mismatches.isEmpty, "\(mismatches.count) of \(rows.count) probes disagree with the evaluator:\n\(mismatches.prefix(30).map(\.description).joined(separator: "\n"))", sourceLocation: sourceLocation)
    #expect(rows.contains { $0.expectedToPass } && rows.contains { !$0.expectedToPass }, "the matrix must hold both allowed and denied probes", sourceLocation: sourceLocation)
}

/// The example deployment, every party against every address, v4 and v6, on every port the
/// policies name plus tcp/22: managed ↔ managed, world, CIDR, host both ways, cross-segment,
/// replicas, IPv6 — each probe equals the evaluator.
@Test func exampleMatrixEqualsEvaluator() throws {
    let env = try Enforced(policies: try examplePolicies(), inventory: try exampleInventory())
    defer { env.destroy() }
    let rows = try env.verify(probeTraffic(for: env.policies), linkLocal: true)
    expectAllMatch(rows)
    // The evaluator is the product's own classification; judge the traffic by the naive oracle and
    // by the hand-written table too (ExampleTables.swift), so a selector bug cannot hide in both.
    expectNaiveAgrees(rows, lab: env.lab, naive: env.naive)
    let routed = rows.filter { $0.result.probe.interface == nil }
    let byHand = routed.filter { row in
        let owner = env.lab.owner(of: row.result.probe.to).map(ExampleTables.name) ?? "(no party)"
        let expected = ExampleTables.allows(from: ExampleTables.name(row.result.probe.from), to: owner,
                                            address: row.result.probe.to, row.result.probe.traffic)
        return expected ? !row.passed : !row.dropped
    }
    #expect(routed.count > 3000 && routed.contains(where: \.passed), "the matrix holds \(routed.count) routed probes")
    #expect(byHand.isEmpty, "\(byHand.count) of \(routed.count) probes disagree with the hand-written table:\n\(byHand.prefix(30).map(\.description).joined(separator: "\n"))")
    // Link-local (issue 8 item 1): both ways between containers and container <-> host, dropped.
    let linkLocal = rows.filter { $0.result.probe.interface != nil }
    #expect(linkLocal.count > 100, "the matrix holds link-local probes")
    #expect(linkLocal.allSatisfy { $0.dropped }, "every link-local probe is dropped (timed out): \(linkLocal.filter { !$0.dropped }.prefix(5))")
    #expect(linkLocal.contains { $0.result.probe.from == .host } && linkLocal.contains { env.lab.owner(of: $0.result.probe.to) == .host })
    func row(_ from: BulkheadLab.Party, _ to: String, _ t: Traffic) -> TruthTableRow? {
        rows.first { $0.result.probe.from == from && $0.result.probe.to == IPAddress(to)! && $0.result.probe.traffic == t }
    }
    // Spot checks that name the cases, so a failure says which semantic broke.
    #expect(row(.container("shop-api-1"), "172.20.0.6", .tcp(5432))?.passed == true)        // managed -> managed
    #expect(row(.container("shop-frontend-1"), "172.20.0.6", .tcp(5432))?.dropped == true)  // not declared
    #expect(row(.world, "172.20.0.2", .tcp(443))?.passed == true)                            // world -> managed
    #expect(row(.world, "fd00:20::2", .tcp(443))?.passed == true)                            // IPv6
    #expect(row(.world, "172.20.0.3", .tcp(8080))?.dropped == true)
    #expect(row(.container("shop-api-1"), "192.0.2.10", .tcp(443))?.passed == true)         // managed -> cidr
    #expect(row(.container("shop-api-1"), "198.51.100.10", .tcp(443))?.dropped == true)     // outside the cidr
    #expect(row(.container("infra-resolver-1"), "198.51.100.10", .udp(53))?.passed == true) // managed -> world
    #expect(row(.host, "172.20.0.2", .tcp(80))?.passed == true)                              // host -> managed
    #expect(row(.host, "172.20.0.3", .tcp(8080))?.dropped == true)
    #expect(row(.container("shop-api-1"), "172.20.0.4", .tcp(8080))?.dropped == true)       // replica -> replica
    #expect(row(.container("monitoring-prometheus-1"), "172.20.0.3", .tcp(9100))?.passed == true) // cross-segment
    #expect(row(.container("shop-frontend-1"), "172.20.0.1", .tcp(22))?.dropped == true)    // managed -> host
    // world -> the host's transit address: neither side governed, so it passes.
    let transit = try #require(row(.world, "198.18.255.1", .tcp(22)), "the matrix probes the host's transit address from the world")
    #expect(transit.passed, "\(transit)")
}

/// A container on a governed network that matches no service is isolated both ways, and a
/// container that belongs to two services gets the flows of both.
@Test func unclassifiedIsolatedAndTwoServicesCombine() throws {
    let yaml = """
    segment: s
    networks: [n]
    services:
      web:
        labels: {role: web}
      admin:
        labels: {team: ops}
      client:
        labels: {role: client}
    flows:
      - from: client
        to: web
        ports: [tcp/80]
      - from: client
        to: admin
        ports: [tcp/9000]
      - from: world
        to: web
        ports: [tcp/80]

    """
    let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.61.0.0/24")!, IPNetwork("fd00:61::/64")!],
                           gateways: [IPAddress("10.61.0.1")!, IPAddress("fd00:61::1")!])],
        containers: [
            Container(name: "both", labels: ["role": "web", "team": "ops"], networks: ["n": Attachment(ipv4: IPAddress("10.61.0.2"), ipv6: IPAddress("fd00:61::2"))]),
            Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.61.0.3"), ipv6: IPAddress("fd00:61::3"))]),
            Container(name: "stray", labels: ["role": "nothing"], networks: ["n": Attachment(ipv4: IPAddress("10.61.0.4"), ipv6: IPAddress("fd00:61::4"))]),
        ])
    let env = try Enforced(policies: try policies(yaml), inventory: inventory)
    defer { env.destroy() }
    let rows = try env.verify([.tcp(80), .tcp(9000), .tcp(22), .icmp])
    expectAllMatch(rows)
    let stray = rows.filter { $0.result.probe.from == .container("stray") || $0.result.probe.to == IPAddress("10.61.0.4")! || $0.result.probe.to == IPAddress("fd00:61::4")! }
    #expect(stray.count == 80, "every probe from and to the unclassified container: \(stray.count)")
    #expect(stray.allSatisfy { $0.dropped }, "the unclassified container must reach and be reached by nobody: \(stray.filter { !$0.dropped }.prefix(5))")
    expectNaiveAgrees(rows, lab: env.lab, naive: env.naive)
    #expect(rows.contains { $0.result.probe.from == .container("client") && $0.result.probe.to == IPAddress("fd00:61::2")! && $0.result.probe.traffic == .tcp(9000) && $0.passed })
}

/// `mode: audit` lets would-be denials through and counts them in the chain's audit rule.
@Test func auditModeLetsThroughAndCounts() throws {
    let yaml = """
    segment: a
    mode: audit
    networks: [n]
    services:
      web:
        labels: {role: web}
    flows:
      - from: world
        to: web
        ports: [tcp/80]

    """
    let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.62.0.0/24")!], gateways: [IPAddress("10.62.0.1")!])],
        containers: [Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.62.0.2"))])])
    let env = try Enforced(policies: try policies(yaml), inventory: inventory)
    defer { env.destroy() }
    let rows = try env.verify([.tcp(80), .tcp(22)], parties: [.world, .container("web")])
    expectAllMatchOrAllPass(rows)
    #expect(rows.first { $0.result.probe.traffic == .tcp(22) && $0.result.probe.from == .world }?.passed == true)
    let live = try #require(try env.backend.dump(table: Planner.tableID))
    let audit = try #require(live.rules(in: "in_a_web").last)
    let packets = audit.statements.compactMap { s -> UInt64? in if case .counter(let p, _) = s { return p } else { return nil } }.first ?? 0
    let listed = (try? TestSystem.nft(["list", "chain", "inet", "bulkhead", "in_a_web"], in: env.lab.hostNamespace)) ?? ""
    #expect(packets > 0, "the audit rule counted the would-be denial:\n\(listed)")
}

func expectAllMatchOrAllPass(_ rows: [TruthTableRow], sourceLocation: SourceLocation = #_sourceLocation) {
    let mismatches = rows.filter { !$0.matches }
    #expect(mismatches.isEmpty, "\(mismatches.map(\.description).joined(separator: "\n"))", sourceLocation: sourceLocation)
}

/// Container churn through the kernel: one container added is a transaction of element additions
/// only, it is enforced at once, and applying again changes nothing.
@Test func churnIsElementsOnlyAndIdempotent() throws {
    var env = try Enforced(policies: try examplePolicies(), inventory: try exampleInventory())
    defer { env.destroy() }
    #expect(try env.apply().isEmpty, "a second apply of the same inputs is empty")
    let added = Container(name: "shop-db-2", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "db"],
                          networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.20"), ipv6: IPAddress("fd00:20::20"))])
    try env.lab.addContainer(added)
    env.refreshInventory()
    let (tx, bridgeTx) = try env.applyBoth()
    #expect(!tx.isEmpty)
    #expect(!bridgeTx.isEmpty, "the new container is bound to its port")
    for op in tx.operations + bridgeTx.operations {
        guard op.verb == .add, case .elements = op.object else {
            Issue.record("container churn produced \(op.verb) of something other than elements: \(op)")
            continue
        }
    }
    let db2 = IPAddress("172.20.0.20")!
    let probes = [Probe(from: .container("shop-api-1"), to: db2, traffic: .tcp(5432)),
                  Probe(from: .container("shop-frontend-1"), to: db2, traffic: .tcp(5432))]
    try env.runner.startServers(for: probes)
    let results = try env.runner.run(probes)
    #expect(results[0].outcome == .answered)
    #expect(results[1].outcome == .timedOut)
    #expect(try env.apply().isEmpty)
}

/// Randomized: random small policies over a random inventory are applied, and a random sample of
/// probes must equal the evaluator. The seed is printed so a failure can be replayed.
@Test(arguments: [11, 23, 37])
func randomPoliciesMatchEvaluator(seed: Int) throws {
    var rng = SeededGenerator(seed: UInt64(seed))
    let (yaml, inventory) = randomSegmentWorld(&rng, bindPorts: false)
    let env = try Enforced(policies: try policies(yaml), inventory: inventory)
    defer { env.destroy() }
    let traffic: [Traffic] = [.tcp(80), .tcp(443), .udp(53), .icmp, .tcp(8005), .tcp(22)]
    var probes = env.lab.probeMatrix(traffic: traffic)
    probes.shuffle(using: &rng)
    probes = Array(probes.prefix(250)).sorted()
    let evaluator = Evaluator(policies: env.policies, inventory: env.inventory)
    let rows = try env.runner.truthTable(probes) { probe, source in
        let from: Evaluator.Party = probe.from == .host ? .host : .address(source!)
        let d = evaluator.evaluate(from: from, to: .address(probe.to), probe.traffic)
        return (d.passes, d.reason)
    }
    let mismatches = rows.filter { !$0.matches }
    #expect(mismatches.isEmpty, "seed \(seed), policy:\n\(yaml)\n\(mismatches.prefix(20).map(\.description).joined(separator: "\n"))")
    // The sample must hold something to check both ways, and the naive oracle must agree with the
    // evaluator and the traffic on every probe of it.
    let allowed = rows.filter(\.expectedToPass).count
    #expect(rows.count == 250 && allowed > 0 && allowed < rows.count,
            "seed \(seed): the sample holds \(rows.count) probes, \(allowed) expected allowed; it must hold both")
    expectNaiveAgrees(rows, lab: env.lab, naive: env.naive)
}

