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

/// Issue 8, item 4: hostile but valid policies. Longest names, many services overlapping on one
/// container, long policy paths holding CR-LF, terminal escapes and quotes. Whatever `validate`
/// accepts must compile and apply through the real kernel.
@Suite struct HostileButValidPolicies {
    /// A generated policy set: `segments` segments, each with a service every `multi` container
    /// matches (so it belongs to all of them) and a `peer` service that may reach it.
    static func generate(seed: UInt64) -> (sources: [(String, [UInt8])], segments: Int, mode: [String]) {
        var rng = SeededGenerator(seed: seed)
        let segments = Int.random(in: 1...6, using: &rng)
        let hostile = ["\r\n", "\u{1B}[2J\u{1B}[31m", "\"", "\\", "::error::", "é", "\u{0}", "\t", " "]
        var sources: [(String, [UInt8])] = []
        var modes: [String] = []
        for i in 0..<segments {
            func name(_ stem: String) -> String {
                let length = [1, 30, 63].randomElement(using: &rng)!
                let base = stem + "-\(i)-"
                return String((base + String(repeating: "q", count: 63)).prefix(max(length, base.count + 1)).prefix(63))
            }
            let seg = name("s"), svc = name("v")
            let mode = Bool.random(using: &rng) ? "enforce" : "audit"
            modes.append(mode)
            let yaml = """
            segment: \(seg)
            mode: \(mode)
            networks: [n]
            services:
              \(svc):
                labels: {shared: "yes", "k\(i)": "v"}
              peer:
                labels: {role: peer\(i)}
            flows:
              - from: peer
                to: \(svc)
                ports: [tcp/80]
              - from: \(svc)
                to: [world, host]
                ports: [tcp/443, udp/53, icmp]

            """
            var dir = ""
            for _ in 0..<Int.random(in: 0...40, using: &rng) {
                dir += "d" + hostile.randomElement(using: &rng)! + String(repeating: "x", count: Int.random(in: 0...9, using: &rng)) + "/"
            }
            sources.append(("\(dir)p\(i).yaml", Array(yaml.utf8)))
        }
        return (sources, segments, modes)
    }

    static func inventory(segments: Int, base: UInt32 = 0x0A48_0000) -> Inventory {
        var labels = ["shared": "yes"]
        for i in 0..<segments { labels["k\(i)"] = "v" }
        var containers = [Container(name: "multi", labels: labels, networks: ["n": Attachment(ipv4: .v4(base + 2), ipv6: IPAddress("fd00:72::2"))])]
        for i in 0..<segments {
            containers.append(Container(name: "peer\(i)", labels: ["role": "peer\(i)"],
                                        networks: ["n": Attachment(ipv4: .v4(base + 10 + UInt32(i)), ipv6: IPAddress("fd00:72::\(10 + i)"))]))
        }
        return Inventory(networks: [Network(name: "n", subnets: [IPNetwork("10.72.0.0/24")!, IPNetwork("fd00:72::/64")!],
                                            gateways: [IPAddress("10.72.0.1")!, IPAddress("fd00:72::1")!])],
                         containers: containers)
    }

