import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import Testing

/// The planner compares the table's own flags: a dormant table is woken up; a table without the
/// ownership flags the backend keeps is replaced; an orphaned persistent table is adopted as is.
@Suite struct TableFlagsPlanning {
    /// The live table the example policies compile to, with `flags`.
    static func live(_ flags: TableFlags) throws -> (PolicySet, Inventory, FakeNetfilter) {
        let (policies, inventory) = try examples()
        let compiled = Compiler.compile(policies, inventory)
        var table = compiled.table, bridge = compiled.bridgeTable
        table.flags = flags
        bridge.flags = flags
        return (policies, inventory, FakeNetfilter(tables: [table, bridge]))
    }

    @Test func dormantTableIsWokenUp() throws {
        let (policies, inventory, fake) = try Self.live([.dormant])
        let plan = try Planner().plan(policies: policies, inventory: inventory, backend: fake)
        #expect(plan.hasChanges, "a dormant table enforces nothing: not 'No changes'")
        #expect(plan.tableChange == .flags(from: [.dormant], to: []))
        #expect(plan.bridgeTableChange == .flags(from: [.dormant], to: []), "a dormant bridge table binds no port")
        #expect(plan.transaction.operations == [Operation(.add, .table(Table(family: .inet, name: "bulkhead")))])
        #expect(plan.tableChangeSummary == "table flags change from dormant to none (a dormant table enforces nothing)")
        try Planner().apply(plan, to: fake)
        #expect(try fake.dump(table: Planner.tableID)?.flags == [])
        #expect(!(try Planner().plan(policies: policies, inventory: inventory, backend: fake).hasChanges))
    }

    @Test func tableWithoutOwnershipIsReplacedWhenTheBackendOwnsTables() throws {
        let (policies, inventory, fake) = try Self.live([.dormant])
        let planner = Planner(ownershipFlags: [.owner, .persist])
        let plan = try planner.plan(policies: policies, inventory: inventory, backend: fake)
        #expect(plan.tableChange == .replace(liveFlags: [.dormant], flags: [.owner, .persist]))
        let ops = plan.transaction.operations
        #expect(ops.prefix(2) == [Operation(.delete, .table(Table(family: .inet, name: "bulkhead", flags: [.dormant]))),
                                  Operation(.add, .table(Table(family: .inet, name: "bulkhead", flags: [.owner, .persist])))])
        #expect(plan.tableChangeSummary?.hasPrefix("the table is replaced: it has flags dormant and lacks owner,persist") == true)
        #expect(plan.opened.isEmpty && plan.closed.isEmpty, "the same rules come back")
        try planner.apply(plan, to: fake)
        #expect(try fake.dump(table: Planner.tableID)?.flags == [.owner, .persist])
        #expect(!(try planner.plan(policies: policies, inventory: inventory, backend: fake).hasChanges))
    }

    @Test func orphanedPersistentTableIsAdoptedAsItIs() throws {
        for flags: TableFlags in [[.persist], [.owner, .persist]] {
            let (policies, inventory, fake) = try Self.live(flags)
            let plan = try Planner(ownershipFlags: [.owner, .persist]).plan(policies: policies, inventory: inventory, backend: fake)
            #expect(plan.tableChange == nil)
            #expect(!plan.hasChanges)
        }
    }

    @Test func newTableGetsTheBackendsFlags() throws {
        let (policies, inventory) = try examples()
        let plan = try Planner(ownershipFlags: [.owner, .persist]).plan(policies: policies, inventory: inventory, backend: FakeNetfilter())
        #expect(plan.tableChange == .create)
        #expect(plan.desired.flags == [.owner, .persist])
    }

    /// Rules the backend could not decode are foreign wherever they are, and replaced.
    @Test func undecodedRulesAreReportedAndReplaced() throws {
        let (policies, inventory) = try examples()
        var table = Compiler.compile(policies, inventory).table
        let chain = try #require(table.chains.first { $0.base != nil }).name
        let foreign = Rule(chain: chain, [], comment: Rule.undecodedCommentPrefix + "[numgen reg 1 = inc mod 2]")
        table.rules.insert(foreign, at: 0)
        let fake = FakeNetfilter(tables: [table])
        let plan = try Planner().plan(policies: policies, inventory: inventory, backend: fake)
        #expect(plan.foreignRules.map(\.comment) == [foreign.comment])
        #expect(plan.transaction.operations.contains(Operation(.flush, .chain(Chain(name: chain)))))
        try Planner().apply(plan, to: fake)
        #expect(!(try fake.dump(table: Planner.tableID)!.rules.contains { $0.isUndecoded }))
    }

    @Test func replacementRuleOfTheKernel() {
        #expect(Diff.needsReplacement(from: [], to: [.owner, .persist]))
        #expect(Diff.needsReplacement(from: [.dormant], to: [.owner, .persist]))
        #expect(Diff.needsReplacement(from: [.owner], to: [.owner, .persist]))
        #expect(Diff.needsReplacement(from: [.owner, .persist], to: []))
        #expect(!Diff.needsReplacement(from: [.persist], to: [.owner, .persist]), "adopting an orphan")
        #expect(!Diff.needsReplacement(from: [.owner, .persist, .dormant], to: [.owner, .persist]))
        #expect(!Diff.needsReplacement(from: [.dormant], to: []))
    }
}
