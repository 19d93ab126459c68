import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

/// `bulkhead plan` / `apply` as processes, against the kernel of a throwaway network namespace:
/// every documented exit status of apply, the retry after a concurrent commit, tables and rules
/// Bulkhead did not write.
@Suite(.serialized, .enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct ApplyKernelTests {
    static let table = TableID(family: .inet, name: "bulkhead")
    static let inputs = ["--policies", "policies", "--inventory", "policies/inventory.json"]

    /// Runs the binary with extra environment variables; `prefix` goes before it (setpriv).
    func run(_ args: [String], env: [String: String] = [:], prefix: [String] = []) throws -> Run {
        try cli(args, env: env, prefix: prefix)
    }

    func apply(_ ns: String, _ extra: [String] = [], env: [String: String] = [:]) throws -> Run {
        try run(["apply"] + Self.inputs + ["--netns", ns] + extra, env: env)
    }

    func plan(_ ns: String) throws -> Run {
        try run(["plan"] + Self.inputs + ["--netns", ns])
    }

    /// A reader that holds no ownership (the table stays orphaned between commands).
    func dump(_ ns: String) throws -> Table? {
        try NetlinkNetfilter(namespace: ns, ownership: .disabled).dump(table: Self.table)
    }

    // MARK: item 11: exit statuses and the retry

    @Test func applyExitStatuses() throws {
        try TestSystem.withNamespace(prefix: "bh-cli") { ns in
            // 0: applied, then nothing to do.
            let first = try apply(ns)
            #expect(first.status == 0, "\(first.stderr)")
            #expect(first.stdout.contains("Applied "), "\(first.stdout)")
            #expect(first.stdout.contains("table ownership: owner,persist"), "\(first.stdout)")
            let again = try apply(ns)
            #expect(again.status == 0)
            #expect(again.stdout.hasSuffix("No changes: the kernel already enforces these policies.\n"), "\(again.stdout)")
            let generation = try NetlinkNetfilter(namespace: ns, ownership: .disabled).generation()

            // 1: invalid policies; nothing changes.
            try withFiles(["shop.yaml": typo]) { dir in
                let r = try run(["apply", "--policies", dir, "--inventory", "policies/inventory.json", "--netns", ns])
                #expect(r.status == 1)
                #expect(r.stderr.hasSuffix("error: the policies have 1 error; nothing was changed (see `bulkhead validate`)\n"), "\(r.stderr)")
            }
            // 64: usage.
            let usage = try run(["apply", "--format", "xml", "--netns", ns])
            #expect(usage.status == 64, "\(usage.stderr)")
            #expect(usage.stderr.contains("--format"), "\(usage.stderr)")
            // 66: unreadable input.
            let noPolicies = try run(["apply", "--policies", "/nonexistent/policies", "--inventory", "policies/inventory.json", "--netns", ns])
            #expect(noPolicies.status == 66, "\(noPolicies.stderr)")
            let noInventory = try run(["apply", "--policies", "policies", "--inventory", "/nonexistent/inventory.json", "--netns", ns])
            #expect(noInventory.status == 66, "\(noInventory.stderr)")
            #expect(noInventory.stderr.hasSuffix("error: cannot use inventory /nonexistent/inventory.json; nothing was changed\n"), "\(noInventory.stderr)")
            // 1: not privileged. setpriv drops CAP_NET_ADMIN from the bounding set, so even root
            // lacks it after exec (CAP_SYS_ADMIN stays: entering the namespace still works).
            let unprivileged = try run(["apply"] + Self.inputs + ["--netns", ns], prefix: ["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin", "--"])
            #expect(unprivileged.status == 1)
            #expect(unprivileged.stderr == "error: committing an nftables transaction: permission denied: Bulkhead needs CAP_NET_ADMIN "
                    + "(run as root, or grant the capability) to read or change nftables\n", "\(unprivileged.stderr)")
            #expect(try NetlinkNetfilter(namespace: ns, ownership: .disabled).generation() == generation, "no failed run changed anything")
        }
    }

    /// Another program commits between plan and apply (the test hook commits an unrelated
    /// change): the kernel refuses the batch as stale and apply reads again and succeeds.
    @Test func applyRetriesAfterAConcurrentCommit() throws {
        try TestSystem.withNamespace(prefix: "bh-cli") { ns in
            let r = try apply(ns, env: ["BULKHEAD_TEST_RACE_COMMITS": "2"])
            #expect(r.status == 0, "\(r.stderr)")
            let notes = r.stderr.split(separator: "\n").filter { $0.hasPrefix("note: the ruleset changed") }
            #expect(notes == ["note: the ruleset changed while it was read (attempt 1 of 4); reading it again",
                              "note: the ruleset changed while it was read (attempt 2 of 4); reading it again"], "\(r.stderr)")
            #expect(r.stdout.contains("Applied "))
            #expect(try dump(ns) != nil)
            #expect(try plan(ns).stdout.hasSuffix("No changes: the kernel already enforces these policies.\n"))
        }
    }

    /// When every commit is raced, apply gives up after four attempts with exit status 1 and
    /// writes nothing.
    @Test func applyGivesUpWhenTheRulesetKeepsChanging() throws {
        try TestSystem.withNamespace(prefix: "bh-cli") { ns in
            let r = try apply(ns, env: ["BULKHEAD_TEST_RACE_COMMITS": "4"])
            #expect(r.status == 1)
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.filter { $0.hasPrefix("note: the ruleset changed") }.count == 3, "\(r.stderr)")
            let last = String(lines.last ?? "")
            #expect(last.hasPrefix("error: the ruleset changed since it was read (generation "), "\(r.stderr)")
            #expect(last.hasSuffix("read it again and retry (gave up after 4 attempts: another program keeps changing the ruleset); nothing was changed"), "\(r.stderr)")
            #expect(try dump(ns) == nil, "nothing was written")
        }
    }

    // MARK: item 5: a table we did not create

    /// An `inet bulkhead` table made by someone else (no owner flags) failed every apply with
    /// EOPNOTSUPP. Now plan says it is replaced, apply replaces it in one commit, and the
    /// result is ours (persist, orphaned after apply exits) and complete.
    @Test func applyReplacesATableItDidNotCreate() throws {
        try TestSystem.withNamespace(prefix: "bh-cli") { ns in
            try TestSystem.nft(["-f", "-"], in: ns, stdin: """
                table inet bulkhead {
                    chain forward { type filter hook forward priority -10; policy accept; accept; }
                }
                """)
            let p = try plan(ns)
            #expect(p.status == 0)
            #expect(p.stdout.contains("Table: the table is replaced: it has flags none and lacks owner,persist, which the kernel never adds to an existing table"), "\(p.stdout)")
            let before = try NetlinkNetfilter(namespace: ns, ownership: .disabled).generation()
            let r = try apply(ns)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.contains("Table: the table is replaced"), "\(r.stdout)")
            #expect(try NetlinkNetfilter(namespace: ns, ownership: .disabled).generation() == before &+ 1, "one atomic commit")
            let live = try #require(try dump(ns))
            #expect(live.flags == [.persist], "owned while apply ran, orphaned and kept after it exited")
            #expect(!live.rules(in: "forward").contains { $0.statements == [.verdict(.accept)] }, "the stranger's accept is gone")
            #expect(try plan(ns).stdout.hasSuffix("No changes: the kernel already enforces these policies.\n"))
        }
    }

    /// Restored from a saved ruleset with `flags dormant`: a dormant table enforces nothing,
    /// yet plan and apply said "No changes". Now it is replaced and no longer dormant.
    @Test func applyWakesARestoredDormantTable() throws {
        try TestSystem.withNamespace(prefix: "bh-cli") { ns in
            #expect(try apply(ns).status == 0)
            let saved = try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: ns)
            // nft 1.0.6 prints the persist flag as an empty `flags ` line it cannot read back.
            var lines = saved.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            try #require(lines.count > 2 && lines[0].hasPrefix("table inet bulkhead {"), "\(saved)")
            if lines[1].trimmingCharacters(in: .whitespaces).hasPrefix("flags") {
                lines[1] = "\tflags dormant"
            } else {
                lines.insert("\tflags dormant", at: 1)
            }
            try TestSystem.nft(["delete", "table", "inet", "bulkhead"], in: ns)
            try TestSystem.nft(["-f", "-"], in: ns, stdin: lines.joined(separator: "\n"))
            #expect(try dump(ns)?.flags == [.dormant])

            let p = try plan(ns)
            #expect(p.stdout.contains("Table: the table is replaced: it has flags dormant and lacks owner,persist"), "\(p.stdout)")
            let r = try apply(ns)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try dump(ns)?.flags == [.persist])
            #expect(!(try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: ns)).contains("dormant"))
        }
    }

    // MARK: item 6: kernel data we did not write

    /// Foreign rules in our table — nft expressions Bulkhead never writes, and a 2-byte load
    /// compared against 8 bytes (which crashed plan and apply with SIGILL) — are reported by
    /// plan and replaced by apply.
    @Test func planReportsForeignRulesAndApplyReplacesThem() throws {
        try TestSystem.withNamespace(prefix: "bh-cli") { ns in
            #expect(try apply(ns).status == 0)
            let nft: [[String]] = [["@th,0,16", "0x0102", "drop"], ["numgen", "inc", "mod", "2", "0", "accept"],
                                   ["quota", "100", "bytes"], ["meta", "mark", "set", "1"]]
            for args in nft { try TestSystem.nft(["insert", "rule", "inet", "bulkhead", "forward"] + args, in: ns) }
            try NetlinkNetfilter(namespace: ns, ownership: .disabled).appendRawRule(table: Self.table, chain: "forward", expressions: [
                .meta(key: MetaKey.nfproto.rawValue, dreg: 1), .cmp(sreg: 1, op: 0, data: [10]),
                // A 16-byte load first: kernels ≥ 6.x refuse to read a register nothing wrote (ENODATA).
                .payload(base: PayloadBase.network.rawValue, offset: 8, length: 16, dreg: 1), .cmp(sreg: 1, op: 0, data: [UInt8](repeating: 0xfd, count: 16)),
                .payload(base: PayloadBase.network.rawValue, offset: 12, length: 2, dreg: 1),
                .cmp(sreg: 1, op: 0, data: [1, 2, 3, 4, 5, 6, 7, 8]), .verdict(code: 1, chain: nil),
            ])

            let p = try plan(ns)
            #expect(p.status == 0, "\(p.stderr)")
            #expect(p.stdout.contains("Rules in our table that Bulkhead did not write (will be removed):"), "\(p.stdout)")
            let reported = p.stdout.split(separator: "\n").filter { $0.hasPrefix("  ! chain forward: ") }
            #expect(reported.count == 5, "\(p.stdout)")
            for word in ["numgen", "quota", "meta", "payload"] {
                #expect(reported.contains { $0.contains(word) }, "\(word) not reported:\n\(p.stdout)")
            }

            let r = try apply(ns)
            #expect(r.status == 0, "\(r.stderr)")
            let live = try #require(try dump(ns))
            #expect(!live.rules.contains { $0.isUndecoded }, "\(live.rules.filter(\.isUndecoded))")
            #expect(try plan(ns).stdout.hasSuffix("No changes: the kernel already enforces these policies.\n"))
        }
    }
}
