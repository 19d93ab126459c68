import BulkheadEngine
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

/// Two segments govern one network: `e` enforces, `u` audits. A container of `u` only is audited
/// (would-be denials pass, counted by a rule that logs them); a container of both is decided by
/// both segments, so it is only audited if both were in audit mode: its denials are dropped.
@Test func auditedOnlyWhenEveryDecidingSegmentAudits() throws {
    let enforce = """
    segment: e
    networks: [n]
    services:
      front:
        labels: {tier: front}
    flows:
      - from: world
        to: front
        ports: [tcp/80]

    """
    let audit = """
    segment: u
    mode: audit
    networks: [n]
    services:
      ops:
        labels: {team: ops}
    flows:
      - from: world
        to: ops
        ports: [tcp/80]

    """
    let loaded = PolicyLoader.load(sources: [("e.yaml", Array(enforce.utf8)), ("u.yaml", Array(audit.utf8))])
    #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
    let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.65.0.0/24")!, IPNetwork("fd00:65::/64")!],
                           gateways: [IPAddress("10.65.0.1")!, IPAddress("fd00:65::1")!])],
        containers: [
            Container(name: "audited", labels: ["team": "ops"], networks: ["n": Attachment(ipv4: IPAddress("10.65.0.2"), ipv6: IPAddress("fd00:65::2"))]),
            Container(name: "both", labels: ["tier": "front", "team": "ops"], networks: ["n": Attachment(ipv4: IPAddress("10.65.0.3"), ipv6: IPAddress("fd00:65::3"))]),
            Container(name: "enforced", labels: ["tier": "front"], networks: ["n": Attachment(ipv4: IPAddress("10.65.0.4"), ipv6: IPAddress("fd00:65::4"))]),
        ])
    let env = try Enforced(policies: loaded.policies, inventory: inventory)
    defer { env.destroy() }
    // Listen on the audit log group (Compiler.Options.auditLogGroup, 1) before any probe.
    let log = try NFLogListener(lab: env.lab, namespace: env.lab.hostNamespace, group: 1)
    let rows = try env.verify([.tcp(80), .tcp(22)], parties: [.world, .container("audited"), .container("both"), .container("enforced")])
    expectAllMatch(rows)
    expectNaiveAgrees(rows, lab: env.lab, naive: env.naive)
    let evaluator = Evaluator(policies: env.policies, inventory: env.inventory)
    func fromWorld(to container: String, _ t: Traffic) throws -> (row: TruthTableRow, verdict: Evaluator.Decision.Verdict) {
        let address = try #require(env.lab.address(of: container, on: "n"))
        let row = try #require(rows.first { $0.result.probe.from == .world && $0.result.probe.to == address && $0.result.probe.traffic == t })
        return (row, evaluator.evaluate(from: .address(try #require(row.source)), to: .address(address), t).verdict)
    }
    // Audited: the segment of its only service audits, so the undeclared tcp/22 is answered.
    let audited = try fromWorld(to: "audited", .tcp(22))
    #expect(audited.verdict == .audited && audited.row.passed, "\(audited)")
    // Decided by an enforcing and an auditing segment: dropped.
    let both = try fromWorld(to: "both", .tcp(22))
    #expect(both.verdict == .denied && both.row.dropped, "\(both)")
    let enforced = try fromWorld(to: "enforced", .tcp(22))
    #expect(enforced.verdict == .denied && enforced.row.dropped, "\(enforced)")
    // Declared flows pass for all three.
    for c in ["audited", "both", "enforced"] {
        let allowed = try fromWorld(to: c, .tcp(80))
        #expect(allowed.verdict == .allowed && allowed.row.passed, "\(allowed)")
    }

    // Counted and logged as audited: the rules that log and accept (audit) counted packets, every
    // one of them names segment u only; the dropping rules counted the denials of the others.
    let live = try #require(try env.backend.dump(table: Planner.tableID))
    func packets(_ r: Rule) -> UInt64 {
        r.statements.compactMap { s -> UInt64? in if case .counter(let p, _) = s { return p } else { return nil } }.first ?? 0
    }
    let auditRules = live.rules.filter { r in
        r.statements.last == .verdict(.accept) && r.statements.contains { if case .log(let l) = $0 { l.group == 1 } else { false } }
    }
    let listed = (try? TestSystem.nft(["list", "table", "inet", "bulkhead"], in: env.lab.hostNamespace)) ?? ""
    #expect(!auditRules.isEmpty && auditRules.allSatisfy { $0.comment?.hasPrefix("u") == true && $0.comment?.contains("e/") != true },
            "audit rules: \(auditRules)")
    #expect(auditRules.map(packets).reduce(0, +) > 0, "the audit rules counted the audited probes:\n\(listed)")
    let logPrefixes = auditRules.flatMap { $0.statements.compactMap { s -> String? in if case .log(let l) = s { l.prefix } else { nil } } }
    #expect(!logPrefixes.isEmpty && logPrefixes.allSatisfy { $0.hasPrefix("bulkhead audit u") }, "\(logPrefixes)")
    // Logged: every audited probe (answered, verdict audited) sent at least its first packet to
    // the log group with the audit prefix of segment u, and nothing else was logged.
    let auditedRows = rows.filter { r in
        r.result.probe.interface == nil && r.source.map { evaluator.evaluate(from: .address($0), to: .address(r.result.probe.to), r.result.probe.traffic).verdict == .audited } == true
    }
    #expect(auditedRows.count >= 4, "audited probes: \(auditedRows.count)")
    let logged = log.prefixes { $0.count >= auditedRows.count }
    #expect(logged.count >= auditedRows.count && logged.allSatisfy { $0.hasPrefix("bulkhead audit u") },
            "\(auditedRows.count) audited probes; logged: \(logged)")
    let drops = live.rules.filter { $0.statements.last == .verdict(.drop) && packets($0) > 0 }
    #expect(!drops.isEmpty, "the drop rules counted the denials of both and enforced:\n\(listed)")
}

