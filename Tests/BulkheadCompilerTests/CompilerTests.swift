import BulkheadCompiler
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

func examplePolicies() throws -> PolicySet {
    let loaded = PolicyLoader.load(paths: [TestSystem.repositoryRoot + "/policies"])
    #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
    return loaded.policies
}

func exampleInventory() throws -> Inventory {
    let (inventory, d) = InventoryLoader.load(path: TestSystem.repositoryRoot + "/policies/inventory.json")
    #expect(d.isEmpty)
    return try #require(inventory)
}

@Suite struct CompilerShape {
    @Test func compilesExampleIntoAValidTable() throws {
        let out = Compiler.compile(try examplePolicies(), try exampleInventory())
        let table = out.table
        // The fake validates like the kernel: every jump and lookup resolves.
        let fake = FakeNetfilter()
        try fake.apply(try Diff.between(desired: table, live: nil), expectedGeneration: nil)
        #expect(try Diff.between(desired: table, live: try fake.dump(table: table.id)).isEmpty)
        #expect(table.chain(named: "in_shop_api") != nil)
        #expect(table.set(named: "svc_shop_api_v4")?.elements.count == 4)  // two replicas, two networks each
        #expect(table.set(named: "identity_v6")?.elements.count == 15)
        let rules = table.rules(in: "in_shop_db")
        // The file relative to the policy root (`policies`), not the path the policies were read from.
        #expect(rules.contains { $0.comment == "shop.yaml:29" }, "\(rules.map(\.comment))")
        #expect(rules.last?.comment == "shop/db denies")
    }

