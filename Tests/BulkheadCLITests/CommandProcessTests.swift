import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

/// Every command other than `validate` and `schema` run as a process — the one binary the build
/// made (`binary`) — against the kernel of a throwaway network namespace each (`--netns`), so the
/// tests run in parallel. Each asserts the output (text, and `--format json` parsed) and the exit
/// status the README and `--help` document. `ApplyKernelTests` has the rest of apply's statuses.

/// Runs the binary with extra environment variables; `prefix` goes before it (`ip netns exec`,
/// `setpriv`). Both pipes are read at once, so a chatty stderr cannot block the child.
func cli(_ args: [String], env: [String: String] = [:], prefix: [String] = [], stdin: String? = nil, executable: String = binary) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: prefix.isEmpty ? executable : "/usr/bin/env")
    p.arguments = prefix.isEmpty ? args : prefix + [executable] + args
    p.currentDirectoryURL = URL(fileURLWithPath: repositoryRoot)
    p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    final class Box: @unchecked Sendable { var data = Data() }  // written once, read after wait()
    let errBox = Box()
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); done.signal() }
    let o = out.fileHandleForReading.readDataToEndOfFile()
    done.wait()
    p.waitUntilExit()
    #expect(p.terminationReason == .exit, "bulkhead \(args.joined(separator: " ")) was killed by signal \(p.terminationStatus)")
    return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: errBox.data, as: UTF8.self))
}

/// The example policies and inventory, as an admin passes them.
let exampleInputs = ["--policies", "policies", "--inventory", "policies/inventory.json"]

/// `nft list ruleset` in `ns`: the oracle for "nothing changed" (compared byte for byte).
func ruleset(_ ns: String) throws -> String {
    try TestSystem.nft(["list", "ruleset"], in: ns)
}

func generation(_ ns: String) throws -> UInt32 {
    try NetlinkNetfilter(namespace: ns, ownership: .disabled).generation()
}

func json(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
}

/// A plan's flow lines with their padding collapsed: `+ shop/api -> shop/db tcp/5432 containers 2 -> 1 policies/shop.yaml:29`.
func flowLines(_ text: String) -> [String] {
    text.split(separator: "\n").map { $0.split(separator: " ").joined(separator: " ") }
        .filter { ($0.hasPrefix("+ ") || $0.hasPrefix("- ")) && $0.contains(" containers ") }
}

/// The one rule of the plan's script that nft cannot read back: it prints this raw-payload
/// concatenation itself (`nft list table bridge bulkhead`, asserted in
/// `applyProgramsTheNamespaceThenReapplyIsANoOp`) but types `@th,64,128` as an integer when parsing.
let ruleNftCannotParse = "add rule bridge bulkhead prerouting icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @bind_v6 counter packets 0 bytes 0 drop comment \"port binding: neighbour advert for an address not the port's\""

/// The plan's nft script as nft 1.0.6 can read it: that version cannot parse the table flags
/// `owner,persist` (only a process holding the table can have them anyway), nor
/// `ruleNftCannotParse`; nothing else changes.
func nftReadable(_ script: String) -> String {
    let lines = script.replacingOccurrences(of: " { flags owner,persist; }", with: "").split(separator: "\n", omittingEmptySubsequences: false)
    #expect(lines.filter { $0 == ruleNftCannotParse }.count == 1, "the script changed: revisit what nft cannot read")
    return lines.filter { $0 != ruleNftCannotParse }.joined(separator: "\n")
}

/// The flows the example policies allow, counted by hand from `policies/*.yaml` (one per source
/// service, destination and port): shop 13, dns 4, monitoring 8.
let exampleFlowCount = 25

// MARK: plan