/// `bulkhead apply` turns bridge netfilter on where it was off: in a lab whose host namespace has it
/// off (as a fresh host may), the rules alone do not stop a denied flow between two containers of one
/// bridge. The `bulkhead` binary's `apply --netns` on the same inputs has no rule to change, turns both
/// sysctls on and says so on stderr; afterwards the same probes are dropped.
@Test func applyTurnsBridgeNetfilterOnAndThenDenialsAreDropped() throws {
    try TestSystem.requireRoot("a bridge netfilter test")
    let yaml = """
    segment: b
    networks: [n]
    services:
      web:
        labels: {role: web}
      client:
        labels: {role: client}
    flows:
      - from: client
        to: web
        ports: [tcp/80]

    """
    let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.66.0.0/24")!, IPNetwork("fd00:66::/64")!],
                           gateways: [IPAddress("10.66.0.1")!, IPAddress("fd00:66::1")!])],
        containers: [
            Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.66.0.2"), ipv6: IPAddress("fd00:66::2"))]),
            Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.66.0.3"), ipv6: IPAddress("fd00:66::3"))]),
        ])
    let lab = try Lab(inventory: inventory, configuration: LabConfiguration(bridgeNetfilter: false))
    defer { _ = lab.destroy() }
    let runner = ProbeRunner(lab: lab)
    defer { runner.stopServers() }
    let host = lab.hostNamespace
    #expect(try lab.run(in: host, ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]) == "0\n0\n")

    // The rules, applied without the bridge netfilter step. The socket is closed at the end of the
    // block, so the table (owner, persist) is left for the binary to adopt.
    var labInventory = lab.inventory
    labInventory.hostAddresses = lab.addresses(of: .host)
    do {
        let backend = try NetlinkNetfilter(namespace: host)
        let planner = Planner()
        try planner.apply(try planner.plan(policies: try policies(yaml), inventory: labInventory, backend: backend), to: backend)
    }

    let web = lab.addresses(of: .container("web"))
    #expect(web.count == 2)
    let allowed = web.map { Probe(from: .container("client"), to: $0, traffic: .tcp(80)) }
    let denied = web.map { Probe(from: .container("client"), to: $0, traffic: .tcp(22)) }
    try runner.startServers(for: allowed + denied)
    // Off: bridged traffic never meets the inet hooks, so the denied flow is answered.
    let before = try runner.run(allowed + denied)
    #expect(before.map(\.outcome) == [.answered, .answered, .answered, .answered], "with bridge netfilter off the rules are bypassed: \(before)")

    // The product path: the binary's apply on the same inputs, in the lab's host namespace.
    let dir = try TestSystem.check(["mktemp", "-d", "/tmp/bulkhead-bridge-nf.XXXXXX"]).trimmingCharacters(in: .whitespacesAndNewlines)
    defer { _ = try? TestSystem.run(["rm", "-rf", dir]) }
    try Data(yaml.utf8).write(to: URL(fileURLWithPath: dir + "/b.yaml"))
    try snapshotJSON(labInventory).write(to: URL(fileURLWithPath: dir + "/inventory.json"))
    let apply = try runBulkhead(["apply", "--netns", host, "--policies", dir + "/b.yaml", "--inventory", dir + "/inventory.json"])
    #expect(apply.status == 0, "\(apply)")
    let notes = apply.stderr.split(separator: "\n").map(String.init).filter { $0.contains("turned on") }
    #expect(notes == [
        "turned on net.bridge.bridge-nf-call-iptables=1 in network namespace \(host) so traffic between containers on one bridge is filtered",
        "turned on net.bridge.bridge-nf-call-ip6tables=1 in network namespace \(host) so traffic between containers on one bridge is filtered",
    ], "apply's stderr: \(apply.stderr)")
    #expect(try lab.run(in: host, ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]) == "1\n1\n")
    let after = try runner.run(allowed + denied)
    #expect(after.map(\.outcome) == [.answered, .answered, .timedOut, .timedOut], "with bridge netfilter on, the denial is dropped: \(after)")
    let again = try runBulkhead(["apply", "--netns", host, "--policies", dir + "/b.yaml", "--inventory", dir + "/inventory.json"])
    #expect(again.status == 0 && !again.stderr.contains("turned on"), "a second apply has nothing to turn on: \(again)")
}

