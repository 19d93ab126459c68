import Testing
@testable import BulkheadRuleset

/// The bulk element check (`TableState.ElementCheck.bulk`) against the element-by-element one it
/// replaces for large batches: same verdict, same element named, same resulting table.
@Suite struct BulkElementCheckTests {
    let id = TableID(family: .inet, name: "bh")
    static let flowKey = KeyType(.ipv4Addr, .ipv4Addr, .inetService)

    static func flow(_ i: Int) -> SetElement {
        SetElement(key: [.value(.ipv4(IPv4Address(0x0A00_0000 | UInt32(i)))),
                         .value(.ipv4(IPv4Address(0xAC10_0000 | UInt32(i % 977)))),
                         .value(.port(UInt16(1 + i % 60000)))])
    }

    func flowsTransaction() throws -> Transaction {
        var tx = Transaction(table: id, current: nil)
        try tx.add(.table(Table(family: .inet, name: "bh")))
        try tx.add(.set(NFTSet(name: "flows", key: Self.flowKey)))
        return tx
    }

    @Test func oneMisfitAmongOneHundredThousandIsNamedByIndexAndValue() throws {
        let tx = try flowsTransaction()
        var els = (0..<100_000).map(Self.flow)
        els[73_421] = SetElement(key: [.value(.ipv6(IPv6Address(high: 0xfd00_0000_0000_0000, low: 1))),
                                       .value(.ipv4(IPv4Address(0xAC10_0001))), .value(.port(80))])
        var copy = tx
        let expected = RulesetError.elementInBatch(index: 73_421, count: 100_000, error: .keyMismatch(
            set: "flows", element: "fd00::1 . 172.16.0.1 . 80",
            reason: "key is ipv6_addr . ipv4_addr . inet_service (24 bytes), set expects ipv4_addr . ipv4_addr . inet_service (12 bytes)"))
        #expect(throws: expected) { try copy.add(.elements(set: "flows", els)) }
        #expect(copy == tx, "a refused batch must not be queued")
        #expect(expected.description.hasPrefix("element 73422 of 100000: element 'fd00::1 . 172.16.0.1 . 80' does not fit set 'flows'"))
    }

