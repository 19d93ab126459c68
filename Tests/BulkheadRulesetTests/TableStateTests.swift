import Foundation
import Testing
@testable import BulkheadRuleset

/// The indexed state (`TableState`, `SetState`, `JumpGraph`) must give the same tables and the
/// same refusals as rebuilding everything per operation did.
@Suite struct TableStateTests {
    let id = TableID(family: .inet, name: "bh")

    @Test func elementChangesMaterialiseInNftOrder() throws {
        let base = (0..<300).map { SetElement(.ipv4(IPv4Address(0x0A00_0000 | UInt32($0 * 2)))) }
        let t = Table(family: .inet, name: "bh", sets: [NFTSet(name: "s", key: KeyType(.ipv4Addr), elements: base)])
        var tx = Transaction(table: id, current: t)
        var model = Set(base.map(\.key))
        for i in 0..<200 {  // enough churn to cross the compaction threshold and keep going
            let add = SetElement(.ipv4(IPv4Address(0x0A00_0000 | UInt32(i * 3 + 1))))
            if !model.contains(add.key) {
                try tx.add(.elements(set: "s", [add]))
                model.insert(add.key)
            }
            let del = SetElement(.ipv4(IPv4Address(0x0A00_0000 | UInt32(i * 4))))
            if model.contains(del.key) {
                try tx.delete(.elements(set: "s", [del]))
                model.remove(del.key)
            }
        }
        let got = try #require(tx.expected?.set(named: "s"))
        #expect(got.elements == NFTSet(name: "s", key: KeyType(.ipv4Addr), elements: model.map { SetElement(key: $0) }).elements)
        #expect(throws: RulesetError.noSuchElement(set: "s", element: "10.0.0.0")) {
            try tx.delete(.elements(set: "s", [SetElement(.ipv4(IPv4Address(0x0A00_0000)))]))
        }
    }

    @Test func jumpGraphFollowsDeletionsAndFlushes() throws {
        var tx = Transaction(table: id, current: nil)
        try tx.add(.table(Table(family: .inet, name: "bh")))
        for c in ["a", "b", "c"] { try tx.add(.chain(Chain(name: c))) }
        try tx.add(.set(NFTSet(name: "m", key: KeyType(.ipv4Addr), data: .verdict)))
        try tx.add(.rule(Rule(chain: "a", [.verdict(.jump("b"))])))
        try tx.add(.rule(Rule(chain: "b", [.vmap(fields: [.ipDaddr], map: .named("m"))])))
        try tx.add(.elements(set: "m", [SetElement(.ipv4(v4("10.0.0.1")), .verdict(.jump("c")))]))
        // c -> a closes a -> b -> (m) -> c -> a.
        #expect(throws: RulesetError.jumpLoop(chain: "c", target: "a")) {
            var copy = tx
            try copy.add(.rule(Rule(chain: "c", [.verdict(.goto("a"))])))
        }
        // Two new map targets that only loop together are still caught.
        #expect(throws: RulesetError.jumpLoop(chain: "b", target: "b")) {
            var copy = tx
            try copy.add(.elements(set: "m", [SetElement(.ipv4(v4("10.0.0.2")), .verdict(.jump("b")))]))
        }
        var cut = tx
        try cut.delete(.elements(set: "m", [SetElement(.ipv4(v4("10.0.0.1")), .verdict(.jump("c")))]))
        try cut.add(.rule(Rule(chain: "c", [.verdict(.goto("a"))])))  // no path b -> c any more
        var flushed = tx
        try flushed.flush(.chain(Chain(name: "b")))
        try flushed.add(.rule(Rule(chain: "c", [.verdict(.goto("a"))])))
        try flushed.flush(.set(NFTSet(name: "m", key: KeyType(.ipv4Addr), data: .verdict)))
        try flushed.delete(.set(NFTSet(name: "m", key: KeyType(.ipv4Addr), data: .verdict)))
        // Deleting a chain follows its references: a jumps to b.
        #expect(throws: RulesetError.chainInUse("b", by: ["chain 'a'"])) {
            var copy = flushed
            try copy.delete(.chain(Chain(name: "b")))
        }
        // The fake keeps its indexed state between commits and stays consistent.
        let fake = FakeNetfilter()
        try fake.apply(tx, expectedGeneration: nil)
        var more = try Transaction(table: id, backend: fake)
        try more.add(.rule(Rule(chain: "c", [.verdict(.accept)])))
        try fake.apply(more, expectedGeneration: nil)
        var loop = try Transaction(table: id, backend: fake)
        try loop.delete(.elements(set: "m", [SetElement(.ipv4(v4("10.0.0.1")), .verdict(.jump("c")))]))
        try loop.add(.rule(Rule(chain: "c", [.verdict(.jump("a"))])))
        var stale = try Transaction(table: id, backend: fake)
        // Valid against the dump; after `loop` commits it closes b -> (m) -> c -> a -> b.
        try stale.add(.elements(set: "m", [SetElement(.ipv4(v4("10.0.0.3")), .verdict(.jump("c")))]))
        try fake.apply(loop, expectedGeneration: nil)
        // Its only operation: the new c target closes b -> (m) -> c -> a -> b, reported at c -> a.
        #expect(throws: RulesetError.operationFailed(index: 0, operation: "add element inet bh m { 10.0.0.3 : jump c }",
                                                     error: .jumpLoop(chain: "c", target: "a"))) {
            try fake.apply(stale, expectedGeneration: nil)
        }
        #expect(try fake.dump(table: id)?.rules(in: "c").count == 2)
    }

    @Test func intervalOverlapAgainstAddedAndLoadedElements() throws {
        let t = Table(family: .inet, name: "bh", sets: [
            NFTSet(name: "g", key: KeyType(.ipv4Addr), flags: .interval,
                   elements: [SetElement(key: [.prefix(v4("10.0.0.0"), 24)]), SetElement(key: [.prefix(v4("10.0.2.0"), 24)])]),
        ])
        var tx = Transaction(table: id, current: t)
        try tx.add(.elements(set: "g", [SetElement(key: [.prefix(v4("10.0.1.0"), 25)])]))
        #expect(throws: RulesetError.intervalOverlap(set: "g", element: "10.0.1.64/26", existing: "10.0.1.0/25")) {
            try tx.add(.elements(set: "g", [SetElement(key: [.prefix(v4("10.0.1.64"), 26)])]))
        }
        #expect(throws: RulesetError.intervalOverlap(set: "g", element: "10.0.2.0/24", existing: "10.0.1.128-10.0.2.5")) {
            try tx.add(.elements(set: "g", [SetElement(key: [.between(.ipv4(v4("10.0.1.128")), .ipv4(v4("10.0.2.5")))])]))
        }
        #expect(throws: RulesetError.intervalOverlap(set: "g", element: "10.0.3.1", existing: "10.0.3.0/30")) {
            try tx.add(.elements(set: "g", [SetElement(key: [.prefix(v4("10.0.3.0"), 30)]), SetElement(.ipv4(v4("10.0.3.1")))]))
        }
        try tx.delete(.elements(set: "g", [SetElement(key: [.prefix(v4("10.0.1.0"), 25)])]))
        try tx.add(.elements(set: "g", [SetElement(key: [.prefix(v4("10.0.1.64"), 26)])]))
        #expect(tx.expected?.set(named: "g")?.elements.map(\.description) == ["10.0.0.0/24", "10.0.1.64/26", "10.0.2.0/24"])
    }

    @Test func decodedSetsAreSorted() throws {
        let set = NFTSet(name: "s", key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("10.0.0.1"))), SetElement(.ipv4(v4("10.0.0.2")))])
        var json = String(decoding: try JSONEncoder().encode(set), as: UTF8.self)
        let a = String(decoding: try JSONEncoder().encode(set.elements[0]), as: UTF8.self)
        let b = String(decoding: try JSONEncoder().encode(set.elements[1]), as: UTF8.self)
        json = json.replacingOccurrences(of: "\(a),\(b)", with: "\(b),\(a)")
        #expect(try JSONDecoder().decode(NFTSet.self, from: Data(json.utf8)) == set)
    }
}