@Suite(.enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct PlanProcessTests {
    /// An empty namespace: every flow is newly allowed, nothing is denied, and plan changes nothing.
    @Test func planAgainstAnEmptyNamespace() throws {
        try TestSystem.withNamespace(prefix: "bh-plan") { ns in
            let before = try generation(ns)
            let r = try cli(["plan"] + exampleInputs + ["--netns", ns])
            #expect(r.status == 0, "\(r.stderr)")
            let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            #expect(lines.first == "Plan against the kernel's table inet bulkhead (ruleset generation \(before)), which does not exist yet:", "\(r.stdout)")
            #expect(lines.contains("Flows newly allowed (\(exampleFlowCount)):"), "\(r.stdout)")
            #expect(lines.contains("Flows newly denied (0):"), "\(r.stdout)")
            let flows = flowLines(r.stdout)
            #expect(flows.count == exampleFlowCount, "\(flows)")
            #expect(flows.allSatisfy { $0.hasPrefix("+ ") })
            #expect(flows.contains("+ shop/api -> shop/db tcp/5432 containers 2 -> 1 policies/shop.yaml:29"), "\(flows)")
            #expect(flows.contains("+ world -> shop/frontend tcp/443 containers - -> 1 policies/shop.yaml:18"), "\(flows)")
            #expect(lines.contains("  + shop/api: 172.20.0.3, 172.20.0.4, 172.22.0.3, 172.22.0.4, fd00:20::3, fd00:20::4, fd00:22::3, fd00:22::4 (shop-api-1, shop-api-2)"), "\(r.stdout)")
            #expect(lines.dropLast(2).last?.hasPrefix("nftables: ") == true && lines.last == "", "\(r.stdout)")
            // A namespace nothing ran in tracks no connection: nothing to cut, and it says so.
            #expect(lines.dropLast().last == "Connections: 0 live connections would be cut (of 0 tracked)", "\(r.stdout)")
            #expect(try generation(ns) == before, "plan wrote nothing")
            #expect(try ruleset(ns) == "", "plan wrote nothing")
        }
    }

    /// `--format json` carries the same plan as a document; `--nft` the script, which `nft -c`
    /// (the reference parser, in the same namespace) accepts as a valid transaction.
    @Test func planJSONAndNftScript() throws {
        try TestSystem.withNamespace(prefix: "bh-plan") { ns in
            let r = try cli(["plan"] + exampleInputs + ["--netns", ns, "--format", "json", "--nft"])
            #expect(r.status == 0, "\(r.stderr)")
            let doc = try json(r.stdout)
            let baseline = try #require(doc["baseline"] as? [String: Any])
            #expect(baseline["kind"] as? String == "kernel")
            #expect(baseline["table_exists"] as? Bool == false)
            #expect(baseline["generation"] as? Int == Int(try generation(ns)))
            #expect(doc["changes"] as? Bool == true)
            let opened = try #require(doc["opened"] as? [[String: Any]])
            #expect(opened.count == exampleFlowCount)
            let db = opened.filter { $0["from"] as? String == "shop/api" && $0["to"] as? String == "shop/db" }
            #expect(db.count == 1, "\(opened)")
            #expect(db.first?["port"] as? String == "tcp/5432")
            #expect(db.first?["flow"] as? String == "policies/shop.yaml:29")
            #expect(db.first?["from_containers"] as? Int == 2, "shop-api-1 and shop-api-2")
            #expect(db.first?["to_containers"] as? Int == 1)
            let world = opened.first { $0["from"] as? String == "world" && $0["port"] as? String == "tcp/443" }
            #expect(world?["from_containers"] is NSNull, "world is no container: null, not 0")
            #expect((doc["closed"] as? [Any])?.count == 0)
            #expect((doc["table"] as? [String: Any])?["change"] as? String == "create")
            #expect((doc["table"] as? [String: Any])?["flags"] as? [String] == ["owner", "persist"])
            #expect((doc["bridge_table"] as? [String: Any])?["change"] as? String == "create")
            let total = try #require((doc["operations"] as? [String: Any])?["total"] as? Int)
            #expect(total > 0)
            let script = try #require(doc["nft"] as? String)

            // The text form prints the same script after the operations line.
            let text = try cli(["plan"] + exampleInputs + ["--netns", ns, "--nft"])
            #expect(text.status == 0)
            #expect(text.stdout.contains("nftables: \(total) operations in one transaction ("), "\(text.stdout)")
            #expect(text.stdout.hasSuffix("\n\n" + String(script.reversed().drop { $0 == "\n" }.reversed()) + "\n"), "\(text.stdout)")
            #expect(script.hasPrefix("add table inet bulkhead { flags owner,persist; }\n"), "\(script)")
            #expect(script.contains("comment \"shop.yaml:29\""), "\(script)")

            // The oracle: nft parses and checks the whole script in the namespace...
            let check = try TestSystem.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", "-"], stdin: nftReadable(script))
            #expect(check.status == 0, "nft -c refused the plan's script: \(check.err)")
            // ...and is not a rubber stamp (a positive control: it refuses a broken script).
            let broken = try TestSystem.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", "-"],
                                            stdin: nftReadable(script).replacingOccurrences(of: "accept", with: "acept"))
            #expect(broken.status != 0, "nft -c accepted a broken script: the oracle checks nothing")
            #expect(try ruleset(ns) == "", "neither plan nor nft -c wrote anything")
        }
    }

    /// `--detailed-exitcode`: 2 when there are changes, 0 when there are none (after apply), and
    /// 1 on an error — an invalid policy, reported with file:line:col, and nothing changed.
    @Test func detailedExitcode() throws {
        try TestSystem.withNamespace(prefix: "bh-plan") { ns in
            let changes = try cli(["plan"] + exampleInputs + ["--netns", ns, "--detailed-exitcode"])
            #expect(changes.status == 2, "\(changes.stderr)")
            #expect(changes.stdout.contains("Flows newly allowed (\(exampleFlowCount)):"))
            let jsonChanges = try cli(["plan"] + exampleInputs + ["--netns", ns, "--detailed-exitcode", "--format", "json"])
            #expect(jsonChanges.status == 2)
            #expect(try json(jsonChanges.stdout)["changes"] as? Bool == true)

            let applied = try cli(["apply"] + exampleInputs + ["--netns", ns])
            #expect(applied.status == 0, "\(applied.stderr)")
            let none = try cli(["plan"] + exampleInputs + ["--netns", ns, "--detailed-exitcode"])
            #expect(none.status == 0, "\(none.stderr)")
            #expect(none.stdout.hasSuffix("No changes: the kernel already enforces these policies.\n"), "\(none.stdout)")
            let jsonNone = try cli(["plan"] + exampleInputs + ["--netns", ns, "--detailed-exitcode", "--format", "json"])
            #expect(jsonNone.status == 0)
            #expect(try json(jsonNone.stdout)["changes"] as? Bool == false)

            let before = try ruleset(ns)
            try withFiles(["shop.yaml": typo]) { dir in
                let r = try cli(["plan", "--policies", dir, "--inventory", "policies/inventory.json", "--netns", ns, "--detailed-exitcode"])
                #expect(r.status == 1)
                #expect(r.stdout == "")
                #expect(r.stderr == "\(dir)/shop.yaml:13:9: error[unknown-service]: segment 'shop' has no service 'apii' (did you mean 'api'?)\n"
                        + "error: the policies have 1 error; nothing was changed (see `bulkhead validate`)\n", "\(r.stderr)")
            }
            // 64 and 66, as the plan table documents.
            let usage = try cli(["plan", "--format", "yaml", "--netns", ns])
            #expect(usage.status == 64, "\(usage.stderr)")
            #expect(usage.stderr.contains("--format"), "\(usage.stderr)")
            let unreadable = try cli(["plan", "--policies", "/nonexistent/policies", "--inventory", "policies/inventory.json", "--netns", ns])
            #expect(unreadable.status == 66, "\(unreadable.stderr)")
            #expect(unreadable.stderr.contains("error[unreadable]"), "\(unreadable.stderr)")
            #expect(try ruleset(ns) == before, "no failed plan changed anything")
        }
    }

    /// Without CAP_NET_ADMIN (user nobody, inside a namespace whose table exists) plan cannot read
    /// the kernel: it compares with an empty ruleset, says so, and still exits 0.
    @Test func planWithoutPrivilegeComparesWithAnEmptyRuleset() throws {
        try TestSystem.withNamespace(prefix: "bh-plan") { ns in
            #expect(try cli(["apply"] + exampleInputs + ["--netns", ns]).status == 0)
            let nobody = ["ip", "netns", "exec", ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
            let whoami = try TestSystem.run(nobody + ["id", "-u"])
            #expect(whoami.out == "65534\n", "the prefix really drops root: \(whoami.err)")
            // The checkout may sit where nobody cannot go (/root): the binary and the inputs are
            // copied to a directory anyone can read.
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-nobody-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.copyItem(atPath: binary, toPath: dir + "/bulkhead")
            try FileManager.default.copyItem(atPath: repositoryRoot + "/policies", toPath: dir + "/policies")
            let inputs = ["--policies", dir + "/policies", "--inventory", dir + "/policies/inventory.json"]
            let r = try cli(["plan"] + inputs, prefix: nobody, executable: dir + "/bulkhead")
            #expect(r.status == 0, "\(r.stderr)")
            let first = try #require(r.stdout.split(separator: "\n").first.map(String.init))
            #expect(first.hasPrefix("Plan against an empty ruleset (cannot read the kernel: "), "\(r.stdout)")
            #expect(first.contains("permission denied: Bulkhead needs CAP_NET_ADMIN"), "\(first)")
            #expect(r.stdout.contains("Flows newly allowed (\(exampleFlowCount)):"), "compared with nothing, although the kernel has the table:\n\(r.stdout)")
            // Nor can it read connection tracking: it says so instead of a count.
            #expect(r.stdout.contains("\nConnections: unknown how many live connections would be cut (cannot read the kernel: "), "\(r.stdout)")
            let j = try cli(["plan"] + inputs + ["--format", "json"], prefix: nobody, executable: dir + "/bulkhead")
            #expect(j.status == 0)
            let baseline = try #require(try json(j.stdout)["baseline"] as? [String: Any])
            #expect(baseline["kind"] as? String == "empty")
            #expect((baseline["reason"] as? String)?.hasPrefix("cannot read the kernel: ") == true, "\(baseline)")
            let connections = try #require(try json(j.stdout)["connections"] as? [String: Any])
            #expect((connections["unavailable"] as? String)?.hasPrefix("cannot read the kernel: ") == true, "\(connections)")
        }
    }
}

