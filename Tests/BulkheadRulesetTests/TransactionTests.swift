import Testing
@testable import BulkheadRuleset

@Suite struct TransactionTests {
    let id = TableID(family: .inet, name: "bh")

    func base() throws -> Transaction {
        var tx = Transaction(table: id, current: nil)
        try tx.add(.table(Table(family: .inet, name: "bh")))
        try tx.add(.chain(Chain(name: "forward", base: BaseChain(hook: .forward, priority: -10))))
        try tx.add(.chain(Chain(name: "in_x")))
        try tx.add(.set(NFTSet(name: "s4", key: KeyType(.ipv4Addr))))
        try tx.add(.set(NFTSet(name: "m4", key: KeyType(.ipv4Addr), data: .verdict)))
        return tx
    }

    func expectError(_ expected: RulesetError, _ op: Operation, on tx: Transaction,
                     sourceLocation: SourceLocation = #_sourceLocation) {
        var copy = tx
        #expect(throws: expected, sourceLocation: sourceLocation) { try copy.append(op) }
        #expect(copy == tx, "a refused operation must not be queued", sourceLocation: sourceLocation)
    }

    @Test func jumpToMissingChainIsRefusedWithWords() throws {
        let tx = try base()
        let op = Operation(.add, .rule(Rule(chain: "in_x", [.verdict(.jump("foo"))])))
        expectError(.jumpToMissingChain(from: "in_x", to: "foo"), op, on: tx)
        #expect(RulesetError.jumpToMissingChain(from: "in_x", to: "foo").description == "chain 'in_x' jumps to missing chain 'foo'")
    }

    @Test func jumpToBaseChainAndLoopsAreRefused() throws {
        var tx = try base()
        expectError(.jumpToBaseChain(from: "in_x", to: "forward"),
                    Operation(.add, .rule(Rule(chain: "in_x", [.verdict(.goto("forward"))]))), on: tx)
        try tx.add(.chain(Chain(name: "b")))
        try tx.add(.rule(Rule(chain: "in_x", [.verdict(.jump("b"))])))
        expectError(.jumpLoop(chain: "b", target: "in_x"), Operation(.add, .rule(Rule(chain: "b", [.verdict(.jump("in_x"))]))), on: tx)
        try tx.add(.rule(Rule(chain: "forward", [.vmap(fields: [.ipDaddr], map: .named("m4"))])))
        try tx.add(.rule(Rule(chain: "b", [.vmap(fields: [.ipDaddr], map: .named("m4"))])))
        // A verdict-map element closing the cycle b -> m4 -> in_x -> b.
        expectError(.jumpLoop(chain: "b", target: "in_x"),
                    Operation(.add, .elements(set: "m4", [SetElement(.ipv4(v4("10.0.0.1")), .verdict(.jump("in_x")))])), on: tx)
    }

    @Test func lookupsMustFitTheirSet() throws {
        let tx = try base()
        expectError(.lookupInMissingSet(chain: "in_x", set: "nope"),
                    Operation(.add, .rule(Rule(chain: "in_x", [.match(Match(.ipSaddr, .set("nope")))]))), on: tx)
        expectError(.lookupMismatch(chain: "in_x", set: "s4", reason: "key is ipv6_addr, set has ipv4_addr"),
                    Operation(.add, .rule(Rule(chain: "in_x", [.match(Match(.ip6Saddr, .set("s4")))]))), on: tx)
        expectError(.lookupMismatch(chain: "in_x", set: "s4", reason: "vmap needs a verdict map"),
                    Operation(.add, .rule(Rule(chain: "in_x", [.vmap(fields: [.ipSaddr], map: .named("s4"))]))), on: tx)
        expectError(.lookupMismatch(chain: "in_x", set: "m4", reason: "it is a map; use vmap for verdict maps"),
                    Operation(.add, .rule(Rule(chain: "in_x", [.match(Match(.ipSaddr, .set("m4")))]))), on: tx)
    }

