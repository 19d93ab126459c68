import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The agent against a real dockerd and the host's own nftables: probes from inside containers
/// equal the evaluator after every step, and no denied flow is ever open.
///
/// The only nftables object these tests touch is the table `inet bulkhead` in the host's initial
/// namespace (where the agent really runs); the tests share it, so they run one at a time, and
/// each removes it at the end, failed or not. They stop and restart dockerd, so no other
/// Docker suite should run at the same time (see `stopDockerd`).
@Suite(.serialized, .enabled(if: DockerE2E.enabled, "needs root and a reachable dockerd (with CI=true it runs, and fails instead)"))
struct AgentAgainstDocker {
    /// Fixed host numbers of the long-lived containers, so dockerd gives them back the same
    /// addresses (and so the same identity) when it restarts them.
    enum Host {
        static let web: UInt8 = 10, api: UInt8 = 11, db: UInt8 = 12, stray: UInt8 = 13, watch: UInt8 = 20
    }

    @Test(.timeLimit(.minutes(10)))
    func enforcesThroughChurnRestartEditsDriftAndDockerOutage() async throws {
        try await DockerE2E.require()
        let network = try await TestNetwork.make()
        defer { network.remove() }
        let policies = try PolicyDirectory(network: network)
        defer { policies.remove() }
        let kernel = KernelTable()
        defer { kernel.remove() }
        note("network \(network.name): \(network.subnetV4), \(network.subnetV6)")

        // The long-lived containers come back when dockerd restarts.
        async let webRun = network.run("web-1", service: "web", fixedHost: Host.web, restart: true)
        async let apiRun = network.run("api-1", service: "api", fixedHost: Host.api, restart: true)
        async let dbRun = network.run("db-1", service: "db", fixedHost: Host.db, restart: true)
        async let strayRun = network.run("stray-1", service: nil, fixedHost: Host.stray, restart: true)
        let (web, api, db, stray) = try await (webRun, apiRun, dbRun, strayRun)
        var good = try policies.load()
        let base = [web, api, db, stray]
        let watch = "\(network.tag)-watch"
        var driftWindow: ClosedRange<Int>?

        // MARK: Agent 1: enforce, then 20 starts and 10 stops.
        try await RunningAgent.with(policies, kernel) { agent in
            try await waitInSync(agent.backend, good, "first reconcile")
            try await expectMatrix("enforced", from: base, network, good)

            // The background prober: a web container that tries denied flows 4 times a second
            // from now to the end of the test (it restarts with dockerd).
            try await network.run("watch", service: "web", command: proberCommand(network), fixedHost: Host.watch, restart: true)

            let clock = ContinuousClock()
            let workers = (1...20).map { "worker-\($0)" }
            let (latency, burst, converged) = try await EventRecorder.during(network) { events in
                let start = clock.now
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for batch in stride(from: 0, to: workers.count, by: 5) {
                        group.addTask {
                            for w in workers[batch..<batch + 5] { try await network.run(w, service: "worker") }
                        }
                    }
                    try await group.waitForAll()
                }
                let burst = clock.now - start
                let converged = try await waitInSync(agent.backend, good, "20 workers started")
                let names = workers.map { "\(network.tag)-\($0)" }
                return (events.commitLatency(names, reports: agent.reports), burst, converged)
            }
            note("20 `docker run`s took \(ms(burst)) (5 at a time); table in sync \(ms(converged)) after the last returned")
            note("Docker start event → rules committed: \(summary(latency.values.map(\.afterStart))) (negative: before start); connect → committed: \(summary(latency.values.map(\.afterConnect)))")
            #expect(latency.count == 20, "commit timing found for \(latency.count) of 20 workers")
            try await expectMatrix("20 workers started", from: base + ["\(network.tag)-worker-1", "\(network.tag)-worker-20"], network, good)

            let stopped = workers.prefix(10).map { "\(network.tag)-\($0)" }
            let stopStart = clock.now
            try await Command.check(["docker", "stop"] + stopped)
            let stopConverged = try await waitInSync(agent.backend, good, "10 workers stopped")
            note("`docker stop` of 10 took \(ms(clock.now - stopStart - stopConverged)); table in sync \(ms(stopConverged)) after")
            try await expectMatrix("10 workers stopped", from: [web, api, stray, "\(network.tag)-worker-11"], network, good)
        }