// MARK: apply

@Suite(.enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct ApplyProcessTests {
    /// The first apply programs both tables (the oracle: `nft list table`, and the same script
    /// loaded by `nft -f` into a second namespace lists identically); a second apply is a no-op
    /// that leaves the ruleset byte for byte as it was. Apply turns bridge netfilter on in a new
    /// namespace and says so, once.
    @Test func applyProgramsTheNamespaceThenReapplyIsANoOp() throws {
        try TestSystem.withNamespace(prefix: "bh-apply") { ns in
            let script = try #require(try json(cli(["plan"] + exampleInputs + ["--netns", ns, "--format", "json", "--nft"]).stdout)["nft"] as? String)
            let sysctl = ["ip", "netns", "exec", ns, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]
            try TestSystem.check(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"])
            #expect(try TestSystem.check(sysctl) == "0\n0\n")

            let first = try cli(["apply"] + exampleInputs + ["--netns", ns])
            #expect(first.status == 0, "\(first.stderr)")
            #expect(first.stderr == "turned on net.bridge.bridge-nf-call-iptables=1 in network namespace \(ns) so traffic between containers on one bridge is filtered\n"
                    + "turned on net.bridge.bridge-nf-call-ip6tables=1 in network namespace \(ns) so traffic between containers on one bridge is filtered\n", "\(first.stderr)")
            #expect(try TestSystem.check(sysctl) == "1\n1\n")
            #expect(first.stdout.contains("Flows newly allowed (\(exampleFlowCount)):"), "\(first.stdout)")
            let applied = try #require(first.stdout.split(separator: "\n").dropLast().last.map(String.init))
            #expect(applied.hasPrefix("Applied 154 operations in ") && applied.contains("; table ownership: owner,persist "), "\(applied)")
            #expect(first.stdout.hasSuffix("\nCut 0 connections the policies now deny (of 0 tracked).\n"), "\(first.stdout)")

            let listed = try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: ns)
            #expect(listed.contains("ip saddr @from_shop_api__shop_worker_v4 tcp dport 5432 counter packets 0 bytes 0 accept comment \"shop.yaml:29\""), "\(listed)")
            let bridge = try TestSystem.nft(["list", "table", "bridge", "bulkhead"], in: ns)
            #expect(bridge.contains("\t\t" + ruleNftCannotParse.replacingOccurrences(of: "add rule bridge bulkhead prerouting ", with: "") + "\n"), "\(bridge)")
            // nft itself, loading plan's script elsewhere, builds the same table (flags aside:
            // nft cannot set owner,persist).
            try TestSystem.withNamespace(prefix: "bh-apply-nft") { other in
                try TestSystem.nft(["-f", "-"], in: other, stdin: nftReadable(script))
                let byNft = try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: other)
                func withoutFlags(_ s: String) -> [Substring] { s.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("flags") } }
                #expect(withoutFlags(listed) == withoutFlags(byNft))
                #expect(withoutFlags(listed).count > 20, "\(listed)")
            }

            let before = try ruleset(ns)
            let gen = try generation(ns)
            let again = try cli(["apply"] + exampleInputs + ["--netns", ns])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stderr == "", "bridge netfilter is on already: \(again.stderr)")
            #expect(again.stdout.hasSuffix("No changes: the kernel already enforces these policies.\n"), "\(again.stdout)")
            let againJSON = try cli(["apply"] + exampleInputs + ["--netns", ns, "--format", "json"])
            #expect(againJSON.status == 0)
            #expect(try json(againJSON.stdout)["changes"] as? Bool == false)
            #expect(try generation(ns) == gen, "a no-op apply commits nothing")
            #expect(try ruleset(ns) == before)
        }
    }

    /// `apply --format json` reports what it applied as the plan document.
    @Test func applyJSON() throws {
        try TestSystem.withNamespace(prefix: "bh-apply") { ns in
            let r = try cli(["apply"] + exampleInputs + ["--netns", ns, "--format", "json"])
            #expect(r.status == 0, "\(r.stderr)")
            let doc = try json(r.stdout)
            #expect(doc["changes"] as? Bool == true)
            #expect((doc["opened"] as? [Any])?.count == exampleFlowCount)
            #expect((doc["table"] as? [String: Any])?["change"] as? String == "create")
            #expect(try NetlinkNetfilter(namespace: ns, ownership: .disabled).dump(table: TableID(family: .inet, name: "bulkhead")) != nil)
        }
    }

    /// Another live process owns `inet bulkhead` (as the agent does): the kernel refuses apply's
    /// batch, apply names the reason and exits 1, and the ruleset is byte for byte as it was.
    /// Uninstall is refused the same way.
    @Test func kernelRefusalLeavesTheRulesetAsItWas() throws {
        try TestSystem.withNamespace(prefix: "bh-apply") { ns in
            let holder = try NetlinkNetfilter(namespace: ns)
            try #require(holder.ownership.tableFlags.contains(.owner), "this kernel has no table ownership: \(holder.ownership)")
            var tx = Transaction(table: TableID(family: .inet, name: "bulkhead"), current: nil)
            try tx.add(.table(Table(family: .inet, name: "bulkhead", flags: holder.managedTableFlags)))
            try tx.add(.chain(Chain(name: "forward", base: BaseChain(hook: .forward, priority: -10, policy: .accept))))
            try holder.apply([tx], expectedGeneration: nil)
            try withExtendedLifetime(holder) {
                let before = try ruleset(ns)
                #expect(before.contains("table inet bulkhead"), "\(before)")
                let r = try cli(["apply"] + exampleInputs + ["--netns", ns])
                #expect(r.status == 1, "\(r.stdout)")
                #expect(r.stderr.hasSuffix("refused with EPERM: another running process owns the table (flags owner,persist), probably the bulkhead agent; stop it or make the change through it\n"), "\(r.stderr)")
                #expect(r.stderr.hasPrefix("error: "), "\(r.stderr)")
                #expect(try ruleset(ns) == before, "a refused batch changed the ruleset")

                let u = try cli(["uninstall", "--netns", ns])
                #expect(u.status == 1, "\(u.stdout)")
                #expect(u.stderr.hasPrefix("error: operation 1 (delete table inet bulkhead) failed: "), "\(u.stderr)")
                #expect(u.stderr.hasSuffix("(the table is owned by another running process, e.g. the bulkhead agent; stop it or make the change through it)\n"), "\(u.stderr)")
                #expect(try ruleset(ns) == before, "a refused uninstall changed the ruleset")
            }
        }
    }

    /// No `--inventory` and Docker unreachable: plan and apply stop with a clear error and exit 1,
    /// and nothing changes; a `--docker` that is no unix socket URL is a usage error (64).
    @Test func unreachableDockerChangesNothing() throws {
        try TestSystem.withNamespace(prefix: "bh-apply") { ns in
            #expect(try cli(["apply"] + exampleInputs + ["--netns", ns]).status == 0)
            let before = try ruleset(ns)
            for command in ["apply", "plan"] {
                let r = try cli([command, "--policies", "policies", "--docker", "unix:///nonexistent/docker.sock", "--netns", ns])
                #expect(r.status == 1, "\(command): \(r.stdout)")
                #expect(r.stdout == "")
                #expect(r.stderr.hasPrefix("error: cannot read container metadata from Docker: "), "\(command): \(r.stderr)")
                #expect(r.stderr.contains("/nonexistent/docker.sock"), "\(command): the message names the socket: \(r.stderr)")
                #expect(r.stderr.hasSuffix("; pass --inventory FILE to work from a snapshot. Nothing was changed\n"), "\(command): \(r.stderr)")
            }
            let usage = try cli(["apply", "--policies", "policies", "--docker", "tcp://127.0.0.1:2375", "--netns", ns])
            #expect(usage.status == 64, "\(usage.stderr)")
            #expect(usage.stderr.hasPrefix("error: --docker: "), "\(usage.stderr)")
            #expect(try ruleset(ns) == before)
        }
    }
}

