import ArgumentParser
import BulkheadEngine
import BulkheadNetfilter
import BulkheadRuleset

struct UninstallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uninstall",
        abstract: "Remove everything Bulkhead put in the kernel (the table inet bulkhead).",
        discussion: """
        Also removes the table bridge bulkhead (port binding). Stop the agent first: while it runs it owns
        the table and the kernel refuses.

        Exit codes: 0 removed, or nothing to remove; 1 the kernel refused (no CAP_NET_ADMIN, or another
        running process owns the table); 64 usage.
        """
    )

    @Option(help: "The network namespace to clean (a name under /var/run/netns) instead of the current one.")
    var netns: String?

    func run() throws {
        do {
            let backend = try NetlinkNetfilter(namespace: netns)
            let bridge = try backend.dump(table: Planner.bridgeTableID)
            guard let live = try backend.dump(table: Planner.tableID) else {
                if let bridge {
                    var tx = Transaction(table: Planner.bridgeTableID, current: bridge)
                    try tx.delete(.table(bridge.header))
                    try backend.apply(tx, expectedGeneration: nil)
                    print("Removed table bridge bulkhead (port binding).")
                    return
                }
                print("Nothing to remove: there is no table inet bulkhead.")
                return
            }
            var tx = Transaction(table: Planner.tableID, current: live)
            try tx.delete(.table(live.header))
            var txs = [tx]
            if let bridge {
                var btx = Transaction(table: Planner.bridgeTableID, current: bridge)
                try btx.delete(.table(bridge.header))
                txs.append(btx)
            }
            try backend.apply(txs, expectedGeneration: nil)
            print("Removed table inet bulkhead (\(live.chains.count) chains, \(live.sets.count) sets and maps, \(live.rules.count) rules). Traffic is no longer filtered by Bulkhead.")
        } catch let e as NetfilterError {
            throw Inputs.kernelFailure(e)
        } catch let e as RulesetError {
            throw Inputs.kernelFailure(e)
        }
    }
}
