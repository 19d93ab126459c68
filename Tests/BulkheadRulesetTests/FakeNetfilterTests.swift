import Testing
@testable import BulkheadRuleset

/// The table without handles, counter values or creation order (a re-created chain or set moves
/// to the end of the kernel's list), for comparing a dump with a desired table.
func content(_ t: Table?) -> Table? {
    guard var t else { return nil }
    t.sets.sort { $0.name < $1.name }
    t.chains.sort { $0.name < $1.name }
    let order = Dictionary(uniqueKeysWithValues: t.chains.enumerated().map { ($1.name, $0) })
    t.rules = t.rules.map(\.zeroed).enumerated()
        .sorted { (order[$0.1.chain] ?? 0, $0.0) < (order[$1.1.chain] ?? 0, $1.0) }.map(\.1)
    return t
}

@Suite struct FakeNetfilterTests {
    let id = TableID(family: .inet, name: "bulkhead")

    @Test func applyDumpAndGeneration() throws {
        let fake = FakeNetfilter()
        #expect(try fake.dump(table: id) == nil)
        let g0 = try fake.generation()
        let tx = try Diff.between(desired: architectureTable(), live: nil)
        let g1 = try fake.apply(tx, expectedGeneration: g0)
        #expect(g1 == g0 + 1)
        let dumped = try #require(try fake.dump(table: id))
        #expect(content(dumped) == content(architectureTable()))
        #expect(dumped.rules.map(\.handle) == (1...8).map { UInt64($0) })
        #expect(NFTText.table(dumped) == NFTText.table(architectureTable()))
    }