        // MARK: No agent: the rules stay.
        kernel.release()  // the socket closes, as when the agent process exits
        let orphan = try await KernelTable.listedByNft()
        #expect(orphan != nil, "the table stays when the agent stops")
        note("agent stopped; `nft list table inet bulkhead`: \(orphan == nil ? "absent" : "present, \(orphan!.split(separator: "\n").count) lines")")
        let gap = try await probeMatrix(from: [web, api, "\(network.tag)-worker-11"], network: network, policies: good,
                                        inventory: try await HostAwareSource(DockerClient()).snapshot())
        note("with no agent running: \(gap)")
        #expect(gap.matches, "without an agent the last rules enforce: \(gap)")

        // MARK: Agent 2: adopts the table; edit, break, drift, Docker outage.
        try await RunningAgent.with(policies, kernel) { agent in
            let first = try #require(agent.reports.first)
            note("new agent's first reconcile: \(first.operations) operations (the table was adopted as it was)\(first.script.isEmpty ? "" : ":\n" + first.script)")
            #expect(first.operations == 0, "nothing changed while no agent ran, so the new agent changes nothing")
            // This kernel (and CI's) has table ownership; a kernel without it fails here, saying so,
            // rather than skipping the check (the unowned path has its own tests in CoexistenceTests).
            try #require(agent.backend.ownership == .ownerPersist,
                         "the kernel lacks nftables table ownership (owner: Linux 5.12, persist: 6.9); detected \(agent.backend.ownership)")
            let foreign = try await Command.run(["nft", "delete", "table", "inet", "bulkhead"])
            #expect(foreign.status == 1 && foreign.err.contains("Operation not permitted"),
                    "adopted: another process cannot delete the table while the agent runs (exit \(foreign.status): \(foreign.err))")
            note("`nft delete table inet bulkhead` while the new agent runs: exit \(foreign.status), \(foreign.err.trimmingCharacters(in: .whitespacesAndNewlines).prefix(120))")
            try await waitInSync(agent.backend, good, "after adoption")

            // Edit: a new flow, worker → api tcp/8080, opens within a second or two.
            let worker = "\(network.tag)-worker-11"
            let apiAddress = network.address(Host.api).v4
            #expect(try await probeOnce(from: worker, ProbeKind.web.command(apiAddress)) == false, "worker → api tcp/8080 is denied before the edit")
            let clock = ContinuousClock()
            let edited = clock.now, editedAt = Date()
            try policies.write(flows: PolicyDirectory.baseFlows + "\n" + PolicyDirectory.addedFlow)
            let opened = try await eventually(5, every: .milliseconds(10)) { try await probeOnce(from: worker, ProbeKind.web.command(apiAddress)) }
            let openedAfter = clock.now - edited
            #expect(opened, "the edited policy's new flow opened within 5 s")
            let policyCommit = agent.reports.first { $0.reasons.contains(.policy) && $0.finishedAt > editedAt }
            note("policy edit: committed \(policyCommit.map { String(format: "%.0f ms", $0.finishedAt.timeIntervalSince(editedAt) * 1000) } ?? "?") after the write (poll interval 100 ms); first probe through \(ms(openedAfter)) after")
            good = try policies.load()
            try await waitInSync(agent.backend, good, "policy edited")
            try await expectMatrix("policy edited", from: [worker, web, api, stray], network, good)

            // Break the file: the last good policies stay enforced.
            let goodText = try String(contentsOfFile: policies.file, encoding: .utf8)
            let snapshot = try agent.backend.dump(table: Planner.tableID)
            try policies.write(goodText.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [5432]"))
            let broken = clock.now
            #expect(await eventually(5) { agent.metric("bulkhead_policy_errors") > 0 }, "the broken file is reported")
            note("broken policy file: bulkhead_policy_errors = \(agent.metric("bulkhead_policy_errors")) after \(ms(clock.now - broken)); reloads rejected: \(agent.metric("bulkhead_policy_reloads_total", ["result": "invalid"]))")
            try await Task.sleep(for: .milliseconds(500))
            #expect(try Diff.between(desired: snapshot, live: agent.backend.dump(table: Planner.tableID), table: Planner.tableID).isEmpty,
                    "the table is unchanged while the policy file is broken")
            // The last good policies are enforced, and /readyz says that the files on disk are not.
            let brokenReadyz = try await agent.get("/readyz")
            #expect(brokenReadyz.status == 503 && brokenReadyz.body.contains("policy reload failed: 1 error"), "\(brokenReadyz)")
            try await expectMatrix("policy file broken (last good in force)", from: [worker, web, db], network, good)
            try policies.write(goodText)
            #expect(await eventually(5) { agent.metric("bulkhead_policy_errors") == 0 }, "the fixed file loads again")
            #expect(await eventually(5) { (try? await agent.get("/readyz").status) == 200 }, "ready again once the file is fixed")

            // Drift: our table deleted behind the agent's back.
            let repairsBefore = agent.metric("bulkhead_drift_repairs_total")
            let deletedAt = Int(Date().timeIntervalSince1970)
            let deleted = clock.now
            // With owner|persist the kernel lets only the agent's own socket change the table (the
            // `nft` above was refused), so "someone else" deletes it through that socket. Drift made
            // by another process (`nft`) on an unowned table is in CoexistenceTests
            // (nftRuleInsertedIntoAnUnownedTableIsRepaired) and AgentProcessTests.
            let live = try #require(try agent.backend.dump(table: Planner.tableID))
            var tx = Transaction(table: Planner.tableID, current: live)
            try tx.delete(.table(live.header))
            try agent.backend.apply(tx, expectedGeneration: nil)
            #expect(await eventually(10, every: .milliseconds(5)) { agent.metric("bulkhead_drift_repairs_total") > repairsBefore },
                    "bulkhead_drift_repairs_total increments")
            let repaired = clock.now - deleted
            driftWindow = deletedAt...(Int(Date().timeIntervalSince1970) + 1)
            try await waitInSync(agent.backend, good, "drift repaired")
            note("table deleted behind the agent's back: repaired \(ms(repaired)) later (generation poll 100 ms); bulkhead_drift_repairs_total \(repairsBefore) → \(agent.metric("bulkhead_drift_repairs_total"))")
            try await expectMatrix("drift repaired", from: [worker, web, stray], network, good)

            // Docker outage: the rules stay, readiness turns false, then back.
            #expect(try await agent.get("/readyz").status == 200)
            let outage = clock.now
            let stopTook = try await stopDockerd()
            #expect(await eventually(10) { (try? await agent.get("/readyz").status) == 503 }, "/readyz turns 503 while Docker is down")
            let readyz = try await agent.get("/readyz")
            note("dockerd stopped in \(ms(stopTook)); /readyz \(readyz.status) \(readyz.body.trimmingCharacters(in: .whitespacesAndNewlines)) \(ms(clock.now - outage)) after the stop began")
            #expect(agent.metric("bulkhead_docker_up") == 0)
            // While dockerd shuts down it stops the containers and reports it (die events) — the
            // agent follows those, rightly. From the moment Docker is unreachable, nothing changes.
            let beforeOutage = try agent.backend.dump(table: Planner.tableID)
            let reconcilesDown = agent.metric("bulkhead_reconciles_total", ["result": "success"]) + agent.metric("bulkhead_reconciles_total", ["result": "error"])
            try await Task.sleep(for: .seconds(3))
            let reconcilesAfter = agent.metric("bulkhead_reconciles_total", ["result": "success"]) + agent.metric("bulkhead_reconciles_total", ["result": "error"])
            #expect(try Diff.between(desired: beforeOutage, live: agent.backend.dump(table: Planner.tableID), table: Planner.tableID).isEmpty,
                    "the rules stay exactly as they were while Docker is down")
            #expect(reconcilesAfter - reconcilesDown < 20, "no busy loop while Docker is down: \(reconcilesAfter - reconcilesDown) reconciles in 3 s")
            #expect((try await agent.get("/healthz")).status == 200)
            let restart = clock.now
            try await Command.dockerLib("ensure_dockerd")
            let dockerBack = clock.now - restart
            #expect(await eventually(30) { (try? await agent.get("/readyz").status) == 200 }, "/readyz turns 200 once Docker answers")
            note("dockerd answering \(ms(dockerBack)) after restart; /readyz 200 \(ms(clock.now - restart)) after restart; down for \(ms(restart - outage)) in all")
            for name in [web, api, db, stray, watch] {
                #expect(try await eventually(60, every: .milliseconds(200)) {
                    try await Command.run(["docker", "inspect", "--format", "{{.State.Running}}", name]).out.hasPrefix("true")
                }, "\(name) (--restart always) runs again")
            }
            try await waitInSync(agent.backend, good, "Docker back", seconds: 30)
            // dockerd re-created its chains on the way up (read only: `iptables -S`), ACCEPTs for
            // traffic within each bridge included; the prober, still running, shows they never
            // override our drop (issue 8, item 13).
            let forward = try await Command.run(["iptables", "-S", "FORWARD"])
            #expect(forward.out.contains("-j DOCKER-USER"), "dockerd re-created its FORWARD chain: \(forward.out.prefix(300))")
            note("after the restart iptables FORWARD has \(forward.out.split(separator: "\n").count) rules (\(forward.out.split(separator: "\n").filter { $0.contains("ACCEPT") }.count) ACCEPT)")
            try await expectMatrix("dockerd restarted", from: base, network, good)
        }

        // MARK: The prober never got through a denied flow.
        let log = try await Command.check(["docker", "logs", watch])
        let rounds = log.split(separator: "\n").filter { $0.hasPrefix("ROUND") }.count
        let opens = log.split(separator: "\n").filter { $0.hasPrefix("OPEN") }
        let inWindow = opens.filter { line in
            guard let t = line.split(separator: " ").last.flatMap({ Int($0) }), let w = driftWindow else { return false }
            return w.contains(t)
        }
        let violations = opens.filter { !inWindow.contains($0) }
        let controls = log.split(separator: "\n").filter { $0.hasPrefix("CONTROL") }.count
        note("background prober: \(rounds) rounds × 8 denied probes; \(violations.count) open outside the drift window, \(inWindow.count) while our table was deleted (expected: nothing filters then); positive control (web → api tcp/8080) answered \(controls) of \(rounds * 2)")
        #expect(rounds > 20, "the prober ran")
        #expect(controls > 0, "the prober's positive control (web → api tcp/8080, allowed) never answered: its probes cannot tell open from dropped")
        #expect(violations.isEmpty, "denied flows got through: \(violations)")

        kernel.remove()
        #expect(try await KernelTable.listedByNft() == nil, "the table is removed at the end")
    }

    @Test(.timeLimit(.minutes(5)))
    func containerProbingFromItsEntrypointIsNeverOpen() async throws {
        try await DockerE2E.require()
        let network = try await TestNetwork.make()
        defer { network.remove() }
        let policies = try PolicyDirectory(network: network)
        defer { policies.remove() }
        let kernel = KernelTable()
        defer { kernel.remove() }
        async let dbRun = network.run("db-1", service: "db", fixedHost: Host.db)
        async let apiRun = network.run("api-1", service: "api", fixedHost: Host.api)
        _ = try await (dbRun, apiRun)
        let good = try policies.load()
        let target = network.address(Host.db), api = network.address(Host.api)

        try await RunningAgent.with(policies, kernel) { agent in
            try await waitInSync(agent.backend, good, "first reconcile")
            // 50 attempts 20 ms apart (v4 and v6 each), the first one the container's first
            // instruction; beside each, one attempt at the container's positive control, a target
            // that must answer (`CONTROL i`): web → api tcp/8080 (allowed), worker → db tcp/5432
            // (allowed), and for the unclassified container (no flow is allowed) a server of its
            // own on loopback, so at least its `nc` is shown to work.
            func script(control: String, server: String = "") -> [String] {
                ["sh", "-c", server + "i=0; while [ $i -lt 50 ]; do "
                    + "(\(proberConnect) \(target.v4) 5432 </dev/null 2>/dev/null | grep -q ok5432 && echo \"OPEN4 $i\") & "
                    + "(\(proberConnect) \(target.v6) 5432 </dev/null 2>/dev/null | grep -q ok5432 && echo \"OPEN6 $i\") & "
                    + "(\(control) && echo \"CONTROL $i\") & "
                    + "usleep 20000; i=$((i+1)); done; \(server.isEmpty ? "" : "kill $srv; ")wait; echo DONE"]
            }
            let webScript = script(control: "\(proberConnect) \(api.v4) 8080 </dev/null 2>/dev/null | grep -q ok8080")
            let workerScript = script(control: "\(proberConnect) \(target.v4) 5432 </dev/null 2>/dev/null | grep -q ok5432")
            let strayScript = script(control: "\(proberConnect) 127.0.0.1 9000 </dev/null 2>/dev/null | grep -q ok9000",
                                     server: "nc -ll -p 9000 -e echo ok9000 & srv=$!; ")
            let rounds = 4
            let names = try await EventRecorder.during(network) { events in
                var names: [(denied: [String], allowed: String)] = []
                for round in 1...rounds {
                    // web → db and an unclassified container → db are denied; worker → db is allowed.
                    async let w = network.run("eager-web-\(round)", service: "web", command: webScript)
                    async let s = network.run("eager-stray-\(round)", service: nil, command: strayScript)
                    async let k = network.run("eager-worker-\(round)", service: "worker", command: workerScript)
                    names.append(try await ([w, s], k))
                }
                for (denied, allowed) in names {
                    // `timeout`: a hang guard (a prober whose script never ends would block here forever).
                    for name in denied + [allowed] { try await Command.check(["timeout", "60", "docker", "wait", name]) }
                }
                let latency = events.commitLatency(names.map(\.allowed) + names.flatMap(\.denied), reports: agent.reports)
                note("entrypoint containers: Docker start event → rules committed \(summary(latency.values.map(\.afterStart))) (negative: before start)")
                return names
            }
            var checked = 0
            for (denied, allowed) in names {
                for name in denied + [allowed] {
                    let log = try await Command.check(["docker", "logs", name])
                    let lines = log.split(separator: "\n")
                    let controls = lines.filter { $0.hasPrefix("CONTROL") }.count
                    #expect(log.contains("DONE"), "\(name) ran its probes")
                    #expect(controls > 0, "\(name)'s positive control never answered: its probes cannot tell open from dropped: \(log)")
                    if name == allowed {
                        let first = lines.compactMap { $0.hasPrefix("OPEN4") ? Int($0.split(separator: " ")[1]) : nil }.min()
                        note("\(allowed) (worker → db allowed): first v4 connection at attempt \(first.map(String.init) ?? "none") (\(first.map { "~\($0 * 20) ms" } ?? "-") after its first instruction); \(lines.filter { $0.hasPrefix("OPEN") }.count) of 100 got through")
                        #expect(first != nil, "the allowed worker → db flow opened for \(allowed)")
                    } else {
                        note("\(name): positive control answered \(controls) of 50")
                        #expect(!log.contains("OPEN"), "\(name) reached db-1 from its entrypoint: \(log)")
                    }
                    checked += 1
                }
            }
            #expect(checked == rounds * 3, "every entrypoint prober's log was read")
        }
        kernel.remove()
        #expect(try await KernelTable.listedByNft() == nil, "the table is removed at the end")
    }
}

