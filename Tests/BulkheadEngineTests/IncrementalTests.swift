import Foundation
import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Testing

/// The incremental path must produce exactly the transaction the full compile + Diff produces
/// for one container added or removed, or say that it cannot.
@Suite struct IncrementalMatchesDiff {
    func without(_ inventory: Inventory, _ name: String) -> Inventory {
        var i = inventory
        i.containers.removeAll { $0.name == name }
        return i
    }

    func table(_ p: PolicySet, _ i: Inventory) -> Table { Compiler.compile(p, i).table }

    func isElementsOnly(_ tx: Transaction) -> Bool {
        tx.operations.allSatisfy { if case .elements = $0.object { return true } else { return false } }
    }

    /// Checks both directions for every container of `inventory`; returns how many were element-only.
    @discardableResult
    func checkEveryContainer(_ policies: PolicySet, _ inventory: Inventory) throws -> Int {
        let full = table(policies, inventory)
        var incremental = 0
        for c in inventory.containers {
            let rest = without(inventory, c.name)
            let less = table(policies, rest)

            let addDiff = try Diff.between(desired: full, live: less)
            switch IncrementalPlanner(policies: policies, inventory: rest, applied: less).transaction(for: .added(c)) {
            case .transaction(let tx):
                #expect(tx.operations == addDiff.operations, "add \(c.name):\n\(tx)\nvs diff:\n\(addDiff)")
                incremental += 1
            case .needsFullPlan(let reason):
                #expect(!isElementsOnly(addDiff), "add \(c.name) fell back (\(reason)) though the diff is element-only")
            }

            let removeDiff = try Diff.between(desired: less, live: full)
            switch IncrementalPlanner(policies: policies, inventory: inventory, applied: full).transaction(for: .removed(c)) {
            case .transaction(let tx):
                #expect(tx.operations == removeDiff.operations, "remove \(c.name):\n\(tx)\nvs diff:\n\(removeDiff)")
            case .needsFullPlan(let reason):
                #expect(!isElementsOnly(removeDiff), "remove \(c.name) fell back (\(reason)) though the diff is element-only")
            }
        }
        return incremental
    }

    @Test func everyExampleContainerAddedAndRemoved() throws {
        let (policies, inventory) = try examples()
        let n = try checkEveryContainer(policies, inventory)
        #expect(n == inventory.containers.count)
    }

    /// A second service selecting the api containers: they have a two-service identity.
    func withTwoServiceIdentity() throws -> (PolicySet, Inventory) {
        var (policies, inventory) = try examples()
        let shop = try #require(policies.segments.firstIndex { $0.name == "shop" })
        let api = try #require(policies.segments[shop].services.first { $0.name == "api" })
        policies.segments[shop].services.append(Service(ref: ServiceRef(segment: "shop", name: "apiextra"),
                                                        labels: ["com.docker.compose.service": "api"],
                                                        location: api.location, selectorLocation: api.selectorLocation))
        return (policies, inventory)
    }

    @Test func twoServiceIdentity() throws {
        let (policies, inventory) = try withTwoServiceIdentity()
        try checkEveryContainer(policies, inventory)
        // shop-api-1 and -2 share the identity: either can come and go by elements alone.
        let api1 = try #require(inventory.containers.first { $0.name == "shop-api-1" })
        let planner = IncrementalPlanner(policies: policies, inventory: inventory, applied: table(policies, inventory))
        guard case .transaction(let tx) = planner.transaction(for: .removed(api1)) else {
            Issue.record("removing one of two api containers should be element-only")
            return
        }
        #expect(isElementsOnly(tx) && !tx.isEmpty)
        // The last container of the combination takes its chains with it: full plan.
        let alone = without(inventory, "shop-api-2")
        let lone = IncrementalPlanner(policies: policies, inventory: alone, applied: table(policies, alone))
        guard case .needsFullPlan = lone.transaction(for: .removed(api1)) else {
            Issue.record("removing the last container of a combination must fall back")
            return
        }
        // A first container of a combination needs new chains: full plan.
        let none = without(alone, "shop-api-1")
        let first = IncrementalPlanner(policies: policies, inventory: none, applied: table(policies, none))
        guard case .needsFullPlan = first.transaction(for: .added(api1)) else {
            Issue.record("adding the first container of a combination must fall back")
            return
        }
    }