    @Test func oneRepeatAmongOneHundredThousandIsNamedOnCreate() throws {
        let tx = try flowsTransaction()
        var els = (0..<100_000).map(Self.flow)
        els[99_999] = Self.flow(5)
        var copy = tx
        #expect(throws: RulesetError.elementInBatch(index: 99_999, count: 100_000,
                                                    error: .elementExists(set: "flows", element: "10.0.0.5 . 172.16.0.5 . 6"))) {
            try copy.create(.elements(set: "flows", els))
        }
        #expect(copy == tx)
        // `add` takes the same batch: the repeat is the same element, so it is added once.
        try copy.add(.elements(set: "flows", els))
        #expect(copy.expected?.sets.first?.elements.count == 99_999)
    }

    @Test func theWholeHundredThousandLandSortedAsOneByOneWouldHaveThem() throws {
        let els = (0..<100_000).reversed().map(Self.flow)
        var bulk = TableState(id: id, table: Table(family: .inet, name: "bh", sets: [NFTSet(name: "flows", key: Self.flowKey)]))
        var single = bulk
        bulk.elementCheck = .bulk
        single.elementCheck = .oneByOne
        try bulk.apply(Operation(.add, .elements(set: "flows", els)))
        try single.apply(Operation(.add, .elements(set: "flows", els)))
        let table = try #require(bulk.table)
        #expect(table == single.table)
        #expect(table.sets[0].elements == ElementOrder.sorted(els, key: Self.flowKey))
        #expect(table.sets[0].elements.count == 100_000)
    }

    // MARK: randomized differential

    /// A small seeded generator (SplitMix64), so a failure reproduces from its seed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Set shapes: the ones the bulk check handles, and two it hands back to the element-by-
    /// element check (interval, interface names), whose outcome must not change either.
    static let shapes: [NFTSet] = [
        NFTSet(name: "v4", key: KeyType(.ipv4Addr)),
        NFTSet(name: "pair", key: KeyType(.ipv4Addr, .inetService)),
        NFTSet(name: "v6", key: KeyType(.ipv6Addr, .inetProto)),
        NFTSet(name: "marks", key: KeyType(.ipv4Addr), data: .value(.mark)),
        NFTSet(name: "verdicts", key: KeyType(.mark, .ctState), data: .verdict),
        NFTSet(name: "ranges", key: KeyType(.ipv4Addr), flags: .interval),
        NFTSet(name: "names", key: KeyType(.ifname)),
    ]

    /// A value of `type` from a small domain, so batches repeat keys.
    static func value(_ type: DataType, _ r: inout SplitMix) -> Value {
        let x = UInt32.random(in: 0..<12, using: &r)
        switch type {
        case .ipv4Addr: return .ipv4(IPv4Address(0x0A00_0000 | x))
        case .ipv6Addr: return .ipv6(IPv6Address(high: 0xfd00 << 48, low: UInt64(x)))
        case .inetService: return .port(UInt16(x) * 1000)
        case .inetProto: return .proto(UInt8(x))
        case .mark: return .mark(x << 20)
        case .ctState: return .ctState(CtState(rawValue: 1 << (x % 4)))
        case .ifname: return .ifname(["eth0", "veth1", "veth10", "br-1", "abcdefghijklmnop", "abcdefghijklmnopq"][Int(x) % 6])
        default: return .nfProto(UInt8(x))
        }
    }

    static func element(for set: NFTSet, _ r: inout SplitMix) -> SetElement {
        var fields = set.key.fields
        var parts: [KeyPart] = []
        let fault = Int.random(in: 0..<40, using: &r)
        if fault == 0 { fields[0] = fields[0] == .ipv6Addr ? .ipv4Addr : .ipv6Addr }  // wrong key length
        if fault == 1 { fields.append(.inetService) }  // one field too many
        for f in fields { parts.append(.value(value(f, &r))) }
        if fault == 2 || (set.flags.contains(.interval) && fault < 20), case .ipv4(let a) = parts[0].low {
            parts[0] = .prefix(a, Int.random(in: 28...32, using: &r))  // a range (overlapping, often)
        }
        var data: ElementData?
        switch set.data {
        case .value?: data = .value(.mark(UInt32.random(in: 0..<3, using: &r)))
        case .verdict?: data = .verdict([.accept, .drop, .jump("c1"), .jump("c2")][Int.random(in: 0..<4, using: &r)])
        case nil: break
        }
        if fault == 3 { data = set.data == nil ? .verdict(.accept) : nil }  // data where none fits
        if fault == 4, set.data == .verdict { data = .verdict(.jump("missing")) }
        if fault == 5, set.data != nil { data = .value(.port(1)) }
        return SetElement(key: parts, data: data)
    }

    @Test(arguments: [1, 2, 3, 4])
    func bulkRefusesExactlyWhatOneByOneRefused(seed: UInt64) throws {
        var r = SplitMix(state: seed)
        var accepted = 0, refused = 0, bulkEligible = 0
        var reasons: Set<String> = []
        for _ in 0..<150 {
            let shape = Self.shapes[Int.random(in: 0..<Self.shapes.count, using: &r)]
            // Some elements already in the set (loaded with it) and some added earlier in the
            // same transaction, so both lookups are exercised.
            let loaded = (0..<Int.random(in: 0..<4, using: &r)).map { _ in Self.element(for: shape, &r) }
            var state = TableState(id: id, table: Table(family: .inet, name: "bh", sets: [shape.definition],
                                                        chains: [Chain(name: "c1"), Chain(name: "c2")]))
            for e in loaded { try? state.apply(Operation(.add, .elements(set: shape.name, [e]))) }
            if Bool.random(using: &r) {
                state = TableState(id: id, table: state.table)
                for _ in 0..<2 { try? state.apply(Operation(.add, .elements(set: shape.name, [Self.element(for: shape, &r)]))) }
            }
            let batch = (0..<Int.random(in: 2...200, using: &r)).map { _ in Self.element(for: shape, &r) }
            let verb: Verb = Int.random(in: 0..<4, using: &r) == 0 ? .create : .add
            let op = Operation(verb, .elements(set: shape.name, batch))

            var single = state, bulk = state
            single.elementCheck = .oneByOne
            bulk.elementCheck = .bulk
            func outcome(_ s: inout TableState) -> RulesetError? {
                do throws(RulesetError) { try s.apply(op) } catch { return error }
                return nil
            }
            let expected = outcome(&single)
            let got = outcome(&bulk)
            #expect(got == expected, "seed \(seed), set \(shape.name), \(verb) of \(batch.count)")
            #expect(bulk.table == single.table, "seed \(seed), set \(shape.name)")
            if let e = expected {
                refused += 1
                reasons.insert("\(e.underlying.withEmptyText)")
            } else { accepted += 1 }
            if !shape.flags.contains(.interval) && !shape.key.fields.contains(.ifname) { bulkEligible += 1 }
        }
        #expect(accepted > 0 && refused > 0 && bulkEligible > 0)
        // The refusals cover wrong keys, ranges, repeats and data misfits, not one kind only.
        #expect(reasons.count >= 3, "\(reasons)")
    }
}

extension RulesetError {
    /// The case without its texts, to count kinds of refusal.
    var withEmptyText: RulesetError {
        switch self {
        case .keyMismatch: .keyMismatch(set: "", element: "", reason: "")
        case .dataMismatch: .dataMismatch(set: "", element: "", reason: "")
        case .elementExists: .elementExists(set: "", element: "")
        case .intervalOverlap: .intervalOverlap(set: "", element: "", existing: "")
        default: self
        }
    }
}
