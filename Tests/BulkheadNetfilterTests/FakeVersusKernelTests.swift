import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
@testable import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

#if canImport(Glibc)
import Glibc
#endif

/// `FakeNetfilter` is trusted to "validate like the kernel" by every unit test above the netlink
/// layer. This suite holds it to that: the same transactions go to the fake and to the real
/// kernel (a fresh network namespace per test) and both must take the same decision — accept, or
/// refuse the same operation with the same class of error — and afterwards hold the same tables.
///
/// Each step also states the decision it expects, so two backends that agree on a wrong answer
/// (both accepting a delete of a missing chain) still fail.
///
/// Disagreements this suite found:
/// - table flags (fixed in the fake, `TableState.checkFlags`): the kernel refuses unknown flag bits
///   with EOPNOTSUPP and will not add or drop `persist` (nor add `owner` to a table that is not an
///   orphan) on an existing table; the fake took any flags;
/// - a chain without hook added over a base chain (fixed in the fake): the kernel changes nothing,
///   the fake refused it;
/// - redefinitions: the kernel answers EEXIST for a set and EOPNOTSUPP for a chain, which the fake
///   reports as `setConflict` / `chainConflict` (classified accordingly in `Refusal.fake`);
/// - a lookup of another key type: kept stricter in the fake on purpose (see
///   `aLookupOfAnotherKeyTypeIsRefusedByTheFakeAndTakenByTheKernel`).
/// Kernel behaviour that surprised: a jump closing a loop is refused with EMLINK, not ELOOP
/// (see `Refusal.kernel`); a new table may have `persist` without `owner`.
@Suite(.enabled(if: Kernel.enabled, "needs root"))
struct FakeVersusKernelTests {
    static let inet = TableID(family: .inet, name: "bulkhead")
    static let bridge = TableID(family: .bridge, name: "bulkhead")

    // MARK: (a) the compiler's output, then incremental updates

