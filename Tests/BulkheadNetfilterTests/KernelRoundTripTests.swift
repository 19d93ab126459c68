import BulkheadRuleset
import Testing
@testable import BulkheadNetfilter

/// Rules grouped by chain, in evaluation order (the kernel lists them chain by chain).
func rulesByChain(_ t: Table?) -> [String: [Rule]] {
    Dictionary(grouping: t?.rules ?? [], by: \.chain)
}

/// Lines that differ between two renderings, for readable failures.
func lineDiff(_ a: String, _ b: String) -> String {
    let x = a.split(separator: "\n", omittingEmptySubsequences: false), y = b.split(separator: "\n", omittingEmptySubsequences: false)
    var out: [String] = []
    for i in 0..<max(x.count, y.count) {
        let l = i < x.count ? String(x[i]) : "<none>", r = i < y.count ? String(y[i]) : "<none>"
        if l != r { out.append("line \(i + 1):\n  nft:   \(l)\n  model: \(r)") }
    }
    return out.joined(separator: "\n")
}

@Suite(.serialized, .enabled(if: Kernel.enabled, "needs root"))
struct KernelRoundTripTests {
    /// model → kernel → dump → the same model, for every construct the encoder knows.
    @Test func everyConstructRoundTrips() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            let table = everyConstructTable()
            let tx = try creation(of: table)
            try nf.apply(tx, expectedGeneration: try nf.generation())
            let got = comparable(try nf.dump(table: table.id))
            let want = comparable(tx.expected)!
            #expect(got?.sets == want.sets)
            #expect(got?.chains == want.chains)
            #expect(got?.flags == want.flags)
            let g = rulesByChain(got), w = rulesByChain(want)
            #expect(g.keys.sorted() == w.keys.sorted())
            for chain in w.keys.sorted() {
                #expect(g[chain]?.count == w[chain]?.count, "rules in \(chain)")
                for (a, b) in zip(g[chain] ?? [], w[chain] ?? []) where a != b {
                    Issue.record("rule in \(chain) differs:\n  dumped \(a)\n  model  \(b)")
                }
            }
            // Handles come back on every dumped rule.
            #expect(try nf.dump(table: table.id)?.rules.allSatisfy { $0.handle != nil } == true)
        }
    }

    /// `nft list table` of what we programmed prints exactly our rendering.
    @Test func nftListsWhatWeRender() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let table = everyConstructTable()
            let tx = try creation(of: table)
            try nf.apply(tx, expectedGeneration: nil)
            let listed = try Kernel.nft(["list", "table", "inet", "bulkhead"], in: ns)
            let rendered = NFTText.table(tx.expected!)
            #expect(listed == rendered, "\(lineDiff(listed, rendered))")
        }
    }

    @Test func missingTableDumpsAsNil() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            #expect(try nf.dump(table: TableID(family: .inet, name: "nothing")) == nil)
        }
    }
}
