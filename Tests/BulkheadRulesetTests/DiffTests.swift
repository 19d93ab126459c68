import Testing
@testable import BulkheadRuleset

@Suite struct DiffTests {
    let id = TableID(family: .inet, name: "bulkhead")

    /// Applies the diff to a fake holding `live` and checks the result equals `desired`.
    @discardableResult
    func converge(from live: Table?, to desired: Table?, sourceLocation: SourceLocation = #_sourceLocation) throws -> Transaction {
        let fake = FakeNetfilter(tables: live.map { [$0] } ?? [])
        let current = try fake.dump(table: id)
        let tx = try Diff.between(desired: desired, live: current)
        try fake.apply(tx, expectedGeneration: try fake.generation())
        #expect(content(try fake.dump(table: id)) == content(desired), sourceLocation: sourceLocation)
        #expect(try Diff.between(desired: desired, live: try fake.dump(table: id), table: id).isEmpty,
                "a second diff after applying must be empty", sourceLocation: sourceLocation)
        return tx
    }

    @Test func equalTablesGiveNoOperations() throws {
        let fake = FakeNetfilter(tables: [architectureTable()])
        // The dump has handles; counters may have moved: neither is a difference.
        var live = try #require(try fake.dump(table: id))
        live.rules = live.rules.map { r in
            var r = r
            if r.statements.contains(.counter()) { r = Rule(chain: r.chain, handle: r.handle, [.counter(packets: 5, bytes: 900), .verdict(.drop)]) }
            return r
        }
        #expect(try Diff.between(desired: architectureTable(), live: live).isEmpty)
        #expect(try Diff.between(desired: nil, live: nil, table: id).isEmpty)
    }

    @Test func createAndDeleteWholeTable() throws {
        let tx = try converge(from: nil, to: architectureTable())
        #expect(tx.operations.first == Operation(.add, .table(architectureTable().header)))
        let del = try converge(from: architectureTable(), to: nil)
        #expect(del.description == "delete table inet bulkhead\n")
    }

    @Test func elementChangesAreElementOperationsOnly() throws {
        var desired = architectureTable()
        desired.sets[0].setElements([SetElement(.ipv4(v4("172.18.0.2"))), SetElement(.ipv4(v4("172.18.0.7")))])
        desired.sets[1].setElements([SetElement(.ipv4(v4("172.18.0.4")), .verdict(.drop)),
                                     SetElement(.ipv4(v4("172.18.0.5")), .verdict(.jump("in_shop_api")))])
        let tx = try converge(from: architectureTable(), to: desired)
        #expect(tx.description == """
            delete element inet bulkhead svc_shop_frontend_v4 { 172.18.0.3 }
            delete element inet bulkhead ingress_v4 { 172.18.0.4 : jump in_shop_api }
            add element inet bulkhead svc_shop_frontend_v4 { 172.18.0.7 }
            add element inet bulkhead ingress_v4 { 172.18.0.4 : drop, 172.18.0.5 : jump in_shop_api }

            """)
    }

    @Test func changedChainIsFlushedAndRefilledNotRecreated() throws {
        var desired = architectureTable()
        desired.rules = desired.rules.map { r in
            guard r.chain == "in_shop_api", r.comment != nil else { return r }
            return Rule(chain: "in_shop_api", [.match(Match(.ipSaddr, .set("svc_shop_frontend_v4"))),
                                               .match(Match(.tcpDport, .value(.port(9090)))), .verdict(.accept)],
                        comment: "policies/shop.yaml:15")
        }
        let tx = try converge(from: architectureTable(), to: desired)
        #expect(tx.description == """
            flush chain inet bulkhead in_shop_api
            add rule inet bulkhead in_shop_api ip saddr @svc_shop_frontend_v4 tcp dport 9090 accept comment "policies/shop.yaml:15"
            add rule inet bulkhead in_shop_api counter packets 0 bytes 0 drop

            """)
    }

    @Test func newThingsComeFirstRemovedThingsLast() throws {
        var desired = architectureTable()
        // Replace service in_shop_api by in_shop_db, with a new source set.
        desired.chains = desired.chains.filter { $0.name != "in_shop_api" } + [Chain(name: "in_shop_db")]
        desired.sets = desired.sets.filter { $0.name != "svc_shop_frontend_v4" }
            + [NFTSet(name: "svc_shop_api_v4", key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("172.18.0.4")))])]
        desired.sets[0].setElements([SetElement(.ipv4(v4("172.18.0.5")), .verdict(.jump("in_shop_db")))])
        desired.rules = desired.rules.filter { $0.chain != "in_shop_api" } + [
            Rule(chain: "in_shop_db", [.match(Match(.ipSaddr, .set("svc_shop_api_v4"))), .match(Match(.tcpDport, .value(.port(5432)))), .verdict(.accept)]),
            Rule(chain: "in_shop_db", [.counter(), .verdict(.drop)]),
        ]
        let tx = try converge(from: architectureTable(), to: desired)
        #expect(tx.description == """
            add chain inet bulkhead in_shop_db
            add set inet bulkhead svc_shop_api_v4 { type ipv4_addr; elements = { 172.18.0.4 }; }
            flush chain inet bulkhead in_shop_api
            delete element inet bulkhead ingress_v4 { 172.18.0.4 : jump in_shop_api }
            delete set inet bulkhead svc_shop_frontend_v4
            delete chain inet bulkhead in_shop_api
            add element inet bulkhead ingress_v4 { 172.18.0.5 : jump in_shop_db }
            add rule inet bulkhead in_shop_db ip saddr @svc_shop_api_v4 tcp dport 5432 accept
            add rule inet bulkhead in_shop_db counter packets 0 bytes 0 drop

            """)
    }

    @Test func redefinedSetReplacesItsUsers() throws {
        var desired = architectureTable()
        desired.sets[3] = NFTSet(name: "governed_v4", key: KeyType(.ipv4Addr), flags: [.interval, .constant],
                                 elements: [SetElement(key: [.prefix(v4("172.18.0.0"), 16)])])
        let tx = try converge(from: architectureTable(), to: desired)
        #expect(tx.description.contains("flush chain inet bulkhead forward\n"))
        #expect(tx.description.contains("delete set inet bulkhead governed_v4\n"))
    }

    @Test func basePolicyChangeIsAnAddHookChangeIsARecreate() throws {
        var desired = architectureTable()
        desired.chains[0].base?.policy = .drop
        let tx = try converge(from: architectureTable(), to: desired)
        #expect(tx.description == "add chain inet bulkhead forward { type filter hook forward priority filter - 10; policy drop; }\n")
        desired.chains[0].base?.priority = 0
        let tx2 = try converge(from: architectureTable(), to: desired)
        #expect(tx2.description.hasPrefix("flush chain inet bulkhead forward\ndelete chain inet bulkhead forward\nadd chain inet bulkhead forward { type filter hook forward priority filter; policy drop; }\n"))
    }

    @Test func inconsistentDesiredTableThrows() throws {
        var desired = architectureTable()
        desired.rules.append(Rule(chain: "forward", [.verdict(.jump("in_missing"))]))
        #expect(throws: RulesetError.jumpToMissingChain(from: "forward", to: "in_missing")) {
            try Diff.between(desired: desired, live: architectureTable())
        }
    }

    /// One element changed in 100,000 is two operations. Its speed is `scripts/bench.sh`'s to
    /// measure; the time limit is only a hang guard (a quadratic diff would take minutes).
    @Test(.timeLimit(.minutes(1))) func largeElementDiffIsTwoOperations() throws {
        func table(_ range: Range<UInt32>) -> Table {
            Table(family: .inet, name: "bulkhead", sets: [
                NFTSet(name: "s", key: KeyType(.ipv4Addr), elements: range.map { SetElement(.ipv4(IPv4Address(0x0A00_0000 | $0))) }),
            ])
        }
        let tx = try Diff.between(desired: table(1..<100_001), live: table(0..<100_000))
        #expect(tx.description == "delete element inet bulkhead s { 10.0.0.0 }\nadd element inet bulkhead s { 10.1.134.160 }\n")
    }
}
