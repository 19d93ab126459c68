import BulkheadCompiler
import BulkheadInventory
import BulkheadLayout
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
#if canImport(Glibc)
import Glibc
#endif

/// Bytes as the kernel answers a dump of our tables: netlink messages back to back (NEWTABLE,
/// NEWCHAIN, NEWSET, NEWSETELEM, NEWRULE) through `NetlinkNetfilter.decodeDump`, which is the code
/// of `dump(table:)` (message walking, attribute checks, libnftnl parsing, delinearizer, element
/// decoding) with a replay transport instead of the socket. Anyone with CAP_NET_ADMIN can put
/// whatever the kernel accepts into our table: the decoder returns a table or throws, never traps.
enum DumpFuzz {
    static func run(_ bytes: [UInt8]) {
        for id in [TableLayout.inet, TableLayout.bridge] {
            guard let table = try? NetlinkNetfilter.decodeDump(messages: bytes, table: id) else { continue }
            _ = NFTText.table(table)
        }
    }
}

/// Seeds: real dumps. Applies the tables the example policies compile to (inet and bridge) in a
/// throwaway network namespace through the netlink backend, records what the kernel answers to
/// each dump request, and deletes the namespace.
enum DumpSeeds {
    static func write(to directory: String) throws {
        let namespace = "bh-fuzz-seed-\(getpid())"
        guard system("ip netns add \(namespace)") == 0 else { fail("cannot create network namespace \(namespace) (needs root)") }
        defer { _ = system("ip netns del \(namespace)") }
        let backend = try NetlinkNetfilter(namespace: namespace)
        // The small seeds of the policy and inventory targets make small dumps (a few KiB), which
        // libFuzzer mutates much faster than the example table's 50 KiB.
        let corpus = Examples.directory + "/../Tests/Fuzz/corpus"
        let small = PolicyLoader.load(paths: [corpus + "/policy/small.yaml"])
        guard !small.hasErrors, let inventory = InventoryLoader.load(path: corpus + "/inventory/small.yaml").0 else {
            fail("the small policy and inventory seeds do not load")
        }
        for (name, policies, inventory) in [("example", Examples.policies, Examples.inventory), ("small", small.policies, inventory)] {
            let output = Compiler.compile(policies, inventory)
            var live: [TableID: Table] = [:]
            for table in [output.table, output.bridgeTable] {
                _ = try backend.apply(try Diff.between(desired: table, live: live[table.id] ?? backend.dump(table: table.id)), expectedGeneration: nil)
                live[table.id] = table
                save(try backend.recordDump(table: table.id), to: "\(directory)/\(name)-\(table.family)")
            }
        }
    }
}