    @Test func elementsMustFitTheirSet() throws {
        var tx = try base()
        let wrong = SetElement(.ipv6(v6("fd00::1")))
        expectError(.keyMismatch(set: "s4", element: "fd00::1",
                                 reason: "key is ipv6_addr (16 bytes), set expects ipv4_addr (4 bytes)"),
                    Operation(.add, .elements(set: "s4", [wrong])), on: tx)
        expectError(.keyMismatch(set: "s4", element: "10.0.0.0/8", reason: "'10.0.0.0/8' is a range but the set has no interval flag"),
                    Operation(.add, .elements(set: "s4", [SetElement(key: [.prefix(v4("10.0.0.0"), 8)])])), on: tx)
        expectError(.dataMismatch(set: "m4", element: "10.0.0.1", reason: "a map element needs a verdict"),
                    Operation(.add, .elements(set: "m4", [SetElement(.ipv4(v4("10.0.0.1")))])), on: tx)
        expectError(.jumpToMissingChain(from: "map 'm4'", to: "gone"),
                    Operation(.add, .elements(set: "m4", [SetElement(.ipv4(v4("10.0.0.1")), .verdict(.jump("gone")))])), on: tx)
        try tx.add(.set(NFTSet(name: "g4", key: KeyType(.ipv4Addr), flags: .interval)))
        try tx.add(.elements(set: "g4", [SetElement(key: [.prefix(v4("10.0.0.0"), 24)])]))
        expectError(.intervalOverlap(set: "g4", element: "10.0.0.128/25", existing: "10.0.0.0/24"),
                    Operation(.add, .elements(set: "g4", [SetElement(key: [.prefix(v4("10.0.0.128"), 25)])])), on: tx)
        try tx.add(.elements(set: "s4", [SetElement(.ipv4(v4("10.0.0.1")))]))
        try tx.add(.elements(set: "s4", [SetElement(.ipv4(v4("10.0.0.1")))]))  // add is idempotent
        expectError(.elementExists(set: "s4", element: "10.0.0.1"),
                    Operation(.create, .elements(set: "s4", [SetElement(.ipv4(v4("10.0.0.1")))])), on: tx)
        expectError(.noSuchElement(set: "s4", element: "10.0.0.2"),
                    Operation(.delete, .elements(set: "s4", [SetElement(.ipv4(v4("10.0.0.2")))])), on: tx)
    }

    @Test func duplicatesAndReferencesFollowKernelRules() throws {
        var tx = try base()
        try tx.add(.chain(Chain(name: "in_x")))  // add of an identical chain is a no-op
        expectError(.chainExists("in_x"), Operation(.create, .chain(Chain(name: "in_x"))), on: tx)
        expectError(.setExists("s4"), Operation(.create, .set(NFTSet(name: "s4", key: KeyType(.ipv4Addr)))), on: tx)
        expectError(.setConflict("s4", reason: "was type ipv4_addr, now type ipv6_addr"),
                    Operation(.add, .set(NFTSet(name: "s4", key: KeyType(.ipv6Addr)))), on: tx)
        try tx.add(.rule(Rule(chain: "forward", [.match(Match(.ipSaddr, .set("s4"))), .verdict(.jump("in_x"))])))
        expectError(.chainInUse("in_x", by: ["chain 'forward'"]), Operation(.delete, .chain(Chain(name: "in_x"))), on: tx)
        expectError(.setInUse("s4", by: ["forward"]), Operation(.delete, .set(NFTSet(name: "s4", key: KeyType(.ipv4Addr)))), on: tx)
        try tx.flush(.chain(Chain(name: "forward")))
        try tx.delete(.chain(Chain(name: "in_x")))
        try tx.delete(.set(NFTSet(name: "s4", key: KeyType(.ipv4Addr))))
        #expect(tx.expected?.chains.map(\.name) == ["forward"])
    }