/// An inventory as the snapshot file format writes it (`bulkhead inventory`, policies/inventory.json),
/// with the bridge, MACs and ports the lab filled in (port binding needs them).
func snapshotJSON(_ inventory: Inventory) throws -> Data {
    let networks: [[String: Any]] = inventory.networks.map { n in
        var out: [String: Any] = ["name": n.name, "subnets": n.subnets.map(\.description), "gateways": n.gateways.map(\.description)]
        if let b = n.bridge { out["bridge"] = b }
        return out
    }
    let containers: [[String: Any]] = inventory.containers.map { c in
        ["name": c.name, "labels": c.labels, "networks": c.networks.mapValues { a -> [String: Any] in
            var out: [String: Any] = [:]
            if let v = a.ipv4 { out["ipv4"] = v.description }
            if let v = a.ipv6 { out["ipv6"] = v.description }
            if let v = a.mac { out["mac"] = v }
            if let v = a.port { out["port"] = v }
            return out
        }]
    }
    return try JSONSerialization.data(withJSONObject: ["host": ["addresses": inventory.hostAddresses.map(\.description)],
                                                       "networks": networks, "containers": containers], options: [.sortedKeys])
}

/// The `bulkhead` binary built next to the test bundle (`swift build --build-tests` builds both).
func runBulkhead(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidates = [bundleDir.appendingPathComponent("bulkhead").path,
                      bundleDir.deletingLastPathComponent().appendingPathComponent("bulkhead").path,
                      TestSystem.repositoryRoot + "/.build/debug/bulkhead"]
    let binary = try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0) },
                              "no bulkhead binary in \(candidates): run swift build --build-tests")
    let run = try TestSystem.run([binary] + args)
    return (run.status, run.out, run.err)
}
