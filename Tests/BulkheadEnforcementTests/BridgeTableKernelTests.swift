import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadLayout
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

/// The `bridge bulkhead` table through the kernel: every new construct (bridge family, `ether
/// type`/`ether saddr`, ARP sender fields, the ND target, concatenations with `iifname`) goes in
/// through netlink and dumps back to the same model; nft (the oracle) reads the same rules; and
/// both tables change in one batch or not at all.
@Suite(.serialized) struct BridgeTableKernelTests {
    /// The example policies with every container bound (MACs and ports as a host would report).
    static func boundInventory() throws -> Inventory {
        var inventory = try exampleInventory()
        for (i, c) in inventory.containers.enumerated() {
            for name in c.networks.keys.sorted() {
                inventory.containers[i].networks[name]?.mac = String(format: "02:42:ac:%02x:00:%02x", i, name.count)
                inventory.containers[i].networks[name]?.port = "veth\(i)n\(name.count)"
            }
        }
        return inventory
    }

    @Test func bridgeTableRoundTripsThroughTheKernel() throws {
        try TestSystem.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            let plan = try Planner().plan(policies: try examplePolicies(), inventory: try Self.boundInventory(), backend: nf)
            #expect(plan.bridgeDesired.sets.first { $0.name == PortBinding.bindV6 }?.elements.isEmpty == false)
            try Planner().apply(plan, to: nf)
            let got = try #require(try nf.dump(table: PortBinding.tableID))
            #expect(got.sets == plan.bridgeDesired.sets)
            #expect(got.chains == plan.bridgeDesired.chains)
            #expect(got.rules.count == plan.bridgeDesired.rules.count)
            for (a, b) in zip(got.rules, plan.bridgeDesired.rules) {
                var a = a
                a.handle = nil
                #expect(a == b, "rule in \(b.chain) reads back differently:\n  dumped \(a)\n  model  \(b)")
            }
            // Nothing left to do: the dump decodes into exactly what the compiler wants.
            let again = try Planner().plan(policies: try examplePolicies(), inventory: try Self.boundInventory(), backend: nf)
            #expect(again.bridgeTransaction.isEmpty, "\(again.bridgeTransaction)")
            #expect(!again.hasChanges)
        }
    }

    /// nft, an independent reader, sees our rules with the kernel expressions we meant.
    @Test func nftReadsTheBridgeTable() throws {
        try TestSystem.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let plan = try Planner().plan(policies: try examplePolicies(), inventory: try Self.boundInventory(), backend: nf)
            try Planner().apply(plan, to: nf)
            let listed = try TestSystem.check(["ip", "netns", "exec", ns, "nft", "list", "table", "bridge", "bulkhead"])
            for line in [
                "type ifname . ether_addr",
                "type ifname . ether_addr . ipv4_addr",
                "type filter hook prerouting priority filter - 10; policy accept;",
                "iifname != @ports accept",
                "ether type != { ip, arp, ip6 } counter packets 0 bytes 0 drop",
                "iifname . ether saddr != @bind_ether counter packets 0 bytes 0 drop",
                "iifname . arp saddr ether . arp saddr ip != @bind_arp counter packets 0 bytes 0 drop",
                "iifname . ip saddr != @bind_v4 counter packets 0 bytes 0 drop",
                "iifname . ip6 saddr != @bind_v6 counter packets 0 bytes 0 drop",
                "oifname != @ports accept",
            ] {
                #expect(listed.contains(line), "nft does not list '\(line)':\n\(listed)")
            }
            // Our own rendering is nft's, line for line.
            let rendered = NFTText.table(plan.bridgeDesired)
            #expect(listed == rendered, "\(zip(listed.split(separator: "\n"), rendered.split(separator: "\n")).filter { $0 != $1 }.prefix(8).map { "nft:   \($0)\nmodel: \($1)" }.joined(separator: "\n"))")
            // The VLAN check must read the frame's ethertype (payload), not skb->protocol (meta
            // protocol, the inner type for an accelerated tag).
            let debug = try TestSystem.check(["ip", "netns", "exec", ns, "nft", "--debug=netlink", "list", "chain", "bridge", "bulkhead", "prerouting"])
            #expect(debug.contains("[ payload load 2b @ link header + 12 => reg 1 ]"), "\(debug)")
            #expect(debug.contains("[ payload load 16b @ transport header + 8 => reg 2 ]"), "ND target load: \(debug)")
        }
    }

    /// One apply carries both tables: a failure in the second leaves the first untouched, and a
    /// generation race changes neither.
    @Test func bothTablesCommitTogetherOrNotAtAll() throws {
        try TestSystem.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            let plan = try Planner().plan(policies: try examplePolicies(), inventory: try Self.boundInventory(), backend: nf)
            // A generation race: nothing at all is written.
            let stale = try #require(plan.baselineGeneration)
            var bumped = Transaction(table: TableID(family: .inet, name: "other"), current: nil)
            try bumped.add(.table(Table(family: .inet, name: "other")))
            try nf.apply(bumped, expectedGeneration: nil)
            let now = try nf.generation()
            #expect(throws: RulesetError.staleGeneration(expected: stale, actual: now)) { try nf.apply(plan.transactions, expectedGeneration: stale) }
            #expect(try nf.dump(table: Planner.tableID) == nil)
            #expect(try nf.dump(table: PortBinding.tableID) == nil)
            // The second table's transaction fails in the kernel: the first is not created either.
            // The model believes a set exists that the kernel does not have: deleting it fails (ENOENT).
            var failing = Transaction(table: PortBinding.tableID, current: Table(family: .bridge, name: TableLayout.tableName,
                                                                                sets: [NFTSet(name: "ghost", key: KeyType(.ifname))]))
            try failing.delete(.set(NFTSet(name: "ghost", key: KeyType(.ifname))))
            let error = #expect(throws: RulesetError.self) {
                try nf.apply([plan.transaction, failing], expectedGeneration: nil)
            }
            if case .operationFailed(let index, let operation, .kernel(let errno, _))? = error {
                #expect(index == plan.transaction.operations.count, "the failing operation is the first of the second table")
                #expect(errno == ENOENT && operation.contains("ghost"), "\(String(describing: error))")
            } else {
                Issue.record("expected operationFailed, got \(String(describing: error))")
            }
            #expect(try nf.dump(table: Planner.tableID) == nil, "the inet table was not created by a failed batch")
            // And together they apply.
            let fresh = try Planner().plan(policies: try examplePolicies(), inventory: try Self.boundInventory(), backend: nf)
            try Planner().apply(fresh, to: nf)
            #expect(try nf.dump(table: Planner.tableID) != nil)
            #expect(try nf.dump(table: PortBinding.tableID) != nil)
        }
    }
}

extension Plan {
    var baselineGeneration: UInt32? {
        if case .kernel(let g) = baseline { return g }
        return nil
    }
}