    @Test func invalidRulesAreExplained() throws {
        let tx = try base()
        func refusal(_ r: Rule) -> RulesetError? {
            var copy = tx
            do { try copy.add(.rule(r)); return nil } catch { return error }
        }
        /// Refused as `invalidRule` in the rule's own chain, with its text and a reason that says why.
        func expectExplained(_ r: Rule, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let error = refusal(r)
            guard case .invalidRule(let chain, let text, let why)? = error else {
                Issue.record("expected invalidRule, got \(String(describing: error))", sourceLocation: sourceLocation); return
            }
            #expect(chain == r.chain && text == NFTText.rule(r), sourceLocation: sourceLocation)
            #expect(why.contains(reason), "\(why)", sourceLocation: sourceLocation)
        }
        expectExplained(Rule(chain: "in_x", [.log(Log(group: 1, level: .info))]), "log level and group are mutually exclusive")
        expectExplained(Rule(chain: "in_x", [.reject(.tcpReset)]), "'reject with tcp reset' needs 'meta l4proto tcp' or a tcp match before it")
        expectExplained(Rule(chain: "in_x", [.reject(.icmpx(1))]), "this is the family's default reject")
        expectExplained(Rule(chain: "in_x", [.match(Match(.ctState, negated: true, .value(.ctState([.new, .invalid]))))]),
                        "never matches as intended; use an anonymous set")
        expectExplained(Rule(chain: "in_x", [.match(Match([.ipSaddr, .tcpDport], .value(.port(1))))]), "a concatenation can only be matched against a set")
        expectExplained(Rule(chain: "in_x", [.verdict(.accept)], comment: "has \"quotes\""), "comment may hold printable ASCII only, without '\"'")
        expectExplained(Rule(chain: "in_x", []), "a rule needs at least one statement")
        #expect(refusal(Rule(chain: "nope", [.verdict(.accept)])) == .noSuchChain("nope"))
        #expect(refusal(Rule(chain: "in_x", [.match(Match(.tcpDport, .value(.port(1)))), .reject(.tcpReset)])) == nil)
    }

    @Test func namesAreChecked() throws {
        var tx = try base()
        #expect(throws: RulesetError.invalidName(kind: "chain", name: "bad name", reason: "' ' is not allowed (letters, digits, '_', '.', '-')")) {
            try tx.add(.chain(Chain(name: "bad name")))
        }
        #expect(throws: RulesetError.invalidName(kind: "set", name: "__set0", reason: "names starting with '__' are reserved for anonymous sets")) {
            try tx.add(.set(NFTSet(name: "__set0", key: KeyType(.ipv4Addr))))
        }
        #expect(throws: RulesetError.wrongTable(expected: id, got: TableID(family: .ip, name: "other"))) {
            try tx.add(.table(Table(family: .ip, name: "other")))
        }
    }

    @Test func descriptionIsAnNftScript() throws {
        var tx = try base()
        try tx.add(.elements(set: "m4", [SetElement(.ipv4(v4("10.0.0.2")), .verdict(.drop)),
                                         SetElement(.ipv4(v4("10.0.0.1")), .verdict(.jump("in_x")))]))
        try tx.add(.rule(Rule(chain: "in_x", [.counter(), .verdict(.drop)], comment: "policies/a.yaml:3")))
        try tx.flush(.set(NFTSet(name: "s4", key: KeyType(.ipv4Addr))))
        try tx.flush(.chain(Chain(name: "in_x")))
        expectError(.noSuchRule(chain: "in_x", handle: 7), Operation(.delete, .rule(Rule(chain: "in_x", handle: 7, [.verdict(.drop)]))), on: tx)
        #expect(tx.description == """
            add table inet bh
            add chain inet bh forward { type filter hook forward priority filter - 10; policy accept; }
            add chain inet bh in_x
            add set inet bh s4 { type ipv4_addr; }
            add map inet bh m4 { type ipv4_addr : verdict; }
            add element inet bh m4 { 10.0.0.1 : jump in_x, 10.0.0.2 : drop }
            add rule inet bh in_x counter packets 0 bytes 0 drop comment "policies/a.yaml:3"
            flush set inet bh s4
            flush chain inet bh in_x

            """)
    }
}
