import BulkheadRuleset
import CNetfilter
import Foundation
import Testing
@testable import BulkheadNetfilter

/// `KernelLimits` against the headers and the running kernel (issue 8, item 4).
@Suite(.serialized)
struct KernelLimitTests {
    /// The numbers come from the headers (less the NUL they count).
    @Test func limitsMatchTheHeaders() {
        #expect(KernelLimits.kernel.objectName == Int(NFT_NAME_MAXLEN) - 1)
        #expect(Int(NFT_CHAIN_MAXNAMELEN) == Int(NFT_NAME_MAXLEN) && Int(NFT_SET_MAXNAMELEN) == Int(NFT_NAME_MAXLEN))
        #expect(KernelLimits.kernel.comment == Int(NFTNL_UDATA_COMMENT_MAXLEN))
        #expect(KernelLimits.kernel.comment + 2 <= Int(NFT_USERDATA_MAXLEN), "a comment TLV must fit the kernel's userdata")
    }

    /// The kernel takes a 255-byte chain and set name, a 128-byte comment and a 127-byte log
    /// prefix, and gives them back intact; nft lists them. A 256-byte chain name is refused by the
    /// kernel's own netlink policy (ERANGE), before it looks for the chain.
    @Test(.enabled(if: Kernel.enabled, "needs root"))
    func theKernelTakesExactlyTheLimits() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            let chain = "c" + String(repeating: "x", count: 254)
            let set = "s" + String(repeating: "y", count: 254)
            let comment = String(repeating: "m", count: 127) + "!"
            let prefix = String(repeating: "p", count: 126) + ":"
            let table = Table(family: .inet, name: "bounds",
                              sets: [NFTSet(name: set, key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("10.0.0.1")))])],
                              chains: [Chain(name: chain)],
                              rules: [Rule(chain: chain, [.match(Match(.ipSaddr, .set(set))), .counter(), .log(Log(prefix: prefix, group: 1)), .verdict(.accept)],
                                           comment: comment)])
            #expect(chain.utf8.count == 255 && set.utf8.count == 255 && comment.utf8.count == 128 && prefix.utf8.count == 127)
            try nf.apply(try creation(of: table), expectedGeneration: nil)
            let live = try #require(try nf.dump(table: table.id))
            #expect(live.chains.map(\.name) == [chain])
            #expect(live.sets.map(\.name) == [set])
            let rule = try #require(live.rules.first)
            #expect(rule.comment == comment)
            #expect(rule.statements.contains { if case .log(let l) = $0 { return l.prefix == prefix } else { return false } })
            let listed = try Kernel.nft(["list", "table", "inet", "bounds"], in: ns)
            #expect(listed.contains(chain) && listed.contains("comment \"\(comment)\"") && listed.contains("prefix \"\(prefix)\""), "\(listed)")

            // One byte more: the transaction's own check stops it; the kernel, asked directly
            // (a rule for a chain our view pretends exists), refuses the name's length itself.
            for (name, errno) in [(chain, ENOENT), (chain + "z", ERANGE)] {
                var lying = live
                lying.chains.append(Chain(name: name == chain ? "c" + String(repeating: "w", count: 254) : name))
                var tx = Transaction(table: table.id, current: lying)
                let target = name == chain ? "c" + String(repeating: "w", count: 254) : name
                try tx.add(.rule(Rule(chain: target, [.verdict(.drop)])))
                do {
                    try nf.apply(tx, expectedGeneration: nil)
                    Issue.record("the kernel took a rule for chain \(target.utf8.count) bytes long that does not exist")
                } catch let RulesetError.operationFailed(_, _, error) {
                    guard case .kernel(let got, _) = error else { Issue.record("expected a kernel error, got \(error)"); continue }
                    #expect(got == errno, "\(target.utf8.count)-byte chain name: errno \(got), expected \(errno)")
                }
            }
        }
    }
}