// MARK: - Helpers

/// Probes from `sources` and expects every answer to equal the evaluator's.
func expectMatrix(_ step: String, from sources: [String], _ network: TestNetwork, _ policies: PolicySet,
                  sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let inventory = try await HostAwareSource(DockerClient()).snapshot()
    let outcome = try await probeMatrix(from: sources, network: network, policies: policies, inventory: inventory)
    note("\(step): \(outcome)")
    #expect(outcome.matches, "\(step): \(outcome)", sourceLocation: sourceLocation)
}

/// One probe command inside `container`; true when it connected.
func probeOnce(from container: String, _ command: String) async throws -> Bool {
    try await Command.run(["docker", "exec", container, "sh", "-c", command]).status == 0
}

/// The watch container: serves like the others, and 4 times a second tries flows the policy in
/// force always denies (web → db on both ports, web → api tcp/5432, web → an unclassified
/// container), printing `OPEN address port epoch-seconds` for any that connects, and the one flow
/// it always allows (web → api tcp/8080, v4 and v6), printing `CONTROL address port epoch-seconds`
/// when it answers: the positive control, without which a broken `nc` would pass as "never open".
func proberCommand(_ network: TestNetwork) -> [String] {
    let db = network.address(AgentAgainstDocker.Host.db), api = network.address(AgentAgainstDocker.Host.api)
    let stray = network.address(AgentAgainstDocker.Host.stray)
    let targets: [(IPAddress, Int)] = [(db.v4, 5432), (db.v6, 5432), (db.v4, 8080), (db.v6, 8080),
                                       (api.v4, 5432), (api.v6, 5432), (stray.v4, 8080), (stray.v6, 5432)]
    let probes = targets.map { a, p in
        "(\(proberConnect) \(a) \(p) </dev/null 2>/dev/null | grep -q ok && echo \"OPEN \(a) \(p) $(date +%s)\") &"
    }.joined(separator: " ")
    let controls = [api.v4, api.v6].map { a in
        "(\(proberConnect) \(a) 8080 </dev/null 2>/dev/null | grep -q ok8080 && echo \"CONTROL \(a) 8080 $(date +%s)\") &"
    }.joined(separator: " ")
    return ["sh", "-c", "trap 'exit 0' TERM; nc -ll -p 5432 -e echo ok5432 & nc -ll -p 8080 -e echo ok8080 & "
            + "n=0; while :; do \(probes) \(controls) n=$((n+1)); echo \"ROUND $n $(date +%s)\"; sleep 0.25; done"]
}