    /// A family without addresses has no objects (`Compiler`): the first address of a family
    /// needs the sets the full compile then makes, and removing the last one deletes them; both
    /// go to the full plan, every other change stays element-only and equal to the diff.
    @Test func firstAndLastAddressOfAFamilyNeedTheFullPlan() throws {
        let yaml = """
        segment: s
        networks: [n]
        services:
          web:
            labels: {role: web}
          client:
            labels: {role: client}
        flows:
          - from: client
            to: web
            ports: [tcp/80]

        """
        let loaded = PolicyLoader.load(sources: [("s.yaml", Array(yaml.utf8))])
        #expect(!loaded.hasErrors)
        // `n` (governed) is IPv4-only; `side` (not governed) has an IPv6 subnet.
        let networks = [Network(name: "n", subnets: [IPNetwork("10.80.0.0/24")!], gateways: [IPAddress("10.80.0.1")!]),
                        Network(name: "side", subnets: [IPNetwork("10.81.0.0/24")!, IPNetwork("fd00:81::/64")!], gateways: [])]
        let v4Only = Inventory(networks: networks, containers: [
            Container(name: "web-1", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.80.0.2"))]),
            Container(name: "web-2", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.80.0.3"))]),
            Container(name: "client-1", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.80.0.4"))]),
        ])
        let dual = Container(name: "client-6", labels: ["role": "client"],
                             networks: ["side": Attachment(ipv4: IPAddress("10.81.0.5"), ipv6: IPAddress("fd00:81::5"))])
        var withV6 = v4Only
        withV6.containers.append(dual)
        let before = table(loaded.policies, v4Only), after = table(loaded.policies, withV6)
        #expect(before.sets.allSatisfy { !$0.name.hasSuffix("_v6") } && !before.sets.isEmpty)
        #expect(after.sets.contains { $0.name == "managed_v6" })

        let adding = IncrementalPlanner(policies: loaded.policies, inventory: v4Only, applied: before)
        guard case .needsFullPlan = adding.transaction(for: .added(dual)) else {
            Issue.record("the first IPv6 address must fall back to the full plan")
            return
        }
        let removing = IncrementalPlanner(policies: loaded.policies, inventory: withV6, applied: after)
        guard case .needsFullPlan = removing.transaction(for: .removed(dual)) else {
            Issue.record("the last IPv6 address must fall back to the full plan")
            return
        }
        // Every other container of both inventories: element-only and equal to the diff.
        #expect(try checkEveryContainer(loaded.policies, v4Only) == 3)
        #expect(try checkEveryContainer(loaded.policies, withV6) == 3)
    }

    @Test func unclassifiedContainerChangesNothing() throws {
        let (policies, inventory) = try examples()
        let stray = Container(name: "stray-1", labels: ["app": "nobody"],
                              networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.200"), ipv6: IPAddress("fd00:20::200"))])
        var more = inventory
        more.containers.append(stray)
        let diff = try Diff.between(desired: table(policies, more), live: table(policies, inventory))
        let planner = IncrementalPlanner(policies: policies, inventory: inventory, applied: table(policies, inventory))
        guard case .transaction(let tx) = planner.transaction(for: .added(stray)) else {
            Issue.record("an unclassified container is not a full-plan change")
            return
        }
        #expect(tx.isEmpty && diff.isEmpty)
    }

    @Test func fallsBackOnWhatIsNotElements() throws {
        let (policies, inventory) = try examples()
        let planner = IncrementalPlanner(policies: policies, inventory: inventory, applied: table(policies, inventory))
        let api1 = try #require(inventory.containers.first { $0.name == "shop-api-1" })
        var twin = api1
        twin.name = "shop-api-twin"  // same addresses as shop-api-1
        var elsewhere = api1
        elsewhere.name = "shop-api-9"
        elsewhere.networks = ["unknown_net": Attachment(ipv4: IPAddress("10.9.9.9"))]
        for change in [IncrementalPlanner.Change.added(api1), .added(twin), .added(elsewhere),
                       .removed(Container(name: "ghost", labels: [:], networks: [:]))] {
            guard case .needsFullPlan = planner.transaction(for: change) else {
                Issue.record("\(change) should need the full plan")
                continue
            }
        }
    }

    /// A sequence of adds and removes through `record`, applied to a fake kernel, ends where the
    /// full plan of the final inventory would: the next full plan is empty.
    @Test func churnSequenceEndsWhereTheFullPlanDoes() throws {
        let (policies, inventory) = try withTwoServiceIdentity()
        var current = Inventory(networks: inventory.networks, containers: [], hostAddresses: inventory.hostAddresses)
        let fake = FakeNetfilter()
        let planner = Planner()
        try planner.apply(try planner.plan(policies: policies, inventory: current, backend: fake), to: fake)
        var inc = IncrementalPlanner(policies: policies, inventory: current, applied: try #require(try fake.dump(table: Planner.tableID)))
        var fullPlans = 0
        var changes = inventory.containers.map(IncrementalPlanner.Change.added)
        changes += inventory.containers.prefix(4).map(IncrementalPlanner.Change.removed)
        changes += inventory.containers.prefix(2).map(IncrementalPlanner.Change.added)
        for change in changes {
            switch change {
            case .added(let c): current.containers.append(c)
            case .removed(let c): current.containers.removeAll { $0.name == c.name }
            }
            switch inc.transaction(for: change) {
            case .transaction(let tx):
                try fake.apply(tx, expectedGeneration: nil)
                inc.record(change)
            case .needsFullPlan:
                fullPlans += 1
                try planner.apply(try planner.plan(policies: policies, inventory: current, backend: fake), to: fake)
                inc = IncrementalPlanner(policies: policies, inventory: current, applied: try #require(try fake.dump(table: Planner.tableID)))
            }
            let check = try planner.plan(policies: policies, inventory: current, backend: fake)
            #expect(!check.hasChanges, "after \(change):\n\(check.transaction)")
        }
        #expect(fullPlans >= 1)  // the first api container brings the combination's chains
    }
}

/// Issue 8, item 9: the incremental path never enrols an address the full compile refuses.
@Suite struct IncrementalRefusesForgedAddresses {
    @Test(arguments: ["8.8.8.8", "172.20.0.1", "172.20.0.2"])
    func forgedAddressFallsBackAndTheFullPlanLeavesItOut(_ forged: String) throws {
        let loaded = PolicyLoader.load(paths: [TestSystem.repositoryRoot + "/policies"])
        let (inv, _) = InventoryLoader.load(path: TestSystem.repositoryRoot + "/policies/inventory.json")
        let inventory = try #require(inv)
        let applied = Compiler.compile(loaded.policies, inventory).table
        let liar = Container(name: "shop-db-9", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "db"],
                             networks: ["shop_default": Attachment(ipv4: IPAddress(forged))])
        guard case .needsFullPlan(let reason) = IncrementalPlanner(policies: loaded.policies, inventory: inventory, applied: applied).transaction(for: .added(liar)) else {
            Issue.record("\(forged) was enrolled incrementally")
            return
        }
        #expect(reason.contains(forged), "\(reason)")
        var after = inventory
        after.containers.append(liar)
        let tx = try Diff.between(desired: Compiler.compile(loaded.policies, after).table, live: applied)
        let added = tx.operations.flatMap { op -> [SetElement] in if op.verb == .add, case .elements(_, let e) = op.object { return e } else { return [] } }
        #expect(!added.contains { $0.key.first?.low == .ipv4(IPv4Address(forged)!) }, "\(tx)")
    }
}

/// The port bindings (`bridge bulkhead`) follow churn by elements only, exactly as the full diff.
@Suite struct IncrementalBindingMatchesDiff {
    /// The example inventory with a MAC and a port on every attachment, as the lab and Docker report.
    func bound() throws -> (PolicySet, Inventory) {
        let (policies, examplesInventory) = try examples()
        var inventory = examplesInventory
        for (i, c) in inventory.containers.enumerated() {
            for name in c.networks.keys.sorted() {
                inventory.containers[i].networks[name]?.mac = String(format: "02:42:ac:%02x:00:%02x", i, name.count)
                inventory.containers[i].networks[name]?.port = "veth\(i)n\(name.count)"
            }
        }
        return (policies, inventory)
    }

    @Test func everyExampleContainerAddedAndRemoved() throws {
        let (policies, inventory) = try bound()
        let full = Compiler.compile(policies, inventory).bridgeTable
        var nonEmpty = 0
        for c in inventory.containers {
            var rest = inventory
            rest.containers.removeAll { $0.name == c.name }
            let less = Compiler.compile(policies, rest).bridgeTable
            let table = Compiler.compile(policies, rest).table

            let addDiff = try Diff.between(desired: full, live: less)
            guard case .transaction(let add) = IncrementalPlanner(policies: policies, inventory: rest, applied: table).bindingTransaction(for: .added(c)) else {
                Issue.record("binding \(c.name) needs a full plan")
                continue
            }
            #expect(add.operations == addDiff.operations, "add \(c.name):\n\(add)\nvs diff:\n\(addDiff)")
            #expect(add.operations.allSatisfy { if case .elements = $0.object { return true } else { return false } })
            if !add.isEmpty { nonEmpty += 1 }

            let removeDiff = try Diff.between(desired: less, live: full)
            let fullTable = Compiler.compile(policies, inventory).table
            guard case .transaction(let remove) = IncrementalPlanner(policies: policies, inventory: inventory, applied: fullTable).bindingTransaction(for: .removed(c)) else {
                Issue.record("unbinding \(c.name) needs a full plan")
                continue
            }
            #expect(remove.operations == removeDiff.operations, "remove \(c.name):\n\(remove)\nvs diff:\n\(removeDiff)")
        }
        #expect(nonEmpty == inventory.containers.count, "every example container is on a governed network")
    }
}