    /// Several tables in one apply (inet + bridge): all or nothing, one generation, indices run on.
    @Test func twoTablesCommitTogetherOrNotAtAll() throws {
        let fake = FakeNetfilter()
        let bridge = TableID(family: .bridge, name: "bulkhead")
        let inet = try Diff.between(desired: architectureTable(), live: nil)
        var ok = Transaction(table: bridge, current: nil)
        try ok.add(.table(Table(family: .bridge, name: "bulkhead")))
        try ok.add(.set(NFTSet(name: "ports", key: KeyType(.ifname), elements: [SetElement(.ifname("veth0"))])))
        // The model thinks `ghost` exists; the backend does not: the second transaction fails.
        var failing = Transaction(table: bridge, current: Table(family: .bridge, name: "bulkhead", sets: [NFTSet(name: "ghost", key: KeyType(.ifname))]))
        try failing.delete(.set(NFTSet(name: "ghost", key: KeyType(.ifname))))
        let g0 = try fake.generation()
        #expect {
            try fake.apply([inet, failing], expectedGeneration: g0)
        } throws: { error in
            guard case RulesetError.operationFailed(let index, _, _) = error else { return false }
            return index == inet.operations.count
        }
        #expect(try fake.dump(table: id) == nil)
        #expect(try fake.generation() == g0)
        #expect(try fake.apply([inet, ok], expectedGeneration: g0) == g0 + 1)
        #expect(try fake.dump(table: id) != nil)
        #expect(try fake.dump(table: bridge)?.set(named: "ports")?.elements == [SetElement(.ifname("veth0"))])
    }

    @Test func staleGenerationIsRejectedAndNothingChanges() throws {
        let fake = FakeNetfilter(tables: [architectureTable()])
        let g = try fake.generation()
        fake.tamper(id) { $0?.rules.removeAll { $0.chain == "in_shop_api" } }
        var tx = try Transaction(table: id, backend: fake)
        try tx.add(.elements(set: "svc_shop_frontend_v4", [SetElement(.ipv4(v4("172.18.0.9")))]))
        #expect(throws: RulesetError.staleGeneration(expected: g, actual: g + 1)) {
            try fake.apply(tx, expectedGeneration: g)
        }
        #expect(try fake.dump(table: id)?.set(named: "svc_shop_frontend_v4")?.elements.count == 2)
    }

    @Test func failingOperationIsNamedAndTheBatchIsAtomic() throws {
        let fake = FakeNetfilter(tables: [architectureTable()])
        let before = try fake.dump(table: id)
        let g = try fake.generation()
        // Queued against a state where 'extra' exists; the fake has no such set, so op #3 fails.
        var assumed = architectureTable()
        assumed.sets.append(NFTSet(name: "extra", key: KeyType(.ipv4Addr)))
        var tx = Transaction(table: id, current: assumed)
        try tx.add(.elements(set: "svc_shop_frontend_v4", [SetElement(.ipv4(v4("172.18.0.9")))]))
        try tx.add(.chain(Chain(name: "new_chain")))
        try tx.add(.elements(set: "extra", [SetElement(.ipv4(v4("1.2.3.4")))]))
        try tx.add(.rule(Rule(chain: "new_chain", [.verdict(.accept)])))
        #expect(throws: RulesetError.operationFailed(index: 2, operation: "add element inet bulkhead extra { 1.2.3.4 }",
                                                     error: .noSuchSet("extra"))) {
            try fake.apply(tx, expectedGeneration: g)
        }
        #expect(try fake.dump(table: id) == before)
        #expect(try fake.generation() == g)
        let message = RulesetError.operationFailed(index: 2, operation: "add element inet bulkhead extra { 1.2.3.4 }",
                                                   error: .noSuchSet("extra")).description
        #expect(message == "operation 3 (add element inet bulkhead extra { 1.2.3.4 }) failed: set 'extra' does not exist")
    }

    @Test func ruleDeleteByHandle() throws {
        let fake = FakeNetfilter(tables: [architectureTable()])
        let live = try #require(try fake.dump(table: id))
        let victim = try #require(live.rules(in: "in_shop_api").last)
        var tx = Transaction(table: id, current: live)
        try tx.delete(.rule(victim))
        try fake.apply(tx, expectedGeneration: nil)
        #expect(try fake.dump(table: id)?.rules(in: "in_shop_api").count == 1)
        #expect(tx.description == "delete rule inet bulkhead in_shop_api handle \(victim.handle ?? 0)\n")
    }

    @Test func kernelLikeRefusals() throws {
        let fake = FakeNetfilter(tables: [architectureTable()])
        let live = try #require(try fake.dump(table: id))
        // Deleting a chain still referenced by a verdict map element.
        var assumed = live
        assumed.sets = assumed.sets.map { s in
            var s = s
            if s.name == "ingress_v4" { s.setElements([]) }
            return s
        }
        assumed.rules.removeAll { $0.chain == "in_shop_api" }
        var tx = Transaction(table: id, current: assumed)
        try tx.delete(.chain(Chain(name: "in_shop_api")))
        #expect(throws: RulesetError.operationFailed(index: 0, operation: "delete chain inet bulkhead in_shop_api",
                                                     error: .chainInUse("in_shop_api", by: ["map 'ingress_v4'"]))) {
            try fake.apply(tx, expectedGeneration: nil)
        }
        // Creating what exists.
        var tx2 = Transaction(table: id, current: nil)
        try tx2.create(.table(Table(family: .inet, name: "bulkhead")))
        #expect(throws: RulesetError.operationFailed(index: 0, operation: "create table inet bulkhead",
                                                     error: .tableExists(id))) {
            try fake.apply(tx2, expectedGeneration: nil)
        }
    }

    @Test func hundredThousandConcatenatedElementsInOneCommit() throws {
        let flows = NFTSet(name: "flows", key: KeyType(.ipv4Addr, .ipv4Addr, .inetService))
        let fake = FakeNetfilter(tables: [Table(family: .inet, name: "bulkhead", sets: [flows])])
        var els: [SetElement] = []
        els.reserveCapacity(100_000)
        for i in 0..<100_000 {
            els.append(SetElement(.ipv4(IPv4Address(0x0A00_0000 | UInt32(i))), .ipv4(IPv4Address(0x0B00_0001)), .port(UInt16(80 + i % 3))))
        }
        var tx = try Transaction(table: id, backend: fake)
        try tx.add(.elements(set: "flows", els))
        try fake.apply(tx, expectedGeneration: nil)
        #expect(try fake.dump(table: id)?.set(named: "flows")?.elements.count == 100_000)
    }
}