/// The connect half of every background and entrypoint probe (busybox nc with a 1 s timeout).
/// One place, so a broken prober breaks its positive controls too.
let proberConnect = "nc -w 1"

/// Stops dockerd (SIGTERM to the pid in /var/run/docker.pid) and waits until it has exited and
/// the socket no longer answers. Returns how long that took.
///
/// dockerd is shared with anything else on this host: before stopping it, this waits (up to 30 s)
/// for running containers that are not ours (another suite's, a benchmark's) to go away.
func stopDockerd() async throws -> Duration {
    let quiet = await eventually(30, every: .milliseconds(500)) {
        // One line per running container: "=" followed by our label's value (nothing: not ours).
        let lines = (try? await Command.run(["docker", "ps", "--format", "={{.Label \"\(DockerE2E.label)\"}}"]).out) ?? ""
        return !lines.split(separator: "\n").contains("=")
    }
    if !quiet { note("other containers still run on this dockerd; stopping it anyway") }
    let pidText = try String(contentsOfFile: "/var/run/docker.pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    guard let pid = Int32(pidText), pid > 1 else { throw TestSystem.Failure("no dockerd pid in /var/run/docker.pid: '\(pidText)'") }
    let clock = ContinuousClock(), start = clock.now
    guard kill(pid, SIGTERM) == 0 else { throw TestSystem.Failure("kill -TERM \(pid) (dockerd): errno \(errno)") }
    guard await eventually(60, every: .milliseconds(100), { kill(pid, 0) != 0 }) else {
        throw TestSystem.Failure("dockerd (pid \(pid)) did not exit within 60 s of SIGTERM")
    }
    #expect(try await Command.run(["docker", "version", "--format", "{{.Server.Version}}"]).status != 0)
    return clock.now - start
}