    /// validate-OK ⇒ compile and apply OK through the kernel in a throwaway namespace, and what
    /// `nft list` prints holds no raw control byte. Fails on the old code for any seed that
    /// generates a long identity, name, comment or path (most of them).
    @Test(arguments: [1, 2, 3, 5, 8, 13, 21, 34] as [UInt64])
    func validatedPoliciesApply(seed: UInt64) throws {
        try TestSystem.requireRoot("a kernel test")
        let generated = Self.generate(seed: seed)
        let loaded = PolicyLoader.load(sources: generated.sources)
        let inventory = Self.inventory(segments: generated.segments)
        // What `bulkhead validate --inventory` checks; and plain `validate` (no containers) too.
        let diagnostics = loaded.diagnostics + InventoryLint.run(loaded.policies, inventory) + Preflight.check(loaded.policies, inventory: inventory)
            + Preflight.check(loaded.policies, inventory: nil)
        let errors = diagnostics.filter { $0.severity == .error }
        #expect(errors.isEmpty, "seed \(seed): \(errors.map(\.formatted))")
        guard errors.isEmpty else { return }
        try TestSystem.withNamespace(prefix: "bh-names") { ns in
            let backend = try NetlinkNetfilter(namespace: ns)
            let plan = try Planner().plan(policies: loaded.policies, inventory: inventory, backend: backend)
            #expect(plan.failures.isEmpty, "seed \(seed): \(plan.failures)")
            try Planner().apply(plan, to: backend)
            let again = try Planner().plan(policies: loaded.policies, inventory: inventory, backend: backend)
            #expect(!again.hasChanges, "seed \(seed): the kernel's table reads back as what we wrote")
            let listed = try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: ns)
            #expect(!listed.unicodeScalars.contains { ($0.value < 0x20 && $0 != "\n" && $0 != "\t") || $0.value == 0x7F },
                    "seed \(seed): a control byte reached the kernel")
            // Each mode the seed drew ends an identity chain: `… denies` (enforce), `… would deny` (audit).
            #expect(listed.contains("in_"))
            #expect(listed.contains(" denies\"") == generated.mode.contains("enforce"), "seed \(seed): modes \(generated.mode)")
            #expect(listed.contains(" would deny\"") == generated.mode.contains("audit"), "seed \(seed): modes \(generated.mode)")
        }
    }

    /// Four overlapping 63/63-character services on one container, by traffic: the container
    /// is reached by each segment's peer and only on its port. Fails on the old code (the whole
    /// transaction was refused, nothing was enforced).
    @Test func fourOverlappingServicesEnforcedByTraffic() throws {
        var sources: [(String, [UInt8])] = []
        for i in 0..<4 {
            let seg = String(repeating: "s", count: 61) + "-\(i)", svc = String(repeating: "v", count: 61) + "-\(i)"
            sources.append((String(repeating: "policies/", count: 20) + "\r\n\u{1B}[31m\(i).yaml", Array("""
            segment: \(seg)
            networks: [n]
            services:
              \(svc):
                labels: {shared: "yes", "k\(i)": "v"}
              peer:
                labels: {role: peer\(i)}
            flows:
              - from: peer
                to: \(svc)
                ports: [tcp/\(8000 + i)]

            """.utf8)))
        }
        let loaded = PolicyLoader.load(sources: sources)
        #expect(!loaded.hasErrors)
        let env = try Enforced(policies: loaded.policies, inventory: Self.inventory(segments: 4))
        defer { env.destroy() }
        let rows = try env.verify([.tcp(8000), .tcp(8001), .tcp(8003), .tcp(22)])
        expectAllMatch(rows)
        expectNaiveAgrees(rows, lab: env.lab, naive: env.naive)
        let multi = IPAddress("10.72.0.2")!
        #expect(rows.contains { $0.result.probe.from == .container("peer3") && $0.result.probe.to == multi && $0.result.probe.traffic == .tcp(8003) && $0.passed })
        #expect(rows.contains { $0.result.probe.from == .container("peer3") && $0.result.probe.to == multi && $0.result.probe.traffic == .tcp(8000) && $0.dropped })
    }
}

/// Issue 8, item 9: inventories that lie. The lab's containers are where they really are; the
/// inventory given to the compiler and the evaluator lies about them.
@Suite struct LyingInventoryEnforcement {
    static let yaml = """
    segment: s
    networks: [n]
    services:
      api:
        labels: {role: api}
      db:
        labels: {role: db}
      other:
        labels: {role: other}
    flows:
      - from: api
        to: db
        ports: [tcp/5432]
      - from: other
        to: world
        ports: [tcp/443]
      - from: db
        to: world
        ports: [tcp/443]

    """

    static let n = Network(name: "n", subnets: [IPNetwork("10.73.0.0/24")!], gateways: [IPAddress("10.73.0.1")!])

