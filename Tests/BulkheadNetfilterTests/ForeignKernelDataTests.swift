import BulkheadRuleset
import Foundation
import Testing
@testable import BulkheadNetfilter

/// Tables and rules Bulkhead did not write, through the real kernel in a throwaway namespace.
@Suite(.serialized, .enabled(if: Kernel.enabled, "needs root"))
struct ForeignKernelDataTests {
    static let id = TableID(family: .inet, name: "bulkhead")

    /// Rules other programs put in our table — nft expressions Bulkhead never emits, and a
    /// 2-byte load compared against 8 bytes that nft refuses to write but the kernel accepts
    /// (this one trapped the dump with "Can't construct Array with count < 0") — dump as foreign
    /// rules; a recorded dump decodes without a socket into the same table.
    @Test func foreignRulesDumpAsForeignAndReplay() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            try nf.apply(try creation(of: KernelFaultTests.baseTable()), expectedGeneration: nil)
            let foreign: [[String]] = [
                ["@th,0,16", "0x0102", "drop"],
                ["numgen", "inc", "mod", "2", "0", "accept"],
                ["quota", "100", "bytes"],
                ["meta", "mark", "set", "1"],
                ["ip", "ttl", "5", "counter", "drop"],
            ]
            for args in foreign { try Kernel.nft(["add", "rule", "inet", "bulkhead", "forward"] + args, in: ns) }
            try nf.appendRawRule(table: Self.id, chain: "forward", expressions: [
                .meta(key: MetaKey.nfproto.rawValue, dreg: 1), .cmp(sreg: 1, op: 0, data: [10]),
                // A 16-byte load first: kernels ≥ 6.x refuse to read a register nothing wrote (ENODATA).
                .payload(base: PayloadBase.network.rawValue, offset: 8, length: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [UInt8](repeating: 0xfd, count: 16)),
                .payload(base: PayloadBase.network.rawValue, offset: 12, length: 2, dreg: 1),
                .cmp(sreg: 1, op: 0, data: [1, 2, 3, 4, 5, 6, 7, 8]), .verdict(code: 0, chain: nil),
            ])
            // A decodable rule someone else added is read as what it is.
            try Kernel.nft(["add", "rule", "inet", "bulkhead", "forward", "ip", "saddr", "10.9.0.0/16", "drop"], in: ns)

            let live = try #require(try nf.dump(table: Self.id))
            let rules = live.rules(in: "forward")
            #expect(rules.count == 1 + foreign.count + 2)
            let undecoded = rules.filter(\.isUndecoded)
            #expect(undecoded.count == foreign.count + 1, "\(rules.map(\.description))")
            #expect(undecoded.contains { $0.comment!.contains("numgen") })
            #expect(undecoded.contains { $0.comment!.contains("quota") })
            #expect(rules.last?.statements == [.match(Match(.ipSaddr, .prefix(.ipv4(v4("10.9.0.0")), 16))), .verdict(.drop)])

            // The replay decodes the same table; foreign expressions other than the ones Bulkhead
            // reads keep only their name there (their data is not checked, so not passed on).
            let recorded = try nf.recordDump(table: Self.id)
            let replayed = try #require(try NetlinkNetfilter.decodeDump(messages: recorded))
            func masked(_ t: Table) -> Table {
                var t = t
                t.rules = t.rules.map { $0.isUndecoded ? Rule(chain: $0.chain, handle: $0.handle, [], comment: "foreign") : $0 }
                return t
            }
            #expect(masked(replayed) == masked(live))
            #expect(replayed.rules.filter { $0.isUndecoded }.count == undecoded.count)

            // The diff replaces them: flush the chain and add ours back; the kernel takes it.
            let want = KernelFaultTests.baseTable()
            let tx = try Diff.between(desired: want, live: live)
            #expect(tx.operations.first == Operation(.flush, .chain(Chain(name: "forward"))))
            try nf.apply(tx, expectedGeneration: nil)
            #expect(comparable(try nf.dump(table: Self.id)) == comparable(want))
        }
    }

    /// A table created by another program (no owner flags) cannot be claimed: the kernel refuses
    /// to add `owner` or `persist` to an existing table (EOPNOTSUPP), so every commit of an owning
    /// backend failed. The diff replaces it — delete and create in ONE batch, which the kernel
    /// accepts and commits as one generation — and the result is owned and complete.
    @Test func unownedTableIsReplacedInOneCommit() throws {
        try Kernel.withNamespace { ns in
            let owner = try NetlinkNetfilter(namespace: ns)
            try #require(owner.ownership == .ownerPersist, "this kernel lacks NFT_TABLE_F_PERSIST; Bulkhead runs unowned here and nothing is replaced")
            try Kernel.nft(["-f", "-"], in: ns, stdin: """
                table inet bulkhead {
                    flags dormant
                    chain forward { type filter hook forward priority 0; policy accept; }
                    chain stale { }
                }
                """)
            let live = try #require(try owner.dump(table: Self.id))
            #expect(live.flags == [.dormant])

            // The old way: adopt by re-sending NEWTABLE with owner|persist. Refused, always.
            var adopt = Transaction(table: Self.id, current: live)
            try adopt.add(.chain(Chain(name: "ours")))
            #expect { try owner.apply(adopt, expectedGeneration: nil) } throws: { error in
                guard let e = error as? RulesetError, case .kernel(let errno, _) = e.underlying else { return false }
                return errno == EOPNOTSUPP
            }

            var want = KernelFaultTests.baseTable()
            want.flags = [.owner, .persist]
            #expect(Diff.needsReplacement(from: live.flags, to: want.flags))
            let tx = try Diff.between(desired: want, live: live)
            #expect(tx.operations.prefix(2) == [Operation(.delete, .table(live.header)), Operation(.add, .table(want.header))])
            let before = try owner.generation()
            let after = try owner.apply(tx, expectedGeneration: before)
            #expect(after == before &+ 1, "one commit")
            let replaced = try #require(try owner.dump(table: Self.id))
            #expect(replaced.flags == [.owner, .persist])
            #expect(comparable(replaced) == comparable(want))
            #expect(replaced.chain(named: "stale") == nil)
            // Locked against others now.
            #expect { try Kernel.nft(["add", "chain", "inet", "bulkhead", "x"], in: ns) } throws: { "\($0)".contains("Operation not permitted") }
        }
    }

    /// Without ownership (old kernel, or disabled) a dormant table is woken in place.
    @Test func dormantFlagIsClearedInPlaceWhenUnowned() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            try nf.apply(try creation(of: KernelFaultTests.baseTable()), expectedGeneration: nil)
            try Kernel.nft(["add", "table", "inet", "bulkhead", "{", "flags", "dormant", ";", "}"], in: ns)
            let live = try #require(try nf.dump(table: Self.id))
            #expect(live.flags == [.dormant])
            let tx = try Diff.between(desired: KernelFaultTests.baseTable(), live: live)
            #expect(tx.operations == [Operation(.add, .table(Table(family: .inet, name: "bulkhead")))])
            try nf.apply(tx, expectedGeneration: nil)
            #expect(try nf.dump(table: Self.id)?.flags == [])
            #expect(!(try Kernel.nft(["list", "table", "inet", "bulkhead"], in: ns)).contains("dormant"))
        }
    }
}