// MARK: uninstall

@Suite(.enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct UninstallProcessTests {
    /// Uninstall removes both tables and exits 0; a second one finds nothing and exits 0 too;
    /// without CAP_NET_ADMIN it exits 1 and removes nothing; a bad argument is 64.
    @Test func uninstallRemovesBothTables() throws {
        try TestSystem.withNamespace(prefix: "bh-uninst") { ns in
            try TestSystem.nft(["add", "table", "inet", "someone_else"], in: ns)
            #expect(try cli(["apply"] + exampleInputs + ["--netns", ns]).status == 0)
            let tables = try TestSystem.nft(["list", "tables"], in: ns)
            #expect(tables == "table inet someone_else\ntable inet bulkhead\ntable bridge bulkhead\n", "\(tables)")

            let unprivileged = try cli(["uninstall", "--netns", ns], prefix: ["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin", "--"])
            #expect(unprivileged.status == 1)
            #expect(unprivileged.stderr.hasPrefix("error: ") && unprivileged.stderr.contains("EPERM: Bulkhead needs CAP_NET_ADMIN (run as root, or grant the capability)"), "\(unprivileged.stderr)")
            #expect(try TestSystem.nft(["list", "tables"], in: ns) == tables)

            let r = try cli(["uninstall", "--netns", ns])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stdout.hasPrefix("Removed table inet bulkhead ("), "\(r.stdout)")
            #expect(r.stdout.hasSuffix("Traffic is no longer filtered by Bulkhead.\n"), "\(r.stdout)")
            #expect(try TestSystem.nft(["list", "tables"], in: ns) == "table inet someone_else\n", "both of ours gone, the other kept")

            let again = try cli(["uninstall", "--netns", ns])
            #expect(again.status == 0, "\(again.stderr)")
            #expect(again.stdout == "Nothing to remove: there is no table inet bulkhead.\n")

            let usage = try cli(["uninstall", "--netns"])
            #expect(usage.status == 64, "\(usage.stderr)")
            #expect(usage.stderr.contains("Missing value for '--netns <netns>'"), "\(usage.stderr)")
        }
    }
}