    @Test func everyAllowRuleNamesItsFlowAndCounts() throws {
        let policies = try examplePolicies()
        let out = Compiler.compile(policies, try exampleInventory())
        var named: Set<FlowReference> = []
        let allows = out.table.rules.filter { $0.statements.last == .verdict(.accept) && $0.chain.contains("_") }
        for rule in allows {
            guard case .allow(let comment)? = rule.comment.flatMap(RuleRole.init(parsing:)) else { Issue.record("no flow comment: \(rule)"); continue }
            #expect(out.flowsByReference[comment] != nil, "\(rule)")
            #expect(rule.statements.contains { if case .counter = $0 { return true } else { return false } })
            named.insert(comment)
        }
        // The loop must have had something to check: every flow of the example is opened by a rule.
        #expect(!allows.isEmpty, "the example compiles to no allow rule")
        #expect(named == Set(out.flowsByReference.keys) && named.count == policies.flows.count,
                "allow rules name \(named.count) flows of \(policies.flows.count): \(named.sorted())")
    }

    @Test func oneContainerAddedTouchesOnlyElements() throws {
        let policies = try examplePolicies()
        var inventory = try exampleInventory()
        let before = Compiler.compile(policies, inventory).table
        inventory.containers.append(Container(
            name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
            networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"), ipv6: IPAddress("fd00:20::30"))]))
        let after = Compiler.compile(policies, inventory).table
        let tx = try Diff.between(desired: after, live: before)
        var touched: [String] = []
        for op in tx.operations {
            guard case .elements(let set, let elements) = op.object else {
                Issue.record("container churn produced a non-element operation: \(op)")
                continue
            }
            touched.append(set)
            #expect(elements.allSatisfy { if case .verdict? = $0.data { false } else { true } }, "a verdict element: \(op)")
        }
        // managed, svc, the source group api is in, and the identity number, for v4 and v6: no dispatch map.
        #expect(touched.sorted() == ["from_shop_api__shop_worker_v4", "from_shop_api__shop_worker_v6", "identity_v4", "identity_v6",
                                     "managed_v4", "managed_v6", "svc_shop_api_v4", "svc_shop_api_v6"], "\(tx)")
    }

    /// Container churn must never add a verdict element again: a jump element makes the kernel
    /// re-validate the whole table, whose cost grows with every per-container verdict (README
    /// "Performance"). For the example and random worlds: no map keyed by an address holds
    /// verdicts, the verdict maps (keyed by identity number) hold at most one element per identity,
    /// and removing any container whose identity stays changes no verdict element.
    @Test func perContainerElementsCarryNoVerdict() throws {
        var worlds: [(String, PolicySet, Inventory)] = [("example", try examplePolicies(), try exampleInventory())]
        for seed in 1...12 {
            var rng = SeededGenerator(seed: UInt64(seed))
            let (yaml, inventory) = randomSegmentWorld(&rng, bindPorts: false)
            let loaded = PolicyLoader.load(sources: [("r.yaml", Array(yaml.utf8))])
            #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
            worlds.append(("seed \(seed)", loaded.policies, inventory))
        }
        var maps = 0, removals = 0
        for (name, policies, inventory) in worlds {
            let out = Compiler.compile(policies, inventory)
            for set in out.table.sets where set.isMap {
                maps += 1
                if set.key.fields.contains(where: { $0 == .ipv4Addr || $0 == .ipv6Addr }) {
                    #expect(set.data != .verdict, "\(name): \(set.name) maps addresses to verdicts")
                }
                if set.data == .verdict {
                    #expect(set.key == KeyType(.classid) && set.elements.count <= out.identities.count,
                            "\(name): \(set.name) has \(set.elements.count) verdicts for \(out.identities.count) identities")
                }
            }
            for (i, c) in inventory.containers.enumerated() {
                var less = inventory
                less.containers.remove(at: i)
                let after = Compiler.compile(policies, less)
                guard after.identities == out.identities else { continue }  // its identity went: chains change
                removals += 1
                let tx = try Diff.between(desired: after.table, live: out.table)
                for op in tx.operations {
                    guard case .elements(_, let elements) = op.object else {
                        Issue.record("\(name): removing \(c.name) changes more than elements: \(op)")
                        continue
                    }
                    #expect(elements.allSatisfy { if case .verdict? = $0.data { false } else { true } }, "\(name): removing \(c.name): \(op)")
                }
            }
        }
        #expect(maps == worlds.count * 6, "two identity maps and four dispatch maps per table, found \(maps)")
        #expect(removals > 50, "only \(removals) removals checked")
    }

    /// Identity numbers are `classid` values qdiscs read as an unset priority (major 0, low four
    /// bits 0), distinct, and stable when another identity comes.
    @Test func identityNumbersAreDistinctHarmlessAndStable() {
        let ids = (0..<300).map { Identity([ServiceRef(segment: "s\($0 % 7)", name: "svc\($0)")]) }
        let numbers = IdentityNumbering.numbers(for: ids)
        #expect(numbers.count == 300 && Set(numbers.values).count == 300)
        for case .classid(let v) in numbers.values { #expect(v >> 16 == 0 && v & 0xf == 0 && v != 0, "\(v)") }
        let more = IdentityNumbering.numbers(for: ids + [Identity([ServiceRef(segment: "t", name: "new")])])
        let moved = ids.filter { numbers[$0] != more[$0] }
        #expect(moved.count <= 1, "\(moved.count) identities changed number when one came")
        let many = (0..<4100).map { Identity([ServiceRef(segment: "m", name: "svc\($0)")]) }
        #expect(Set(IdentityNumbering.numbers(for: many).values).count == 4100, "past 4095 identities numbers stay distinct")
    }

    @Test func policyChangeReplacesOnlyAffectedChains() throws {
        let policies = try examplePolicies()
        let inventory = try exampleInventory()
        var changed = policies
        let shop = try #require(changed.segments.firstIndex { $0.name == "shop" })
        let i = try #require(changed.segments[shop].flows.firstIndex { $0.location.line == 29 })
        changed.segments[shop].flows[i].ports = [.tcp(5432...5433)]
        let tx = try Diff.between(desired: Compiler.compile(changed, inventory).table, live: Compiler.compile(policies, inventory).table)
        let touched = Set(tx.operations.compactMap { op -> String? in
            switch op.object {
            case .chain(let c): return c.name
            case .rule(let r): return r.chain
            default: return nil
            }
        })
        #expect(touched == ["in_shop_db"], "\(tx)")
    }

    @Test func equalInputsGiveZeroOperations() throws {
        let a = Compiler.compile(try examplePolicies(), try exampleInventory()).table
        let b = Compiler.compile(try examplePolicies(), try exampleInventory()).table
        #expect(try Diff.between(desired: a, live: b).isEmpty)
    }

    @Test func containerInTwoServicesGetsItsOwnIdentity() throws {
        var inventory = try exampleInventory()
        let policies = try examplePolicies()
        inventory.containers.append(Container(
            name: "both", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
            networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.40"))]))
        var p = policies
        let shop = try #require(p.segments.firstIndex { $0.name == "shop" })
        p.segments[shop].services.append(Service(ref: ServiceRef(segment: "shop", name: "extra"), labels: ["com.docker.compose.service": "api"],
                                                 location: FilePosition(file: "x", mark: .start), selectorLocation: FilePosition(file: "x", mark: .start)))
        let out = Compiler.compile(p, inventory)
        #expect(out.identities.contains(Identity([ServiceRef(segment: "shop", name: "api"), ServiceRef(segment: "shop", name: "extra")])))
        #expect(out.table.chain(named: "in_shop_api__shop_extra") != nil)
    }

    @Test func auditModeLogsAndAccepts() throws {
        var policies = try examplePolicies()
        let dns = try #require(policies.segments.firstIndex { $0.name == "dns" })
        policies.segments[dns].mode = .audit
        let table = Compiler.compile(policies, try exampleInventory()).table
        let last = try #require(table.rules(in: "out_dns_resolver").last)
        #expect(last.statements.contains(.log(Log(prefix: "bulkhead audit dns: ", group: 1))))
        #expect(last.statements.last == .verdict(.accept))
    }
}

/// The compiled example, loaded with `nft -f` in a throwaway namespace, lists exactly as we render it.
@Test func compiledRulesetMatchesNftOracle() throws {
    let table = Compiler.compile(try examplePolicies(), try exampleInventory()).table
    let script = try Diff.between(desired: table, live: nil).description
    let listed = try TestSystem.withNamespace(prefix: "bh-cc") { ns in
        try TestSystem.nft(["-f", "-"], in: ns, stdin: script)
        return try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: ns)
    }
    let ours = NFTText.table(table)
    #expect(listed == ours, "--- nft\n\(listed)\n--- ours\n\(ours)")
}

/// The compiled table allows exactly what the policies grant: reading the grants back out of the
/// ruleset gives the policies' own grants.
@Test func decompiledGrantsEqualPolicyGrants() throws {
    let policies = try examplePolicies()
    let reading = Decompiler.read(Compiler.compile(policies, try exampleInventory()).table)
    #expect(reading.unrecognized.isEmpty, "\(reading.unrecognized)")
    #expect(Set(reading.grants.map(\.key)) == Set(policies.grants.map(\.key)))
    #expect(reading.members[ServiceRef(segment: "shop", name: "api")]?.count == 8)
}

/// Sets are created in the order that makes the kernel read the fewest name bytes (`inLookupOrder`:
/// it finds a set by walking the table's list of sets from its head, for each new set and each rule
/// that looks one up): by name length over (1 + lookups), so a set many rules name comes before a
/// long name no rule looks up.
@Test func setsComeInTheOrderThatShortensTheKernelsNameWalks() throws {
    let table = Compiler.compile(try examplePolicies(), try exampleInventory()).table
    var lookups: [String: Int] = [:]
    for rule in table.rules { for name in rule.referencedSets { lookups[name, default: 0] += 1 } }
    let cost = table.sets.map { (name: $0.name, length: $0.name.utf8.count, weight: 1 + (lookups[$0.name] ?? 0)) }
    #expect(cost.count > 10)
    #expect(cost.filter { $0.weight > 1 }.count > 3, "some sets are looked up by rules")
    var pairs = 0
    for (a, b) in zip(cost, cost.dropFirst()) {
        #expect(a.length * b.weight <= b.length * a.weight, "\(a.name) before \(b.name)")
        pairs += 1
    }
    #expect(pairs == cost.count - 1)
}

/// The `bridge bulkhead` table from the inventory's ports and MACs.
@Suite struct PortBindingCompileTests {
    func bound() throws -> (PolicySet, Inventory) {
        var inventory = try exampleInventory()
        for i in inventory.containers.indices {
            for n in inventory.containers[i].networks.keys {
                inventory.containers[i].networks[n]?.mac = String(format: "02:42:00:00:%02x:%02x", i, n.count)
                inventory.containers[i].networks[n]?.port = "p\(i)\(n.prefix(4))"
            }
        }
        return (try examplePolicies(), inventory)
    }

    func elements(_ t: Table, _ set: String) -> [[KeyPart]] { t.set(named: set)?.elements.map(\.key) ?? [] }

    @Test func eachPortCarriesItsContainersAddressesMACAndLinkLocal() throws {
        let (policies, inventory) = try bound()
        let t = Compiler.compile(policies, inventory).bridgeTable
        #expect(t.id == TableID(family: .bridge, name: "bulkhead"))
        let api = try #require(inventory.containers.firstIndex { $0.name == "shop-api-1" })
        let port = Value.ifname("p\(api)shop")
        let v4 = elements(t, PortBinding.bindV4).filter { $0.first == .value(port) }.map { $0[1].low }
        // Its addresses on every network (a reply can leave through the other network's port).
        #expect(Set(v4) == Set(inventory.containers[api].addresses.filter(\.isIPv4).map(\.nftValue)))
        let macText = try #require(inventory.containers[api].networks["shop_default"]?.mac)
        let mac = try #require(EtherAddress(macText))
        #expect(elements(t, PortBinding.bindEther).contains([.value(port), .value(.etherAddr(mac))]))
        #expect(elements(t, PortBinding.bindV6).contains([.value(port), .value(.ipv6(PortBinding.linkLocal(mac)))]))
        #expect(PortBinding.linkLocal(EtherAddress("02:42:ac:14:00:02")!) == IPv6Address("fe80::42:acff:fe14:2")!)
    }

    @Test func unboundPortsAreClosedAndALyingInventoryStillCompiles() throws {
        var (policies, inventory) = try bound()
        inventory.networks[0].unboundPorts = ["vethlost", "bad/name"]
        // Two containers claim one port: one element, no failure.
        let second = inventory.containers[1].networks.keys.sorted()[0]
        let taken = inventory.containers[0].networks.values.first?.port
        inventory.containers[1].networks[second]?.port = taken
        let t = Compiler.compile(policies, inventory).bridgeTable
        let ports = elements(t, PortBinding.ports)
        #expect(ports.contains([.value(.ifname("vethlost"))]))
        #expect(!ports.contains([.value(.ifname("bad/name"))]), "an impossible interface name is never programmed")
        #expect(!elements(t, PortBinding.bindEther).contains { $0.first == .value(.ifname("vethlost")) })
        #expect(Set(ports).count == ports.count)
        // Networks the policies do not govern are not bound.
        policies.segments = []
        #expect(Compiler.compile(policies, inventory).bridgeTable.set(named: PortBinding.ports)?.elements.isEmpty == true)
    }
}
