import BulkheadEngine
import BulkheadNetfilter
import BulkheadRuleset
import Foundation

/// Hooks that only tests arm, through environment variables; each is inert unless its variable
/// is set, and none is documented to users. They live here so that the commands' normal path
/// carries one optional call and nothing else.
enum TestHooks {
    /// `BULKHEAD_TEST_RACE_COMMITS=N`: before each of the first N commits of `apply`, another
    /// socket commits an unrelated change (it creates and deletes a scratch table in one batch),
    /// so the ruleset generation moves between plan and apply as if another program had
    /// committed. `Tests/BulkheadCLITests` use it to prove that apply reads again and retries,
    /// and gives up with exit status 1 after `ApplyCommand.maxAttempts`.
    struct RaceCommits {
        static let variable = "BULKHEAD_TEST_RACE_COMMITS"
        let count: Int
        let namespace: String?

        init?(namespace: String?) {
            guard let text = ProcessInfo.processInfo.environment[Self.variable], let n = Int(text), n > 0 else { return nil }
            count = n
            self.namespace = namespace
        }

        func commitIfArmed(attempt: Int) throws {
            guard attempt <= count else { return }
            let other = try NetlinkNetfilter(namespace: namespace, ownership: .disabled)
            let scratch = TableID(family: .inet, name: "bulkhead_test_race")
            var tx = Transaction(table: scratch, current: nil)
            try tx.add(.table(Table(family: .inet, name: scratch.name)))
            try tx.delete(.table(Table(family: .inet, name: scratch.name)))
            try other.apply(tx, expectedGeneration: nil)
        }
    }

    /// `BULKHEAD_TEST_VERIFY_UNENFORCED=1`: `verify` removes the tables it has just applied to its
    /// lab (through its own socket, which owns them), so the lab enforces nothing and every
    /// probe the policies deny is answered. `Tests/BulkheadCLITests` use it to prove that verify
    /// reports a lab that disagrees with the policies and exits 1 (no other input can make the
    /// kernel disagree with the evaluator on purpose).
    struct UnenforcedLab {
        static let variable = "BULKHEAD_TEST_VERIFY_UNENFORCED"

        init?() {
            guard ProcessInfo.processInfo.environment[Self.variable] == "1" else { return nil }
        }

        func removeTables(_ backend: NetlinkNetfilter) throws {
            var txs: [Transaction] = []
            for id in [Planner.tableID, Planner.bridgeTableID] {
                guard let live = try backend.dump(table: id) else { continue }
                var tx = Transaction(table: id, current: live)
                try tx.delete(.table(live.header))
                txs.append(tx)
            }
            try backend.apply(txs, expectedGeneration: nil)
        }
    }
}
