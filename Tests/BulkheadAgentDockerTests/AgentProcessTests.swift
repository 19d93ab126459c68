import BulkheadInventory
import BulkheadTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Nested in AgentAgainstDocker (serialized): the process programs the host's one `inet bulkhead`
// and `bridge bulkhead` tables, which the other tests of the suite own while they run.
extension AgentAgainstDocker {
/// `bulkhead agent` as the process systemd runs (issue 9, items 10 and 6): the built binary against
/// the real dockerd, with containers of a network of the test's own. What the README's "The host
/// agent" and "Operating it" promise of the process — its flags, its log lines, SIGTERM and SIGINT
/// with the rules kept (proved by traffic after it exited), `/healthz` and `/readyz` through their
/// transitions, every metric of the README's table with the values the traffic implies, a drift
/// made by another process (`nft`) while no agent ran, and the systemd unit.
@Suite(.serialized, .enabled(if: DockerE2E.enabled, "needs root and a reachable dockerd (with CI=true it runs, and fails instead)"))
struct AgentProcessAgainstDocker {
    /// A bad flag: exit status 64 (usage) and the message naming the flag, before anything is touched.
    @Test func badFlagsExit64WithTheReason() async throws {
        let cases: [([String], String)] = [
            (["--listen", "9641"], "--listen must be HOST:PORT, such as 127.0.0.1:9641"),
            (["--log-level", "loud"], "--log-level: unknown level 'loud'"),
            (["--resync", "0"], "--resync must be a positive number of seconds"),
            (["--bogus"], "Unknown option '--bogus'"),
        ]
        for (flags, message) in cases {
            // No Docker and no policies: were a flag accepted by mistake, the process could
            // program nothing on this host.
            let process = try AgentProcess(["agent", "--docker", "unix:///nonexistent/docker.sock", "--policies", "/nonexistent/policies"] + flags)
            let status = await process.waitForExit(15)
            #expect(status == 64, "bulkhead agent \(flags.joined(separator: " ")): exit \(status.map(String.init) ?? "none (still running)"); log: \(process.log)")
            #expect(process.log.contains("Error: \(message)"), "bulkhead agent \(flags.joined(separator: " ")): \(process.log)")
            process.kill9()
        }
    }