// MARK: verify

@Suite(.enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct VerifyProcessTests {
    /// The example policies hold by traffic: exit 0 (the slow end-to-end run, once).
    @Test func examplePoliciesVerify() throws {
        let r = try cli(["verify"] + exampleInputs)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("Applied to lab "), "\(r.stdout)")
        #expect(r.stdout.hasSuffix("Every probe matches the policies.\n"), "\(r.stdout)")
        let probed = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("Probed ") }, "\(r.stdout)")
        #expect(!probed.hasPrefix("Probed 0 "), "\(probed)")
    }

    /// A lab that disagrees with the policies (the test hook removes the tables verify applied,
    /// so the denied probes are answered): verify lists the mismatches and exits 1.
    @Test func aLabThatDisagreesExitsOne() throws {
        let policy = """
        segment: tiny
        networks: [tiny]
        services:
          a:
            labels: {app: a}
          b:
            labels: {app: b}
        flows:
          - from: a
            to: b
            ports: [tcp/80]

        """
        let inventory = """
        networks:
          - name: tiny
            subnets: [10.213.7.0/24]
            gateways: [10.213.7.1]
        containers:
          - name: tiny-a
            labels: {app: a}
            networks:
              tiny: {ipv4: 10.213.7.2}
          - name: tiny-b
            labels: {app: b}
            networks:
              tiny: {ipv4: 10.213.7.3}

        """
        try withFiles(["p/tiny.yaml": policy, "inventory.yaml": inventory]) { dir in
            let args = ["verify", "--policies", dir + "/p", "--inventory", dir + "/inventory.yaml"]
            // The control: the same lab, enforced, agrees.
            let agrees = try cli(args)
            #expect(agrees.status == 0, "\(agrees.stdout)\(agrees.stderr)")
            #expect(agrees.stdout.hasSuffix("Every probe matches the policies.\n"), "\(agrees.stdout)")

            let r = try cli(args, env: ["BULKHEAD_TEST_VERIFY_UNENFORCED": "1"])
            #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
            let lines = r.stdout.split(separator: "\n").map(String.init)
            let header = try #require(lines.first { $0.hasSuffix(" probes disagree with the policies:") }, "\(r.stdout)")
            let count = try #require(Int(header.split(separator: " ")[0]))
            let listed = lines.filter { $0.hasPrefix("  MISMATCH ") }
            #expect(count > 0 && listed.count == count, "\(r.stdout)")
            #expect(listed.contains { $0.hasPrefix("  MISMATCH tiny-b → 10.213.7.2 tcp/80: answered — expected dropped") }, "b -> a tcp/80 answered:\n\(r.stdout)")
            #expect(!lines.contains("Every probe matches the policies."))
        }
    }

    /// verify builds its own namespaces: `--netns` is a usage error (64); unreadable input is 66.
    @Test func verifyUsageAndUnreadableInput() throws {
        let usage = try cli(["verify"] + exampleInputs + ["--netns", "x"])
        #expect(usage.status == 64)
        #expect(usage.stderr.contains("verify builds its own lab namespaces; --netns does not apply"), "\(usage.stderr)")
        let unreadable = try cli(["verify", "--policies", "policies", "--inventory", "/nonexistent/inventory.json"])
        #expect(unreadable.status == 66, "\(unreadable.stderr)")
        #expect(unreadable.stderr.hasSuffix("error: cannot use inventory /nonexistent/inventory.json; nothing was changed\n"), "\(unreadable.stderr)")
    }
}

