import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Testing

func examples() throws -> (PolicySet, Inventory) {
    let loaded = PolicyLoader.load(paths: ["policies"].map { TestSystem.repositoryRoot + "/" + $0 })
    #expect(!loaded.hasErrors)
    let (inventory, _) = InventoryLoader.load(path: TestSystem.repositoryRoot + "/policies/inventory.json")
    return (loaded.policies, try #require(inventory))
}

@Suite struct PlannerWithFake {
    @Test func applyThenReplanIsEmpty() throws {
        let (policies, inventory) = try examples()
        let fake = FakeNetfilter()
        let planner = Planner()
        let first = try planner.plan(policies: policies, inventory: inventory, backend: fake)
        #expect(first.hasChanges)
        #expect(first.closed.isEmpty)
        #expect(first.opened.count == policies.grants.count)
        try planner.apply(first, to: fake)
        let second = try planner.plan(policies: policies, inventory: inventory, backend: fake)
        #expect(!second.hasChanges, "\(second.transaction)")
        #expect(second.opened.isEmpty && second.closed.isEmpty && second.membership.isEmpty)
    }

    @Test func policyChangeReportsOpenedAndClosedFlows() throws {
        let (policies, inventory) = try examples()
        let fake = FakeNetfilter()
        let planner = Planner()
        try planner.apply(try planner.plan(policies: policies, inventory: inventory, backend: fake), to: fake)
        var changed = policies
        let shop = try #require(changed.segments.firstIndex { $0.name == "shop" })
        let i = try #require(changed.segments[shop].flows.firstIndex { $0.location.line == 26 })
        changed.segments[shop].flows[i].ports = [.tcp(9090...9090)]  // frontend -> api: 8080 becomes 9090
        let plan = try planner.plan(policies: changed, inventory: inventory, backend: fake)
        #expect(plan.opened.map(\.grant.description) == ["shop/frontend -> shop/api tcp/9090"])
        #expect(plan.closed.map(\.grant.description) == ["shop/frontend -> shop/api tcp/8080"])
        #expect(plan.opened.first?.fromContainers == 1 && plan.opened.first?.toContainers == 2)
        #expect(plan.membership.isEmpty)
    }

    @Test func containerChurnReportsMembershipOnly() throws {
        let (policies, inventory) = try examples()
        let fake = FakeNetfilter()
        let planner = Planner()
        try planner.apply(try planner.plan(policies: policies, inventory: inventory, backend: fake), to: fake)
        var more = inventory
        more.containers.append(Container(name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                         networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
        let plan = try planner.plan(policies: policies, inventory: more, backend: fake)
        #expect(plan.opened.isEmpty && plan.closed.isEmpty)
        #expect(plan.membership.map(\.service.description) == ["shop/api"])
        #expect(plan.membership.first?.containers == ["shop-api-3"])
    }

    @Test func staleGenerationIsRefused() throws {
        let (policies, inventory) = try examples()
        let fake = FakeNetfilter()
        let planner = Planner()
        let read = try fake.generation()
        let plan = try planner.plan(policies: policies, inventory: inventory, backend: fake)
        // Someone else commits between our read and our write.
        try fake.apply(Transaction(table: TableID(family: .inet, name: "other"), current: nil).adding(.table(Table(family: .inet, name: "other"))), expectedGeneration: nil)
        let now = try fake.generation()
        #expect(now != read)
        #expect(throws: RulesetError.staleGeneration(expected: read, actual: now)) { try planner.apply(plan, to: fake) }
        #expect(try fake.dump(table: Planner.tableID) == nil)
    }
}

extension Transaction {
    func adding(_ o: Object) throws -> Transaction {
        var t = self
        try t.add(o)
        return t
    }
}