    /// The unit shipped in `scripts/` passes `systemd-analyze verify` (its ExecStart pointed at
    /// the built binary: verify requires the executable to exist).
    @Test func systemdUnitVerifies() async throws {
        let unit = try String(contentsOfFile: TestSystem.repositoryRoot + "/scripts/bulkhead-agent.service", encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/bulkhead agent "), "the unit starts /usr/local/bin/bulkhead agent")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-unit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/bulkhead-agent.service"
        try unit.replacingOccurrences(of: "ExecStart=/usr/local/bin/bulkhead ", with: "ExecStart=\(bulkheadBinary) ")
            .write(toFile: path, atomically: true, encoding: .utf8)
        let r = try await Command.run(["systemd-analyze", "verify", "--man=no", path])
        note("systemd-analyze verify: exit \(r.status)\(r.err.isEmpty ? "" : ", " + r.err.trimmingCharacters(in: .whitespacesAndNewlines))")
        #expect(r.status == 0, "systemd-analyze verify exited \(r.status): \(r.out)\(r.err)")
        // Anything it says about our unit is a finding (it may warn about other units on the host).
        let ours = (r.out + r.err).split(separator: "\n").filter { $0.contains("bulkhead-agent.service") }
        #expect(ours.isEmpty, "systemd-analyze verify reports on the unit: \(ours)")
    }

    /// No Docker (a socket that does not exist): the process serves `/healthz` 200 and `/readyz` 503
    /// with the reason, reports `bulkhead_docker_up 0`, programs nothing, and SIGINT stops it.
    @Test(.timeLimit(.minutes(2)))
    func withoutDockerItServesButNeverProgramsAndSigintStopsIt() async throws {
        try TestSystem.requireRoot("bulkhead agent (netlink in the host namespace)")
        #expect(try await KernelTable.listedByNft() == nil, "no inet bulkhead table before the test (a leftover would hide what this checks)")
        let policies = FileManager.default.temporaryDirectory.appendingPathComponent("bh-agentproc-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: policies) }
        for name in ["shop.yaml", "monitoring.yaml", "dns.yaml"] {
            try FileManager.default.copyItem(atPath: TestSystem.repositoryRoot + "/policies/" + name, toPath: policies + "/" + name)
        }
        let agent = try AgentProcess(["agent", "--policies", policies, "--docker", "unix://\(policies)/no-docker.sock",
                                      "--listen", "127.0.0.1:0", "--log-level", "info"])
        defer { agent.kill9() }
        let port = try await agent.listeningPort()
        let health = try await LoopbackHTTP.get(port: port, path: "/healthz")
        #expect(health.status == 200 && health.body == "ok\n", "\(health)")
        // The retries are the event to wait on: the log says Docker is unreachable.
        _ = try await agent.line("`container source unusable` warning") { $0.contains("container source unusable; keeping the last rules, retrying") }
        _ = try await agent.line("`policies loaded` line") { $0.hasSuffix("[BulkheadAgent] policies loaded") }
        let ready = try await LoopbackHTTP.get(port: port, path: "/readyz")
        #expect(ready.status == 503, "\(ready)")
        #expect(ready.body == "not ready: Docker is unreachable (the last rules stay enforced)\n", "\(ready)")
        let metrics = Scrape(try await LoopbackHTTP.get(port: port, path: "/metrics").body)
        #expect(metrics.value("bulkhead_docker_up") == 0)
        #expect(metrics.series("bulkhead_reconciles_total").isEmpty, "no reconcile ran: \(metrics.series("bulkhead_reconciles_total"))")
        #expect(try await KernelTable.listedByNft() == nil, "nothing is programmed without Docker")
        try agent.send(SIGINT)
        let status = await agent.waitForExit()
        #expect(status == 0, "SIGINT: exit \(status.map(String.init) ?? "none (still running after 15 s)"); log: \(agent.log.suffix(2000))")
        #expect(agent.log.contains("agent stopped; the rules stay in the kernel (run `bulkhead uninstall` to remove them)"), "\(agent.log.suffix(2000))")
    }

    /// The process enforcing real containers: log lines, readiness, every README metric with the
    /// values traffic produced, a broken policy edit, SIGTERM with the rules kept (by traffic), a
    /// rule that opens the denied flow inserted with `nft` while no agent runs (open by traffic),
    /// repaired by the next agent process at its first reconcile, and SIGINT with the rules kept.
    @Test(.timeLimit(.minutes(5)))
    func enforcesStopsOnSignalsWithRulesKeptAndRepairsForeignDrift() async throws {
        try await DockerE2E.require()
        let network = try await TestNetwork.make()
        defer { network.remove() }
        let policies = try PolicyDirectory(network: network)
        defer { policies.remove() }
        let kernel = KernelTable()
        defer { kernel.remove() }
        async let webRun = network.run("web-1", service: "web", fixedHost: Host.web)
        async let apiRun = network.run("api-1", service: "api", fixedHost: Host.api)
        async let dbRun = network.run("db-1", service: "db", fixedHost: Host.db)
        async let strayRun = network.run("stray-1", service: nil, fixedHost: Host.stray)
        let (web, apiName, dbName, _) = try await (webRun, apiRun, dbRun, strayRun)
        let api = network.address(Host.api).v4, db = network.address(Host.db).v4
        let flowLine = try #require(policies.text(flows: PolicyDirectory.baseFlows).split(separator: "\n", omittingEmptySubsequences: false)
            .firstIndex { $0.hasSuffix("- from: web") }) + 1
        // Rule comments and the flow metric name the file relative to the policy directory.
        let allowedFlow = "\((policies.file as NSString).lastPathComponent):\(flowLine)"
        let arguments = ["agent", "--policies", policies.path, "--listen", "127.0.0.1:0", "--resync", "5", "--log-level", "info"]

        // MARK: The first process: starts, enforces.
        let started = Date()
        let first = try AgentProcess(arguments)
        defer { first.kill9() }
        let port = try await first.listeningPort()
        let starting = try await first.line("startup line") { $0.hasSuffix("[BulkheadAgent] agent starting") }
        #expect(starting.contains(" info bulkhead.agent: listen=127.0.0.1:0 policies=\(policies.path) [BulkheadAgent] agent starting"), "\(starting)")
        let ownership = try await first.line("table ownership line") { $0.contains(" info bulkhead.agent: [bulkhead] table ownership: ") }
        note("agent process: \(starting)\n\(ownership)")
        try await expectReady(port, first, "the first process")
        // README "Operating it": one line per reconcile, with what changed and how long it took.
        let reconciledLines = first.lines.filter { $0.hasSuffix("[BulkheadAgent] reconciled") }
        let pattern = #/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} info bulkhead\.agent: closed=(\d+) duration_ms=\d+\.\d\d membership_changes=(\d+) opened=(\d+) operations=(\d+) reasons=[a-z,]+ \[BulkheadAgent\] reconciled$/#
        let parsed = reconciledLines.compactMap { try? pattern.wholeMatch(in: String($0)) }
        #expect(!reconciledLines.isEmpty && parsed.count == reconciledLines.count, "reconcile lines in the README's form: \(reconciledLines)")
        let firstReconcile = try #require(parsed.first { Int($0.output.4)! > 0 }, "a reconcile that programmed the table: \(reconciledLines)")
        #expect(Int(firstReconcile.output.3)! > 0, "the first programming reconcile opened the flows: \(firstReconcile.output.0)")

        // Traffic: the allowed flow answers, the denied one is dropped (times out).
        let before = Scrape(try await LoopbackHTTP.get(port: port, path: "/metrics").body)
        #expect(try await tcpProbe(from: web, to: api, port: 8080) == .answered, "web → api tcp/8080 is allowed")
        #expect(try await tcpProbe(from: web, to: db, port: 5432) == .dropped, "web → db tcp/5432 is denied")
        // A frame from web's namespace with api's IPv4 source (api → db is allowed): dropped at
        // web's bridge port (`bridge bulkhead`).
        let spoofed = try await PortBindingAgainstDocker.sendFrames(["spoof-tcp4"], from: web, to: dbName, impersonating: apiName, network: network)
        #expect(spoofed.canary && spoofed.seen == [], "the spoofed frame reached db: \(spoofed.seen) (canary \(spoofed.canary))")
        let spoofLabel = ["reason": "IPv4 source not the port's"]
        // The agent reads the kernel's counters at most once a second: wait for the scrape to
        // move (10 s: a hang guard).
        var after = before
        let denialLabel = ["identity": "\(network.project)/db"]
        let moved = try await eventually(10, every: .milliseconds(200)) {
            after = Scrape(try await LoopbackHTTP.get(port: port, path: "/metrics").body)
            return (after.value("bulkhead_flow_packets_total", ["flow": allowedFlow]) ?? 0) > (before.value("bulkhead_flow_packets_total", ["flow": allowedFlow]) ?? 0)
                && (after.value("bulkhead_denied_packets_total", denialLabel) ?? 0) > (before.value("bulkhead_denied_packets_total", denialLabel) ?? 0)
                && (after.value("bulkhead_port_binding_dropped_packets_total", spoofLabel) ?? 0) > (before.value("bulkhead_port_binding_dropped_packets_total", spoofLabel) ?? 0)
        }
        #expect(moved, "bulkhead_flow_packets_total{flow=\"\(allowedFlow)\"} and bulkhead_denied_packets_total\(denialLabel) and bulkhead_port_binding_dropped_packets_total\(spoofLabel) rose with the traffic: before \(before.series("bulkhead_flow_packets_total")) \(before.series("bulkhead_denied_packets_total")) \(before.series("bulkhead_port_binding_dropped_packets_total")), after \(after.series("bulkhead_flow_packets_total")) \(after.series("bulkhead_denied_packets_total")) \(after.series("bulkhead_port_binding_dropped_packets_total"))")
        note("flow \(allowedFlow): \(before.value("bulkhead_flow_packets_total", ["flow": allowedFlow]) ?? 0) → \(after.value("bulkhead_flow_packets_total", ["flow": allowedFlow]) ?? 0) packets; denied \(denialLabel): \(before.value("bulkhead_denied_packets_total", denialLabel) ?? 0) → \(after.value("bulkhead_denied_packets_total", denialLabel) ?? 0); port binding \(spoofLabel): \(before.value("bulkhead_port_binding_dropped_packets_total", spoofLabel) ?? 0) → \(after.value("bulkhead_port_binding_dropped_packets_total", spoofLabel) ?? 0)")
        // One scrape and the log lines around it that agree (a resync may reconcile in between,
        // and the counter moves just before its log line is written); 10 s: a hang guard.
        var consistent: (scrape: Scrape, reconciles: Int, operations: Int)?
        _ = try await eventually(10, every: .milliseconds(50)) {
            let lines = first.lines.filter { $0.hasSuffix("[BulkheadAgent] reconciled") }
            let scrape = Scrape(try await LoopbackHTTP.get(port: port, path: "/metrics").body)
            guard first.lines.filter({ $0.hasSuffix("[BulkheadAgent] reconciled") }).count == lines.count,
                  scrape.value("bulkhead_reconciles_total", ["result": "success"]) == Double(lines.count) else { return false }
            consistent = (scrape, lines.count, lines.compactMap { try? pattern.wholeMatch(in: String($0)) }.map { Int($0.output.4)! }.reduce(0, +))
            return true
        }
        let agreed = try #require(consistent, "no scrape agreed with the log's reconcile lines within 10 s: \(first.log.suffix(2000))")
        try expectEveryDocumentedMetric(agreed.scrape, reconciles: agreed.reconciles, operations: agreed.operations, since: started)

        // A broken policy edit: /readyz 503 with the reason, the error and the rejected reload counted.
        let goodText = try String(contentsOfFile: policies.file, encoding: .utf8)
        try policies.write(goodText.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [5432]"))
        let broken = try await eventuallyAnswer(port, "/readyz") { $0.status == 503 }
        #expect(broken.body.hasPrefix("not ready: policy reload failed: 1 error (first: \(policies.file):"), "\(broken)")
        _ = try await first.line("`policy edit rejected` line") { $0.contains("policy edit rejected; the last good policies stay enforced") }
        let brokenScrape = Scrape(try await LoopbackHTTP.get(port: port, path: "/metrics").body)
        #expect(brokenScrape.value("bulkhead_policy_errors") == 1)
        #expect(brokenScrape.value("bulkhead_policy_reloads_total", ["result": "invalid"]) == 1)
        #expect(try await tcpProbe(from: web, to: db, port: 5432) == .dropped, "the last good policies stay enforced")
        try policies.write(goodText)
        _ = try await eventuallyAnswer(port, "/readyz") { $0.status == 200 }
        let fixed = Scrape(try await LoopbackHTTP.get(port: port, path: "/metrics").body)
        #expect(fixed.value("bulkhead_policy_errors") == 0)
        #expect(fixed.value("bulkhead_policy_reloads_total", ["result": "loaded"]) == 2)

        // MARK: SIGTERM: it exits 0, the rules stay, by traffic.
        try first.send(SIGTERM)
        let termStatus = await first.waitForExit()
        #expect(termStatus == 0, "SIGTERM: exit \(termStatus.map(String.init) ?? "none (still running after 15 s)"); log: \(first.log.suffix(2000))")
        #expect(first.log.contains("agent stopped; the rules stay in the kernel (run `bulkhead uninstall` to remove them)"))
        let listed = try #require(try await KernelTable.listedByNft(), "the table stays after SIGTERM")
        #expect(listed.contains("comment \"\(allowedFlow)\""), "the kept table still holds the allowed flow")
        #expect(try await tcpProbe(from: web, to: db, port: 5432) == .dropped, "after SIGTERM the denied flow is still dropped")
        #expect(try await tcpProbe(from: web, to: api, port: 8080) == .answered, "after SIGTERM the allowed flow still answers (control)")

        // MARK: Drift by another process while no agent runs (issue 9, item 6).
        // The table is orphaned (its owner exited), so `nft` may change it: a rule at the head of
        // the forward chain that accepts the denied flow. Traffic proves the drift is real.
        try await Command.check(["nft", "insert", "rule", "inet", "bulkhead", "forward", "ip", "daddr", "\(db)", "tcp", "dport", "5432", "accept"])
        #expect(try await tcpProbe(from: web, to: db, port: 5432) == .answered, "the rule inserted by nft opened web → db tcp/5432 (the drift is real)")

        // MARK: The second process repairs it at its first reconcile; SIGINT stops it.
        let second = try AgentProcess(arguments)
        defer { second.kill9() }
        let port2 = try await second.listeningPort()
        try await expectReady(port2, second, "the second process")
        // /readyz turns 200 when the first reconcile committed, a moment before its log line is
        // written: wait for the line (a hang guard), then read what it changed.
        let repairLine = try await second.line("first `reconciled` line") { $0.hasSuffix("[BulkheadAgent] reconciled") }
        let repair = try #require(try? pattern.wholeMatch(in: String(repairLine)), "reconcile line in the README's form: \(repairLine)")
        #expect(Int(repair.output.4)! > 0, "the second process changed the table at its first reconcile: \(repairLine)")
        // Hang guard only: the first reconcile has repaired it by the time /readyz is 200.
        let dropped = try await eventually(10, every: .milliseconds(100)) { try await tcpProbe(from: web, to: db, port: 5432) == .dropped }
        #expect(dropped, "the second agent removed the rule nft inserted: web → db tcp/5432 dropped again")
        #expect(try await KernelTable.listedByNft()?.contains("ip daddr \(db) tcp dport 5432 accept") == false, "the foreign rule is gone")
        #expect(try await tcpProbe(from: web, to: api, port: 8080) == .answered, "control: web → api tcp/8080 answers")
        try second.send(SIGINT)
        let intStatus = await second.waitForExit()
        #expect(intStatus == 0, "SIGINT: exit \(intStatus.map(String.init) ?? "none (still running after 15 s)"); log: \(second.log.suffix(2000))")
        #expect(try await KernelTable.listedByNft() != nil, "the table stays after SIGINT")
        #expect(try await tcpProbe(from: web, to: db, port: 5432) == .dropped, "after SIGINT the denied flow is still dropped")

        kernel.remove()
        #expect(try await KernelTable.listedByNft() == nil, "the table is removed at the end")
    }
}
}

/// What one TCP connection attempt from inside a container did.
enum TCPOutcome: Equatable {
    /// The server answered with its banner.
    case answered
    /// No answer within nc's 1 s: dropped on the way.
    case dropped
    /// Refused, reset or unreachable: the packet got somewhere (for a denied flow, a mismatch).
    case refused(String)
}

/// `nc -w 1` from `container` to `address:port`, telling a drop (timeout) from a refusal.
func tcpProbe(from container: String, to address: IPAddress, port: Int) async throws -> TCPOutcome {
    let r = try await Command.run(["docker", "exec", container, "sh", "-c", "\(proberConnect) \(address) \(port) </dev/null 2>&1"])
    if r.out.contains("ok\(port)") { return .answered }
    if r.out.contains("refused") || r.out.contains("unreachable") || r.out.contains("reset") { return .refused(r.out) }
    return .dropped
}

/// Waits for `/readyz` 200 (30 s: a hang guard) and for the process to still run.
private func expectReady(_ port: Int, _ process: AgentProcess, _ what: String) async throws {
    let ready = try await eventuallyAnswer(port, "/readyz", seconds: 30) { $0.status == 200 }
    #expect(ready.body == "ready\n", "\(what): \(ready)")
    #expect(process.exitStatus == nil, "\(what) exited: \(process.log.suffix(2000))")
}

/// GETs `path` until `accept` holds (hang guard `seconds`); throws with the last answer otherwise.
private func eventuallyAnswer(_ port: Int, _ path: String, seconds: Double = 15,
                              _ accept: @escaping (LoopbackHTTP.Answer) -> Bool) async throws -> LoopbackHTTP.Answer {
    var last: LoopbackHTTP.Answer?
    if try await eventually(seconds, every: .milliseconds(50), {
        last = try await LoopbackHTTP.get(port: port, path: path)
        return accept(last!)
    }) { return last! }
    throw TestSystem.Failure("GET \(path) did not give the awaited answer within \(seconds) s; last: \(String(describing: last))")
}

/// Every metric of the README's table is served, each with the value the scenario implies:
/// one agent process that reconciled `reconciles` times (`operations` operations in all) since
/// `since`, with three managed containers (web, api, db; the fourth is unclassified), Docker up,
/// policies loaded once, no drift, no failures.
private func expectEveryDocumentedMetric(_ s: Scrape, reconciles: Int, operations: Int, since: Date,
                                         sourceLocation: SourceLocation = #_sourceLocation) throws {
    let readme = try String(contentsOfFile: TestSystem.repositoryRoot + "/README.md", encoding: .utf8)
    let table = readme.components(separatedBy: "| metric | type | meaning |\n").dropFirst().first?.components(separatedBy: "\n\n").first ?? ""
    let documented = table.split(separator: "\n").compactMap { line -> String? in
        guard line.hasPrefix("| `bulkhead_") else { return nil }
        return String(line.dropFirst(3).prefix { $0 != "`" && $0 != "{" })
    }
    #expect(documented.count >= 16, "the README's metric table was read: \(documented)", sourceLocation: sourceLocation)
    for name in documented {
        #expect(s.declares(name), "README metric \(name) is not served", sourceLocation: sourceLocation)
    }
    let now = Date().timeIntervalSince1970
    let checks: [(String, Bool)] = [
        ("bulkhead_reconciles_total{result=success} == \(reconciles) (the reconcile log lines)", s.value("bulkhead_reconciles_total", ["result": "success"]) == Double(reconciles)),
        ("bulkhead_reconcile_duration_seconds_count == \(reconciles)", s.value("bulkhead_reconcile_duration_seconds_count") == Double(reconciles)),
        ("bulkhead_last_success_timestamp_seconds within this test", (s.value("bulkhead_last_success_timestamp_seconds") ?? 0) >= since.timeIntervalSince1970 - 1
            && (s.value("bulkhead_last_success_timestamp_seconds") ?? .infinity) <= now + 1),
        ("bulkhead_operations_applied_total == \(operations) (the sum of the log lines' operations) > 0", s.value("bulkhead_operations_applied_total") == Double(operations) && operations > 0),
        ("bulkhead_drift_repairs_total == 0", s.value("bulkhead_drift_repairs_total") == 0),
        ("bulkhead_managed_containers == 3", s.value("bulkhead_managed_containers") == 3),
        ("bulkhead_docker_up == 1", s.value("bulkhead_docker_up") == 1),
        ("bulkhead_policy_errors == 0", s.value("bulkhead_policy_errors") == 0),
        ("bulkhead_policy_reloads_total{result=loaded} == 1", s.value("bulkhead_policy_reloads_total", ["result": "loaded"]) == 1),
        ("bulkhead_http_connections >= 1 (this scrape)", (s.value("bulkhead_http_connections") ?? 0) >= 1),
        ("bulkhead_http_connections_closed_total: every documented reason, 0", ["evicted", "refused", "idle_timeout", "header_timeout", "too_large", "method_not_allowed"]
            .allSatisfy { s.value("bulkhead_http_connections_closed_total", ["reason": $0]) == 0 }),
        ("bulkhead_identity_failures == 0", s.value("bulkhead_identity_failures") == 0),
        ("bulkhead_rejected_addresses == 0", s.value("bulkhead_rejected_addresses") == 0),
        ("bulkhead_port_binding_dropped_packets_total has a series per port-binding rule", s.series("bulkhead_port_binding_dropped_packets_total").keys.contains(["reason": "IPv4 source not the port's"])),
    ]
    for (what, holds) in checks {
        #expect(holds, "\(what)\n\(s.text.split(separator: "\n").filter { !$0.hasPrefix("#") }.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }
}
