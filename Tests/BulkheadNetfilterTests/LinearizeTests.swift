import BulkheadRuleset
import Testing
@testable import BulkheadNetfilter

/// Model rule → kernel expressions → model rule, without a kernel.
struct LinearizeTests {
    @Test func everyFixtureRuleReadsBackToItself() throws {
        let table = everyConstructTable()
        for rule in table.rules {
            var lin = Linearizer(family: table.family)
            let encoded = try lin.linearize(rule)
            // The kernel names anonymous sets itself; give each one a kernel-style name.
            var anonymous: [String: NFTSet] = [:]
            var expressions = encoded.expressions
            for (i, anon) in encoded.anonymousSets.enumerated() {
                anonymous["__set\(i)"] = anon.asModelSet
            }
            var next = 0
            expressions = expressions.map {
                guard case .lookup(_, .some, let sreg, let dreg, let flags) = $0 else { return $0 }
                defer { next += 1 }
                return .lookup(set: "__set\(next)", setID: nil, sreg: sreg, dreg: dreg, flags: flags)
            }
            let back = Delinearizer(family: table.family, anonymousSets: anonymous)
                .rule(chain: rule.chain, handle: nil, expressions: expressions, userdata: rule.userdata)
            #expect(back == rule, "\(rule) came back as \(back)")
        }
    }

    @Test func dependenciesAreEmittedOnceAsNftDoes() throws {
        var lin = Linearizer(family: .inet)
        let rule = Rule(chain: "c", [.match(Match(.ipSaddr, .value(.ipv4(v4("10.0.0.1"))))),
                                     .match(Match(.ipDaddr, .value(.ipv4(v4("10.0.0.2"))))),
                                     .match(Match(.tcpDport, .value(.port(22)))), .verdict(.accept)])
        let e = try lin.linearize(rule).expressions
        #expect(e == [
            .meta(key: 15, dreg: 1), .cmp(sreg: 1, op: 0, data: [2]),                 // meta nfproto ipv4
            .payload(base: 1, offset: 12, length: 4, dreg: 1), .cmp(sreg: 1, op: 0, data: [10, 0, 0, 1]),
            .payload(base: 1, offset: 16, length: 4, dreg: 1), .cmp(sreg: 1, op: 0, data: [10, 0, 0, 2]),
            .meta(key: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [6]),                 // meta l4proto tcp
            .payload(base: 2, offset: 2, length: 2, dreg: 1), .cmp(sreg: 1, op: 0, data: [0, 22]),
            .verdict(code: 1, chain: nil),
        ])
    }

    @Test func concatenationUsesConsecutive32BitRegisters() throws {
        var lin = Linearizer(family: .ip)
        let rule = Rule(chain: "c", [.match(Match([.ipSaddr, .ipDaddr, .thDport], .set("s")))])
        let e = try lin.linearize(rule).expressions
        #expect(e == [
            .payload(base: 1, offset: 12, length: 4, dreg: 1),   // NFT_REG_1
            .payload(base: 1, offset: 16, length: 4, dreg: 9),   // NFT_REG32_01
            .payload(base: 2, offset: 2, length: 2, dreg: 10),   // NFT_REG32_02
            .lookup(set: "s", setID: nil, sreg: 1, dreg: nil, flags: 0),
        ])
    }
}