    static func attach(_ a: String) -> [String: BulkheadInventory.Attachment] { ["n": Attachment(ipv4: IPAddress(a))] }

    /// Where the containers really are.
    static let truth = Inventory(networks: [n], containers: [
        Container(name: "api", labels: ["role": "api"], networks: attach("10.73.0.2")),
        Container(name: "db", labels: ["role": "db"], networks: attach("10.73.0.3")),
        Container(name: "evil", labels: ["role": "other"], networks: attach("10.73.0.5")),
    ])

    /// What the inventory claims: db also holds a world address (on a second network whose subnet
    /// does not hold it), evil claims api's address, and a third container claims the gateway.
    static let lies = Inventory(networks: [n, Network(name: "m", subnets: [IPNetwork("10.74.0.0/24")!])], containers: [
        Container(name: "api", labels: ["role": "api"], networks: attach("10.73.0.2")),
        Container(name: "db", labels: ["role": "db"], networks: attach("10.73.0.3").merging(["m": Attachment(ipv4: IPAddress("203.0.113.10"))]) { a, _ in a }),
        Container(name: "evil", labels: ["role": "other"], networks: attach("10.73.0.2")),
        Container(name: "gw", labels: ["role": "db"], networks: attach("10.73.0.1")),
    ])

    /// Fails on the old code: api reached the world address on tcp/5432 because db claimed it,
    /// and reached the world on tcp/443 with evil's permissions (or the apply failed outright).
    @Test func forgedClaimsOpenNothing() throws {
        try TestSystem.requireRoot("an enforcement test")
        let lab = try Lab(inventory: Self.truth)
        let runner = ProbeRunner(lab: lab)
        defer {
            runner.stopServers()
            _ = lab.destroy()
        }
        let backend = try NetlinkNetfilter(namespace: lab.hostNamespace)
        _ = try BridgeNetfilter.ensureEnabled(namespace: lab.hostNamespace)
        let policies = try policies(Self.yaml)
        var inventory = Self.lies
        inventory.hostAddresses = lab.addresses(of: .host)
        let plan = try Planner().plan(policies: policies, inventory: inventory, backend: backend)
        #expect(Set(plan.rejectedAddresses.map(\.address.description)) == ["203.0.113.10", "10.73.0.2", "10.73.0.1"])
        try Planner().apply(plan, to: backend)

        let worldDB = IPAddress("203.0.113.10")!, world443 = IPAddress("198.51.100.10")!, db = IPAddress("10.73.0.3")!
        let probes = [
            Probe(from: .container("api"), to: worldDB, traffic: .tcp(5432)),   // forged by db's claim
            Probe(from: .container("api"), to: world443, traffic: .tcp(443)),   // forged by evil's claim of api's address
            Probe(from: .container("api"), to: db, traffic: .tcp(5432)),        // api's address is nobody's now
            Probe(from: .container("db"), to: world443, traffic: .tcp(443)),    // db's real address still enrolled
        ]
        try runner.startServers(for: probes)
        let results = try runner.run(probes)
        #expect(results.map(\.outcome) == [.timedOut, .timedOut, .timedOut, .answered], "\(results)")

        // `explain` (the evaluator) says the same, with the reason.
        let evaluator = Evaluator(policies: policies, inventory: inventory)
        let apiAddress = IPAddress("10.73.0.2")!
        let d1 = evaluator.evaluate(from: .address(apiAddress), to: .address(worldDB), .tcp(5432))
        #expect(d1.verdict == .denied && d1.reason.contains("203.0.113.10 is not enrolled: container db claims it on network m"), "\(d1.reason)")
        let d2 = evaluator.evaluate(from: .address(apiAddress), to: .address(world443), .tcp(443))
        #expect(d2.verdict == .denied && d2.reason.contains("containers api, evil all claim it"), "\(d2.reason)")
        let d4 = evaluator.evaluate(from: .address(db), to: .address(world443), .tcp(443))
        #expect(d4.verdict == .allowed)
    }
}