    @Test func examplePoliciesThenChurnAgree() throws {
        try Differential.run { d in
            let policies = try exampleDiffPolicies()
            let inventory = withPorts(try exampleDiffInventory())
            try d.plan("example policies, first apply", policies, inventory, expect: .accepted)
            try d.plan("same inputs again", policies, inventory, expect: .accepted, expectEmpty: true)

            // A container added and removed, as the agent does it: element-only transactions.
            let added = Container(name: "shop-db-2", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "db"],
                                  networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.20"), ipv6: IPAddress("fd00:20::20"),
                                                                        mac: "02:42:ac:14:00:14", port: "vethdb2")])
            try d.incremental("container added", policies, inventory, .added(added))
            var grown = inventory
            grown.containers.append(added)
            try d.plan("full plan after the add is empty", policies, grown, expect: .accepted, expectEmpty: true)
            try d.incremental("container removed", policies, grown, .removed(added))
            try d.plan("full plan after the removal is empty", policies, inventory, expect: .accepted, expectEmpty: true)

            // A container added through the full plan (a new identity: chains, rules, elements).
            let odd = Container(name: "odd-1", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "frontend",
                                                         "com.docker.compose.oneoff": "True"],
                                networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"), mac: "02:42:ac:14:00:1e", port: "vethodd")])
            var more = inventory
            more.containers.append(odd)
            try d.plan("container added by full plan", policies, more, expect: .accepted)
            try d.plan("container removed by full plan", policies, inventory, expect: .accepted)

            // An element op and a rule replaced, built from each backend's own dump (handles differ).
            let live = try #require(try d.fake.dump(table: Self.inet))
            let svc = try #require(live.sets.first { $0.name.hasPrefix("svc_") && $0.key == KeyType(.ipv4Addr) })
            let extra = SetElement(.ipv4(IPv4Address("10.99.0.1")!))
            try d.step("element added", expect: .accepted) { t in
                var tx = Transaction(table: Self.inet, current: t[Self.inet] ?? nil)
                try tx.add(.elements(set: svc.name, [extra]))
                return [tx]
            }
            try d.step("element deleted", expect: .accepted) { t in
                var tx = Transaction(table: Self.inet, current: t[Self.inet] ?? nil)
                try tx.delete(.elements(set: svc.name, [extra]))
                return [tx]
            }
            try d.step("rule replaced", expect: .accepted) { t in
                let table = try #require(t[Self.inet] ?? nil)
                let old = try #require(table.rules.first { $0.comment != nil && $0.chain.hasPrefix("in_") })
                var tx = Transaction(table: Self.inet, current: table)
                try tx.delete(.rule(old))
                try tx.add(.rule(Rule(chain: old.chain, old.statements, comment: "replaced")))
                return [tx]
            }
            try d.plan("the plan puts the rule back", policies, inventory, expect: .accepted)
            try d.plan("and then has nothing to do", policies, inventory, expect: .accepted, expectEmpty: true)
        }
    }

    @Test(arguments: [11, 23, 37])
    func randomPoliciesAgree(seed: Int) throws {
        try Differential.run { d in
            var rng = SeededGenerator(seed: UInt64(seed))
            let (yaml, inventory) = randomSegmentWorld(&rng, bindPorts: true)
            let policies = try diffPolicies(yaml)
            try d.plan("seed \(seed): first apply", policies, inventory, expect: .accepted)
            var less = inventory
            let gone = less.containers.remove(at: Int.random(in: 0..<less.containers.count, using: &rng))
            try d.plan("seed \(seed): \(gone.name) removed", policies, less, expect: .accepted)
            try d.plan("seed \(seed): \(gone.name) back", policies, inventory, expect: .accepted)
            try d.plan("seed \(seed): nothing to do", policies, inventory, expect: .accepted, expectEmpty: true)
        }
    }

    // MARK: (b) hand-made transactions the kernel refuses

    /// A small table with everything the invalid cases need, applied to both backends.
    static let base = Table(
        family: .inet, name: "bulkhead",
        sets: [
            NFTSet(name: "v4", key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("10.0.0.1")))]),
            NFTSet(name: "nets", key: KeyType(.ipv4Addr), flags: .interval, elements: [SetElement(key: [.prefix(v4("10.1.0.0"), 16)])]),
            NFTSet(name: "unused", key: KeyType(.inetService)),
            NFTSet(name: "vmap", key: KeyType(.ipv4Addr), data: .verdict,
                   elements: [SetElement(.ipv4(v4("10.0.0.2")), .verdict(.jump("by_map")))]),
        ],
        chains: [
            Chain(name: "forward", base: BaseChain(hook: .forward, priority: 0)),
            Chain(name: "target"),
            Chain(name: "by_map"),
            Chain(name: "lonely"),
        ],
        rules: [
            Rule(chain: "forward", [.match(Match(.ipSaddr, .set("v4"))), .verdict(.jump("target"))]),
            Rule(chain: "forward", [.vmap(fields: [.ipDaddr], map: .named("vmap"))]),
            Rule(chain: "target", [.counter(), .verdict(.accept)]),
            Rule(chain: "lonely", [.verdict(.jump("target"))]),
        ])

    /// One invalid case: the transaction is queued against what it *believes* the table holds
    /// (so `Transaction` validation lets it through, as a stale plan would), then sent to both.
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var expect: Outcome
        /// The table the transaction is for.
        var table: TableID = FakeVersusKernelTests.inet
        /// What the transaction believes; the base table unless replaced.
        var believed: @Sendable (Table) -> Table? = { $0 }
        var build: @Sendable (inout Transaction) throws -> Void
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "delete a missing table", expect: .refused(.notFound, index: 0), table: bridge,
             believed: { _ in Table(family: .bridge, name: "bulkhead") }) { tx in
            try tx.delete(.table(Table(family: .bridge, name: "bulkhead")))
        },
        Case(name: "delete a missing chain", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.chains.append(Chain(name: "ghost")); return t }) { tx in
            try tx.delete(.chain(Chain(name: "ghost")))
        },
        Case(name: "delete a missing set", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.sets.append(NFTSet(name: "ghost", key: KeyType(.ipv4Addr))); return t }) { tx in
            try tx.delete(.set(NFTSet(name: "ghost", key: KeyType(.ipv4Addr))))
        },
        Case(name: "delete a missing element", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.sets[0].setElements(t.sets[0].elements + [SetElement(.ipv4(v4("10.0.0.9")))]); return t }) { tx in
            try tx.delete(.elements(set: "v4", [SetElement(.ipv4(v4("10.0.0.9")))]))
        },
        Case(name: "delete a rule by a handle nobody has", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.rules.append(Rule(chain: "lonely", handle: 99_999, [.verdict(.accept)])); return t }) { tx in
            try tx.delete(.rule(Rule(chain: "lonely", handle: 99_999, [.verdict(.accept)])))
        },
        Case(name: "create an existing element", expect: .refused(.exists, index: 0),
             believed: { var t = $0; t.sets[0].setElements([]); return t }) { tx in
            // create (NLM_F_EXCL) of an element the set holds; the transaction believes it is new.
            try tx.create(.elements(set: "v4", [SetElement(.ipv4(v4("10.0.0.1")))]))
        },
        Case(name: "add an existing element again is fine", expect: .accepted,
             believed: { var t = $0; t.sets[0].setElements([]); return t }) { tx in
            try tx.add(.elements(set: "v4", [SetElement(.ipv4(v4("10.0.0.1")))]))
        },
        Case(name: "add a map element that exists with another verdict", expect: .refused(.exists, index: 0),
             believed: { var t = $0; t.sets[3].setElements([]); return t }) { tx in
            try tx.add(.elements(set: "vmap", [SetElement(.ipv4(v4("10.0.0.2")), .verdict(.drop))]))
        },
        Case(name: "add an overlapping interval", expect: .refused(.exists, index: 0),
             believed: { var t = $0; t.sets[1].setElements([]); return t }) { tx in
            try tx.add(.elements(set: "nets", [SetElement(key: [.prefix(v4("10.1.2.0"), 24)])]))
        },
        Case(name: "create an existing chain", expect: .refused(.exists, index: 1),
             believed: { var t = $0; t.chains.removeAll { $0.name == "lonely" }; return t }) { tx in
            try tx.add(.chain(Chain(name: "fresh")))
            try tx.create(.chain(Chain(name: "lonely")))
        },
        Case(name: "create an existing set", expect: .refused(.exists, index: 0),
             believed: { var t = $0; t.sets.removeAll { $0.name == "unused" }; return t }) { tx in
            try tx.create(.set(NFTSet(name: "unused", key: KeyType(.inetService))))
        },
        Case(name: "create an existing table", expect: .refused(.exists, index: 0), believed: { _ in nil }) { tx in
            try tx.create(.table(Table(family: .inet, name: "bulkhead")))
        },
        Case(name: "add a set that exists with another key type", expect: .refused(.exists, index: 0),
             believed: { var t = $0; t.sets.removeAll { $0.name == "unused" }; return t }) { tx in
            try tx.add(.set(NFTSet(name: "unused", key: KeyType(.ipv4Addr))))
        },
        Case(name: "add a base chain that exists as a regular chain", expect: .refused(.notSupported, index: 0),
             believed: { var t = $0; t.chains.removeAll { $0.name == "lonely" }; t.rules.removeAll { $0.chain == "lonely" }; return t }) { tx in
            try tx.add(.chain(Chain(name: "lonely", base: BaseChain(hook: .input, priority: 0))))
        },
        Case(name: "a base chain that exists on another hook", expect: .refused(.notSupported, index: 0),
             believed: { var t = $0; t.chains[0].base?.hook = .input; t.rules.removeAll { $0.chain == "forward" }; return t }) { tx in
            try tx.add(.chain(Chain(name: "forward", base: BaseChain(hook: .input, priority: 0))))
        },
        Case(name: "a base chain that exists with another priority", expect: .refused(.notSupported, index: 0),
             believed: { var t = $0; t.chains[0].base?.priority = 5; t.rules.removeAll { $0.chain == "forward" }; return t }) { tx in
            try tx.add(.chain(Chain(name: "forward", base: BaseChain(hook: .forward, priority: 5))))
        },
        // The kernel takes a chain without hook over a base chain as a no-op (the chain stays a
        // base chain); the fake refused it until this suite.
        Case(name: "a regular chain that exists as a base chain changes nothing", expect: .accepted,
             believed: { var t = $0; t.chains[0].base = nil; t.rules.removeAll { $0.chain == "forward" }; return t }) { tx in
            try tx.add(.chain(Chain(name: "forward")))
        },
        Case(name: "a vmap on a plain set", expect: .refused(.invalid, index: 0),
             believed: { var t = $0; t.sets[0] = NFTSet(name: "v4", key: KeyType(.ipv4Addr), data: .verdict); return t }) { tx in
            try tx.add(.rule(Rule(chain: "lonely", [.vmap(fields: [.ipSaddr], map: .named("v4"))])))
        },
        Case(name: "a map element with a value for a verdict map", expect: .refused(.invalid, index: 0),
             believed: { var t = $0; t.sets[3] = NFTSet(name: "vmap", key: KeyType(.ipv4Addr), data: .value(.mark)); return t }) { tx in
            try tx.add(.elements(set: "vmap", [SetElement(.ipv4(v4("10.0.0.8")), .value(.mark(7)))]))
        },
        Case(name: "a rule jumping to a missing chain", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.chains.append(Chain(name: "ghost")); return t }) { tx in
            try tx.add(.rule(Rule(chain: "forward", [.verdict(.jump("ghost"))])))
        },
        Case(name: "a rule looking up a missing set", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.sets.append(NFTSet(name: "ghost", key: KeyType(.ipv4Addr))); return t }) { tx in
            try tx.add(.rule(Rule(chain: "forward", [.match(Match(.ipSaddr, .set("ghost"))), .verdict(.accept)])))
        },
        Case(name: "a rule jumping to a base chain", expect: .refused(.notSupported, index: 0),
             believed: { var t = $0; t.chains[0].base = nil; return t }) { tx in
            try tx.add(.rule(Rule(chain: "lonely", [.verdict(.jump("forward"))])))
        },
        Case(name: "a rule closing a jump loop", expect: .refused(.loop, index: 0),
             // `lonely` jumps to `target`; the transaction believes it does not.
             believed: { var t = $0; t.rules.removeAll { $0.chain == "lonely" }; return t }) { tx in
            try tx.add(.rule(Rule(chain: "target", [.verdict(.jump("lonely"))])))
        },
        Case(name: "a set element of the wrong key type and length", expect: .refused(.invalid, index: 0),
             believed: { var t = $0; t.sets[2] = NFTSet(name: "unused", key: KeyType(.ipv6Addr)); return t }) { tx in
            try tx.add(.elements(set: "unused", [SetElement(.ipv6(v6("fd00::1")))]))
        },
        Case(name: "a map element with a verdict to a missing chain", expect: .refused(.notFound, index: 0),
             believed: { var t = $0; t.chains.append(Chain(name: "ghost")); return t }) { tx in
            try tx.add(.elements(set: "vmap", [SetElement(.ipv4(v4("10.0.0.7")), .verdict(.jump("ghost")))]))
        },
        Case(name: "delete a chain a rule still jumps to", expect: .refused(.busy, index: 0),
             believed: { var t = $0; t.rules.removeAll { $0.jumpTargets.contains("target") }; return t }) { tx in
            try tx.delete(.chain(Chain(name: "target")))
        },
        Case(name: "delete a chain a verdict map still jumps to", expect: .refused(.busy, index: 0),
             believed: { var t = $0; t.sets[3].setElements([]); return t }) { tx in
            try tx.delete(.chain(Chain(name: "by_map")))
        },
        Case(name: "delete a set a rule still looks up", expect: .refused(.busy, index: 0),
             believed: { var t = $0; t.rules.removeAll { $0.chain == "forward" }; return t }) { tx in
            try tx.delete(.set(NFTSet(name: "v4", key: KeyType(.ipv4Addr))))
        },
        Case(name: "a table flag the kernel does not know", expect: .refused(.notSupported, index: 0)) { tx in
            // Validation refuses the flag when queued, so it is queued unvalidated.
            tx.appendUnvalidated(Operation(.add, .table(Table(family: .inet, name: "bulkhead", flags: TableFlags(rawValue: 0x8)))))
        },
        Case(name: "owner and persist added to an existing unowned table", expect: .refused(.notSupported, index: 0),
             believed: { var t = $0; t.flags = .persist; return t }) { tx in
            // Believed an orphan (persist alone), which may be adopted; it has no flags at all.
            try tx.add(.table(Table(family: .inet, name: "bulkhead", flags: [.owner, .persist])))
        },
        Case(name: "owner added to an existing unowned table", expect: .refused(.notSupported, index: 0),
             believed: { var t = $0; t.flags = .owner; return t }) { tx in
            try tx.add(.table(Table(family: .inet, name: "bulkhead", flags: .owner)))
        },
        // The kernel creates a table with `persist` and no `owner` (an orphan from the start).
        Case(name: "a new table with persist but no owner is fine", expect: .accepted, table: bridge,
             believed: { _ in nil }) { tx in
            try tx.add(.table(Table(family: .bridge, name: "bulkhead", flags: .persist)))
        },
        Case(name: "dormant on, then a chain: fine", expect: .accepted) { tx in
            try tx.add(.table(Table(family: .inet, name: "bulkhead", flags: .dormant)))
            try tx.add(.chain(Chain(name: "late")))
        },
        Case(name: "the third operation fails: nothing of the first two stays", expect: .refused(.notFound, index: 2),
             believed: { var t = $0; t.chains.append(Chain(name: "ghost")); return t }) { tx in
            try tx.add(.chain(Chain(name: "new_one")))
            try tx.add(.elements(set: "v4", [SetElement(.ipv4(v4("10.0.0.50")))]))
            try tx.delete(.chain(Chain(name: "ghost")))
        },
    ]

    @Test(arguments: cases)
    func handMadeTransactionsGetTheSameDecision(_ c: Case) throws {
        try Differential.run { d in
            let baseTable = Self.base
            try d.step("base table", expect: .accepted) { _ in [try creation(of: baseTable)] }
            try d.step(c.name, expect: c.expect) { _ in
                var tx = Transaction(table: c.table, current: c.believed(baseTable))
                try c.build(&tx)
                return [tx]
            }
        }
    }

    /// The one place where the fake is knowingly stricter than the kernel: a lookup whose key
    /// type differs from the set's. The kernel only checks that the set's key length fits in the
    /// registers, so it takes `ip saddr @s` for an `inet_service` set (and compares 2 of the 4
    /// loaded bytes); nft refuses it ("datatype mismatch"), and so does the fake, because such
    /// a rule never means what it says and Bulkhead must not send it.
    @Test func aLookupOfAnotherKeyTypeIsRefusedByTheFakeAndTakenByTheKernel() throws {
        try Kernel.withNamespace { ns in
            let kernel = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let fake = FakeNetfilter()
            let base = try creation(of: Self.base)
            try fake.apply(base, expectedGeneration: nil)
            try kernel.apply(base, expectedGeneration: nil)
            var believed = Self.base
            believed.sets[2] = NFTSet(name: "unused", key: KeyType(.ipv4Addr))
            var tx = Transaction(table: Self.inet, current: believed)
            try tx.add(.rule(Rule(chain: "lonely", [.match(Match(.ipSaddr, .set("unused"))), .verdict(.accept)])))
            #expect(throws: RulesetError.operationFailed(index: 0, operation: NFTScript.command(tx.operations[0], table: Self.inet),
                                                         error: .lookupMismatch(chain: "lonely", set: "unused",
                                                                                reason: "key is ipv4_addr, set has inet_service"))) {
                try fake.apply(tx, expectedGeneration: nil)
            }
            try kernel.apply(tx, expectedGeneration: nil)
            #expect(try kernel.dump(table: Self.inet)?.rules(in: "lonely").count == 2)
        }
    }

    /// Valid deletes and flushes, one batch each, leave the same tables behind.
    @Test func deletesAndFlushesAgree() throws {
        try Differential.run { d in
            try d.step("base table", expect: .accepted) { _ in [try creation(of: Self.base)] }
            func change(_ label: String, _ body: @escaping (inout Transaction) throws -> Void) throws {
                try d.step(label, expect: .accepted) { t in
                    var tx = Transaction(table: Self.inet, current: t[Self.inet] ?? nil)
                    try body(&tx)
                    return [tx]
                }
            }
            try change("flush a set") { try $0.flush(.set(NFTSet(name: "nets", key: KeyType(.ipv4Addr), flags: .interval))) }
            try change("flush a verdict map and delete the chain it jumped to") { tx in
                try tx.flush(.set(NFTSet(name: "vmap", key: KeyType(.ipv4Addr), data: .verdict)))
                try tx.delete(.chain(Chain(name: "by_map")))
            }
            try change("delete a rule by handle") { tx in
                let rule = try #require(tx.expected?.rules(in: "target").first)
                try tx.delete(.rule(rule))
            }
            try change("flush a chain") { try $0.flush(.chain(Chain(name: "forward"))) }
            try change("delete a set no rule uses any more") { try $0.delete(.set(NFTSet(name: "v4", key: KeyType(.ipv4Addr)))) }
            try change("flush the table") { try $0.flush(.table(Self.base.header)) }
            try change("delete chains nothing jumps to") { tx in
                try tx.delete(.chain(Chain(name: "target")))
                try tx.delete(.chain(Chain(name: "lonely")))
            }
            try change("delete the table") { try $0.delete(.table(Self.base.header)) }
        }
    }

    @Test func staleGenerationIsRefusedByBoth() throws {
        try Differential.run { d in
            try d.step("base table", expect: .accepted) { _ in [try creation(of: Self.base)] }
            try d.step("commit against an older generation", expect: .refused(.stale, index: nil), generation: { $0 &- 1 }) { t in
                var tx = Transaction(table: Self.inet, current: t[Self.inet] ?? nil)
                try tx.add(.chain(Chain(name: "late")))
                return [tx]
            }
        }
    }

    // MARK: (c) both tables in one batch

    @Test func bothTablesInOneBatchCommitOrFailTogether() throws {
        try Differential.run { d in
            let bridgeTable = Table(family: .bridge, name: "bulkhead",
                                    sets: [NFTSet(name: "ports", key: KeyType(.ifname), elements: [SetElement(.ifname("veth0"))]),
                                           NFTSet(name: "bind_ether", key: KeyType(.ifname, .etherAddr),
                                                  elements: [SetElement(.ifname("veth0"), .etherAddr(EtherAddress("02:00:00:00:00:01")!))])],
                                    chains: [Chain(name: "prerouting", base: BaseChain(hook: .prerouting, priority: -200))],
                                    rules: [Rule(chain: "prerouting", [.match(Match(.iifname, negated: true, .set("ports"))), .verdict(.accept)]),
                                            Rule(chain: "prerouting", [.match(Match([.iifname, .etherSaddr], negated: true, .set("bind_ether"))),
                                                                       .counter(), .verdict(.drop)])])
            // The bridge half fails on its last operation: the inet half must not stay either,
            // and the failing index counts on across both transactions.
            let inetTx = try creation(of: Self.base)
            let failing = try Self.creationThenDeleteOfAGhostChain(bridgeTable)
            try d.step("inet ok, bridge refused", expect: .refused(.notFound, index: inetTx.operations.count + failing.operations.count - 1)) { _ in
                [inetTx, failing]
            }
            try d.step("inet and bridge together", expect: .accepted) { _ in
                [try creation(of: Self.base), try creation(of: bridgeTable)]
            }
            try d.step("a change to both", expect: .accepted) { t in
                var a = Transaction(table: Self.inet, current: t[Self.inet] ?? nil)
                try a.add(.elements(set: "v4", [SetElement(.ipv4(v4("10.0.0.77")))]))
                var b = Transaction(table: Self.bridge, current: t[Self.bridge] ?? nil)
                try b.delete(.elements(set: "ports", [SetElement(.ifname("veth0"))]))
                try b.add(.elements(set: "ports", [SetElement(.ifname("veth9"))]))
                return [a, b]
            }
        }
    }

    /// Creates `table`, then deletes chain `ghost`, which only the transaction's simulation holds.
    static func creationThenDeleteOfAGhostChain(_ table: Table) throws -> Transaction {
        var tx = Transaction(table: table.id, current: Table(family: table.family, name: table.name, chains: [Chain(name: "ghost")]))
        try tx.add(.table(table.header))
        for c in table.chains { try tx.add(.chain(c)) }
        for s in table.sets { try tx.add(.set(s)) }
        for r in table.rules { try tx.add(.rule(r)) }
        try tx.delete(.chain(Chain(name: "ghost")))
        return tx
    }
}