// MARK: explain (needs no kernel)

@Suite struct ExplainProcessTests {
    func explain(_ args: [String]) throws -> Run {
        try cli(["explain"] + exampleInputs + args)
    }

    @Test func allowedNamesThePolicyLine() throws {
        let r = try explain(["--from", "shop-api-1", "--to", "shop-db-1", "--port", "tcp/5432"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == """
            shop-api-1 (172.20.0.3) -> shop-db-1 (172.20.0.6) tcp/5432: ALLOWED
              source:      container shop-api-1 (shop/api)
              destination: container shop-db-1 (shop/db)
              reason:      allowed by policies/shop.yaml:29: shop/api, shop/worker -> shop/db on tcp/5432

            """, "\(r.stdout)")
    }

    @Test func deniedSaysNoFlowAllowsIt() throws {
        let r = try explain(["--from", "shop-frontend-1", "--to", "shop-db-1", "--port", "tcp/5432"])
        #expect(r.status == 0, "a denied verdict is an answer, not an error: \(r.stderr)")
        #expect(r.stdout.hasPrefix("shop-frontend-1 (172.20.0.2) -> shop-db-1 (172.20.0.6) tcp/5432: DENIED\n"), "\(r.stdout)")
        #expect(r.stdout.contains("\n  reason:      no flow allows shop/frontend to shop/db on tcp/5432\n"), "\(r.stdout)")
    }

    /// The README's example, by IP and by service, with the flow's description.
    @Test func byAddressAndService() throws {
        let r = try explain(["--from", "203.0.113.9", "--to", "shop/frontend", "--port", "tcp/443"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == """
            203.0.113.9 -> shop-frontend-1 (172.20.0.2) tcp/443: ALLOWED
              source:      203.0.113.9 (world)
              destination: container shop-frontend-1 (shop/frontend)
              reason:      allowed by policies/shop.yaml:18: world -> shop/frontend on tcp/80, tcp/443
              flow:        the public site

            """, "\(r.stdout)")
        let host = try explain(["--from", "host", "--to", "shop/frontend", "--port", "tcp/80"])
        #expect(host.status == 0)
        #expect(host.stdout.hasPrefix("host -> shop-frontend-1 (172.20.0.2) tcp/80: ALLOWED\n"), "\(host.stdout)")
        #expect(host.stdout.contains("allowed by policies/shop.yaml:22: "), "\(host.stdout)")
    }

    @Test func ipv6UsesTheContainersIPv6Addresses() throws {
        let r = try explain(["--from", "shop-api-1", "--to", "shop/db", "--port", "tcp/5432", "--ipv6"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("shop-api-1 (fd00:20::3) -> shop-db-1 (fd00:20::6) tcp/5432: ALLOWED\n"), "\(r.stdout)")
    }

    @Test func jsonFormat() throws {
        let r = try explain(["--from", "shop-api-1", "--to", "shop-db-1", "--port", "tcp/5432", "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let doc = try json(r.stdout)
        #expect(doc["from"] as? String == "shop-api-1 (172.20.0.3)")
        #expect(doc["to"] as? String == "shop-db-1 (172.20.0.6)")
        #expect(doc["port"] as? String == "tcp/5432")
        #expect(doc["verdict"] as? String == "allowed")
        #expect(doc["flow"] as? String == "policies/shop.yaml:29")
        #expect(doc["source"] as? String == "container shop-api-1 (shop/api)")
        #expect(doc["reason"] as? String == "allowed by policies/shop.yaml:29: shop/api, shop/worker -> shop/db on tcp/5432")
        let denied = try json(try explain(["--from", "shop-frontend-1", "--to", "shop-db-1", "--port", "tcp/5432", "--format", "json"]).stdout)
        #expect(denied["verdict"] as? String == "denied")
        #expect(denied["flow"] is NSNull)
    }

    /// The other two verdicts the README lists: `audited` and `ungoverned`.
    @Test func auditedAndUngoverned() throws {
        let ungoverned = try explain(["--from", "203.0.113.9", "--to", "198.51.100.7", "--port", "tcp/22"])
        #expect(ungoverned.status == 0)
        #expect(ungoverned.stdout.hasPrefix("203.0.113.9 -> 198.51.100.7 tcp/22: UNGOVERNED\n"), "\(ungoverned.stdout)")
        let audit = good.replacingOccurrences(of: "segment: shop\n", with: "segment: shop\nmode: audit\n")
        try withFiles(["shop.yaml": audit, "inv.yaml": """
            networks:
              - name: shop_default
                subnets: [172.20.0.0/16]
            containers:
              - name: f
                labels: {app: frontend}
                networks:
                  shop_default: {ipv4: 172.20.0.2}
              - name: a
                labels: {app: api}
                networks:
                  shop_default: {ipv4: 172.20.0.3}

            """]) { dir in
            let r = try cli(["explain", "--policies", dir + "/shop.yaml", "--inventory", dir + "/inv.yaml",
                             "--from", "a", "--to", "f", "--port", "tcp/8080", "--format", "json"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(try json(r.stdout)["verdict"] as? String == "audited", "\(r.stdout)")
            // A container without an IPv6 address cannot be explained with --ipv6: exit 1.
            let v6 = try cli(["explain", "--policies", dir + "/shop.yaml", "--inventory", dir + "/inv.yaml",
                              "--from", "a", "--to", "f", "--port", "tcp/8080", "--ipv6"])
            #expect(v6.status == 1)
            #expect(v6.stderr == "error: --from: container a has no IPv6 address\n", "\(v6.stderr)")
        }
    }

    /// Unknown names are usage errors (64) with a suggestion; a service without containers is 1;
    /// a malformed port is 64; an unreadable inventory 66.
    @Test func unknownNamesAndBadArguments() throws {
        let typo = try explain(["--from", "shop-dbb-1", "--to", "shop-db-1", "--port", "tcp/5432"])
        #expect(typo.status == 64)
        #expect(typo.stdout == "")
        #expect(typo.stderr == "error: --from: 'shop-dbb-1' is not a container, a service (segment/name), an IP address or host (did you mean 'shop-db-1'?)\n", "\(typo.stderr)")
        let unknownService = try explain(["--from", "shop-api-1", "--to", "shop/nope", "--port", "tcp/5432"])
        #expect(unknownService.status == 64)
        #expect(unknownService.stderr.hasPrefix("error: --to: 'shop/nope' is not a container"), "\(unknownService.stderr)")
        try withFiles(["inv.yaml": "networks:\n  - name: shop_default\n    subnets: [172.20.0.0/16]\ncontainers: []\n"]) { dir in
            let empty = try cli(["explain", "--policies", "policies", "--inventory", dir + "/inv.yaml", "--from", "world", "--to", "shop/db", "--port", "tcp/5432"])
            #expect(empty.status == 64, "'world' is not a party name: \(empty.stderr)")
            let noContainer = try cli(["explain", "--policies", "policies", "--inventory", dir + "/inv.yaml", "--from", "host", "--to", "shop/db", "--port", "tcp/5432"])
            #expect(noContainer.status == 1)
            #expect(noContainer.stderr == "error: --to: service shop/db has no container in the inventory to explain with\n", "\(noContainer.stderr)")
        }
        let port = try explain(["--from", "shop-api-1", "--to", "shop-db-1", "--port", "5432"])
        #expect(port.status == 64)
        #expect(port.stderr.contains("--port must be tcp/N, udp/N or icmp (one port), not '5432'"), "\(port.stderr)")
        let unreadable = try cli(["explain", "--policies", "policies", "--inventory", "/nonexistent.json", "--from", "host", "--to", "shop/db", "--port", "tcp/5432"])
        #expect(unreadable.status == 66)
    }
}

// MARK: inventory (the real dockerd)

/// `bulkhead inventory` against the dockerd that scripts/test.sh starts: a container this test
/// runs appears with its address and labels. In CI an unreachable dockerd fails the test.
@Suite(.enabled(if: TestSystem.inCI || dockerReachable(), "needs a reachable dockerd (or CI=true, where it must fail instead of skip)"))
struct InventoryProcessTests {
    static let image = "bulkhead/busybox:test"

    @Test func listsALabelledContainerWithItsAddress() throws {
        try #require(dockerReachable(), "dockerd is not reachable at /var/run/docker.sock: start it (scripts/lib/docker.sh ensure_dockerd)")
        let tag = "bhcli-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var created = false
        var lastError = ""
        for _ in 0..<8 where !created {
            let n = Int.random(in: 0..<(51 * 256))
            let r = try TestSystem.run(["docker", "network", "create", "--subnet", "10.\(200 + n / 256).\(n % 256).0/24",
                                        "--label", "io.bulkhead.test=\(tag)", tag])
            created = r.status == 0
            lastError = r.err
        }
        try #require(created, "cannot create a test network: \(lastError)")
        defer {
            _ = try? TestSystem.run(["docker", "rm", "-f", tag + "-c"])
            _ = try? TestSystem.run(["docker", "network", "rm", tag])
        }
        try TestSystem.check(["docker", "run", "-d", "--name", tag + "-c", "--network", tag, "--label", "io.bulkhead.cli=\(tag)",
                              Self.image, "sleep", "600"])
        let ip = try TestSystem.check(["docker", "inspect", "-f", "{{(index .NetworkSettings.Networks \"\(tag)\").IPAddress}}", tag + "-c"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(!ip.isEmpty)

        let r = try cli(["inventory"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("# bulkhead inventory: "), "\(r.stdout.prefix(200))")
        // Parsed by an independent YAML reader: the container, its label and its address.
        let script = """
        import sys, yaml, json
        doc = yaml.safe_load(sys.stdin)
        c = [c for c in doc["containers"] if c["name"] == sys.argv[1]]
        n = [n for n in doc["networks"] if n["name"] == sys.argv[2]]
        print(json.dumps({"containers": c, "networks": n}))
        """
        let parsed = try TestSystem.run(["python3", "-c", script, tag + "-c", tag], stdin: r.stdout)
        #expect(parsed.status == 0, "the snapshot is not YAML: \(parsed.err)")
        let doc = try json(parsed.out)
        let containers = try #require(doc["containers"] as? [[String: Any]])
        #expect(containers.count == 1, "\(parsed.out)")
        let c = try #require(containers.first)
        #expect((c["labels"] as? [String: Any])?["io.bulkhead.cli"] as? String == tag, "\(c)")
        let attachment = try #require((c["networks"] as? [String: Any])?[tag] as? [String: Any], "\(c)")
        #expect(attachment["ipv4"] as? String == ip, "\(attachment)")
        let networks = try #require(doc["networks"] as? [[String: Any]])
        #expect(networks.count == 1 && (networks.first?["subnets"] as? [String])?.first?.hasSuffix(".0/24") == true, "\(networks)")
        // The snapshot is an inventory the other commands accept.
        try withFiles(["snapshot.yaml": r.stdout]) { dir in
            let v = try cli(["validate", "--inventory", dir + "/snapshot.yaml", "policies"])
            #expect(v.stdout.contains("0 errors"), "\(v.stdout)")
        }
    }

    /// No dockerd at the socket: exit 1 and the message says what to do; a malformed endpoint: 64.
    @Test func missingSocketExitsOne() throws {
        let r = try cli(["inventory", "--docker", "unix:///nonexistent/docker.sock"])
        #expect(r.status == 1)
        #expect(r.stdout == "")
        #expect(r.stderr.hasPrefix("error: cannot read container metadata from Docker: "), "\(r.stderr)")
        #expect(r.stderr.hasSuffix("; pass --inventory FILE to work from a snapshot. Nothing was changed\n"), "\(r.stderr)")
        let usage = try cli(["inventory", "--docker", "http://localhost:2375"])
        #expect(usage.status == 64, "\(usage.stderr)")
    }
}

func dockerReachable() -> Bool {
    (try? TestSystem.run(["docker", "version", "--format", "{{.Server.APIVersion}}"]).status) == 0
}

// MARK: agent flags (the agent as a process is BulkheadAgentTests')

@Suite struct AgentFlagTests {
    @Test func helpAndFlagErrors() throws {
        let help = try cli(["agent", "--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("USAGE: bulkhead agent"), "\(help.stdout)")
        #expect(help.stdout.contains("--inventory <file>"), "\(help.stdout)")
        for (args, message) in [(["--listen", "9641"], "--listen must be HOST:PORT, such as 127.0.0.1:9641"),
                                (["--log-level", "loud"], "--log-level: unknown level 'loud'"),
                                (["--resync", "0"], "--resync must be a positive number of seconds"),
                                (["--no-such-flag"], "Unknown option '--no-such-flag'"),
                                (["--docker", "unix:///var/run/docker.sock", "--inventory", "/nonexistent/inventory.yaml"],
                                 "--docker and --inventory are two container sources: give one of them")] {
            let r = try cli(["agent"] + args)
            #expect(r.status == 64, "\(args): \(r.stderr)")
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
    }

    /// Every command's --help exits 0 and states the exit codes the tests above assert.
    @Test func helpDocumentsExitCodes() throws {
        for (command, text) in [("", "Exit codes: 0 success; 1 errors found (validate) or the command failed; 2 changes to make (plan --detailed-exitcode); 64 usage error; 66 an input path cannot be read."),
                                ("plan", "Exit codes: 0 success; with --detailed-exitcode 0 no changes, 2 changes, 1 error; 64 usage; 66 unreadable input."),
                                ("apply", "Exit codes: 0 applied (or nothing to do); 1 error, nothing changed"),
                                ("verify", "Exit codes: 0 every probe matches; 1 a mismatch or an error; 64 usage; 66 unreadable input."),
                                ("explain", "Exit codes: 0 a verdict (allowed, denied, audited or ungoverned); 1 a service with no container"),
                                ("uninstall", "Exit codes: 0 removed, or nothing to remove; 1 the kernel refused"),
                                ("inventory", "Exit codes: 0 printed; 1 Docker cannot be read; 64 usage")] {
            let r = try cli(command.isEmpty ? ["--help"] : [command, "--help"])
            #expect(r.status == 0)
            let flat = r.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(flat.contains(text), "\(command): \(r.stdout)")
        }
    }
}
