import Foundation
import Testing
import BulkheadRuleset

/// Prints timings for the operations `bulkhead plan` and the agent run at production scale
/// (4,000 chains, 24,000 rules, 2,000 sets, ~200,000 elements). It asserts only correctness:
/// timings depend on the machine and the build, so read them from the output of
/// `swift test -c release --filter RulesetPerformanceReport` (debug builds are ~10-30x slower).
/// `BULKHEAD_PERF_SCALE=0.1` shrinks the table (to compare with a slower implementation).
@Suite struct RulesetPerformanceReport {
    let id = TableID(family: .inet, name: "bulkhead")

    var scale: Double {
        ProcessInfo.processInfo.environment["BULKHEAD_PERF_SCALE"].flatMap(Double.init) ?? 1
    }

    static func address(_ n: Int) -> Value { .ipv4(IPv4Address(0x0A00_0000 | UInt32(n))) }

    /// The shape `BulkheadCompiler` emits: a forward base chain dispatching through verdict maps
    /// to one chain per service, whose rules look up source sets; a few shared chains jumped to.
    static func bigTable(scale: Double, extraContainer: Int? = nil) -> Table {
        let chainCount = max(20, Int(4_000 * scale))
        let setCount = max(20, Int(2_000 * scale))
        let services = chainCount - 11  // forward + 10 shared chains
        let perSet = 98
        var chains = [Chain(name: "forward", base: BaseChain(hook: .forward, priority: -10))]
        chains += (0..<10).map { Chain(name: "common_\($0)") }
        chains += (0..<services).map { Chain(name: "in_svc_\($0)") }

        var ingress: [SetElement] = []
        for i in 0..<(services + 11) {  // one container per service, a few more
            ingress.append(SetElement(address(i), .verdict(.jump("in_svc_\(i % services)"))))
        }
        var sets = [
            NFTSet(name: "ingress_v4", key: KeyType(.ipv4Addr), data: .verdict, elements: ingress),
            NFTSet(name: "egress_v4", key: KeyType(.ipv4Addr), data: .verdict,
                   elements: (0..<200).map { SetElement(address(100_000 + $0), .verdict(.jump("common_\($0 % 10)"))) }),
            NFTSet(name: "governed_v4", key: KeyType(.ipv4Addr), flags: .interval,
                   elements: (0..<50).map { SetElement(key: [.prefix(IPv4Address(0xAC00_0000 | UInt32($0) << 16), 16)]) }),
        ]
        for s in 0..<(setCount - 3) {
            var els = (0..<perSet).map { SetElement(address(200_000 + s * perSet + $0)) }
            if let c = extraContainer, s % ((setCount - 3) / 11) == 0, s / ((setCount - 3) / 11) < 11 {
                els.append(SetElement(address(5_000_000 + c * 16 + s % 16)))
            }
            sets.append(NFTSet(name: "svc_\(s)_v4", key: KeyType(.ipv4Addr), elements: els))
        }
        if let c = extraContainer {
            sets[0].setElements(sets[0].elements + [SetElement(address(5_000_000 + c * 16), .verdict(.jump("in_svc_\(c % services)")))])
        }

        var rules = [
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState([.established, .related])))), .verdict(.accept)]),
            Rule(chain: "forward", [.match(Match(.ctState, .value(.ctState(.invalid)))), .verdict(.drop)]),
            Rule(chain: "forward", [.vmap(fields: [.ipDaddr], map: .named("ingress_v4"))]),
            Rule(chain: "forward", [.vmap(fields: [.ipSaddr], map: .named("egress_v4"))]),
            Rule(chain: "forward", [.match(Match(.ipDaddr, .set("governed_v4"))), .verdict(.drop)]),
            Rule(chain: "forward", [.match(Match(.ipSaddr, .set("governed_v4"))), .verdict(.drop)]),
        ]
        for k in 0..<10 {
            rules.append(Rule(chain: "common_\(k)", [.match(Match(.tcpDport, .value(.port(53)))), .verdict(.accept)]))
            rules.append(Rule(chain: "common_\(k)", [.counter(), .verdict(.return)]))
        }
        let plainSets = setCount - 3
        for i in 0..<services {
            for j in 0..<4 {
                rules.append(Rule(chain: "in_svc_\(i)", [
                    .match(Match(.ipSaddr, .set("svc_\((i * 4 + j) % plainSets)_v4"))),
                    .match(Match(.tcpDport, .value(.port(UInt16(8000 + j))))), .verdict(.accept),
                ], comment: "policies/p\(i).yaml:\(10 + j)"))
            }
            rules.append(Rule(chain: "in_svc_\(i)", [.verdict(.jump("common_\(i % 10)"))]))
            rules.append(Rule(chain: "in_svc_\(i)", [.counter(), .verdict(.drop)]))
        }
        return Table(family: .inet, name: "bulkhead", sets: sets, chains: chains, rules: rules)
    }

    @discardableResult
    func time<T>(_ label: String, _ body: () throws -> T) rethrows -> T {
        let clock = ContinuousClock()
        var result: T?
        let d = try clock.measure { result = try body() }
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        print(String(format: "RulesetPerformanceReport %-60@ %10.3f ms", label as NSString, ms))
        return result!
    }

    @Test func planAndAgentPaths() throws {
        let big = Self.bigTable(scale: scale)
        let withContainer = Self.bigTable(scale: scale, extraContainer: 7)
        print("RulesetPerformanceReport table: \(big.chains.count) chains, \(big.rules.count) rules, \(big.sets.count) sets, \(big.sets.reduce(0) { $0 + $1.elements.count }) elements")

        let create = try time("Diff.between(desired: big, live: nil)") { try Diff.between(desired: big, live: nil) }
        #expect(create.expected == big)
        _ = time("  .expected of that transaction") { create.expected }

        let fake = FakeNetfilter()
        try time("FakeNetfilter.apply(create)") { try fake.apply(create, expectedGeneration: nil) }
        let live = try #require(try time("FakeNetfilter.dump") { try fake.dump(table: id) })
        #expect(live.rules.count == big.rules.count)

        let same = try time("Diff.between(big, big) (no change)") { try Diff.between(desired: big, live: live) }
        #expect(same.isEmpty)

        let one = try time("Diff.between(big + 1 container, big)") { try Diff.between(desired: withContainer, live: live) }
        #expect(one.operations.count == 12)
        #expect(one.operations.allSatisfy { if case .elements(_, let e) = $0.object { e.count == 1 } else { false } })

        var replay = time("  Transaction(current: live)") { Transaction(table: id, current: live) }
        try time("  validate its 12 operations (append)") { for op in one.operations { try replay.append(op) } }
        _ = time("  .expected of that transaction") { replay.expected }
        try time("FakeNetfilter.apply(1 container)") { try fake.apply(one, expectedGeneration: nil) }
        #expect(content(try fake.dump(table: id)) == content(withContainer))

        let back = try time("Diff.between(big, big + 1 container) (removal)") {
            try Diff.between(desired: big, live: try fake.dump(table: id))
        }
        #expect(back.operations.count == 12)
    }

    @Test func singleElementIntoHundredThousand() throws {
        let n = max(1_000, Int(100_000 * scale))
        let table = Table(family: .inet, name: "bulkhead", sets: [
            NFTSet(name: "flows", key: KeyType(.ipv4Addr), elements: (0..<n).map { SetElement(Self.address($0 * 2)) }),
            NFTSet(name: "nets", key: KeyType(.ipv4Addr), flags: .interval,
                   elements: (0..<n).map { SetElement(key: [.prefix(IPv4Address(0x0A00_0000 | UInt32($0) << 8), 24)]) }),
        ])
        var tx = time("Transaction(current: \(n)-element sets)") { Transaction(table: id, current: table) }
        try time("  add element into \(n)-element set (1st op)") { try tx.add(.elements(set: "flows", [SetElement(Self.address(1))])) }
        try time("  add element into \(n)-element set (2nd op)") { try tx.add(.elements(set: "flows", [SetElement(Self.address(3))])) }
        try time("  12 more single-element adds") {
            for i in 0..<12 { try tx.add(.elements(set: "flows", [SetElement(Self.address(5 + 2 * i))])) }
        }
        try time("  add prefix into \(n)-element interval set") {
            try tx.add(.elements(set: "nets", [SetElement(key: [.prefix(IPv4Address(0x0B00_0000), 24)])]))
        }
        try time("  delete element from \(n)-element set") { try tx.delete(.elements(set: "flows", [SetElement(Self.address(0))])) }
        let expected = try #require(time("  .expected") { tx.expected })
        #expect(expected.set(named: "flows")?.elements.count == n + 14 - 1)
        #expect(expected.set(named: "flows")?.elements.prefix(3).map(\.key) == [[.value(Self.address(1))], [.value(Self.address(2))], [.value(Self.address(3))]])
    }
}
