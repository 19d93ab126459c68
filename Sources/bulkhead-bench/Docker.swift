// Issue 5 benchmarks against the real dockerd, driven from scripts/bench/agent.sh:
//
//   bulkhead-bench docker BULKHEAD_BIN IMAGE
//
// (a) 100 sequential `docker run`: Docker's `start` event -> the agent's commit (in-process agent,
//     onReconciled), beside `docker run`'s own wall time;
// (b) a burst of 50 concurrent `docker run`: last `start` event -> the commit holding all 50;
// (c) 200 running containers: the real `bulkhead agent` process, idle CPU and RSS over 20 s.
//
// The agents program fresh network namespaces (--netns), never the host's ruleset: Docker's
// traffic is not what is measured here, the agent's path from event to commit is. Every
// container and the network are named bh-bench-PID-* and removed at the end.
import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadLayout
import BulkheadNetfilter
import BulkheadRuleset
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

final class Recorder: Sendable {
    let reports = Mutex<[ReconcileReport]>([])
    let events = Mutex<[String: [DockerEvent.Action: Int64]]>([:])
}

func runQuiet(_ args: [String]) -> ChildResult { runChild(args) }

/// What to remove when the benchmark ends, also through `fail` (exit): containers, the network,
/// the agent process, the policy directory.
nonisolated(unsafe) var dockerLeftovers = (names: [String](), network: "", agentPID: pid_t(0), policyDir: "")

func cleanUpDocker() {
    let l = dockerLeftovers
    dockerLeftovers = ([], "", 0, "")
    if l.agentPID > 0 { stopChild(l.agentPID) }
    var i = 0
    while i < l.names.count {
        _ = runQuiet(["docker", "rm", "-f"] + l.names[i..<min(i + 50, l.names.count)])
        i += 50
    }
    if !l.network.isEmpty { _ = runQuiet(["docker", "network", "rm", l.network]) }
    if !l.policyDir.isEmpty { try? FileManager.default.removeItem(atPath: l.policyDir) }
}

func dockerBenchmarks(_ args: [String]) async throws {
    guard args.count == 2 else { fail("usage: bulkhead-bench docker BULKHEAD_BIN IMAGE") }
    let bulkhead = args[0], image = args[1]
    let prefix = "bh-bench-\(getpid())"
    let network = "\(prefix)-net"
    let policyDir = NSTemporaryDirectory() + prefix + "-policies"
    try FileManager.default.createDirectory(atPath: policyDir, withIntermediateDirectories: true)
    try """
    segment: bench
    networks: [\(network)]
    services:
      a:
        labels: {bulkhead.bench: a}
      b:
        labels: {bulkhead.bench: b}
    flows:
      - from: a
        to: b
        ports: [tcp/80]

    """.write(toFile: policyDir + "/bench.yaml", atomically: true, encoding: .utf8)
    var names: [String] = [] {
        didSet { dockerLeftovers.names = names }
    }
    var agentPID: pid_t = 0 {
        didSet { dockerLeftovers.agentPID = agentPID }
    }
    dockerLeftovers.policyDir = policyDir
    atexit { cleanUpDocker() }
    defer { cleanUpDocker() }
    dockerLeftovers.network = network
    guard runQuiet(["docker", "network", "create", "--subnet", "10.213.0.0/16", network]).status == 0 else {
        fail("docker network create \(network) failed (is 10.213.0.0/16 in use?)")
    }

    // In-process agent on a fresh namespace, and our own event subscription for the timestamps.
    let recorder = Recorder()
    let client = try DockerClient(endpoint: "unix://" + DockerEndpoint.defaultSocketPath)
    let eventTask = Task {
        for try await e in client.events(since: nil) {
            guard let name = e.containerName, name.hasPrefix(prefix) else { continue }
            recorder.events.withLock { $0[name, default: [:]][e.action] = e.timeNano }
        }
    }
    defer { eventTask.cancel() }
    let ns = freshNamespace()
    var config = AgentConfiguration(policyPaths: [policyDir])
    config.listenPort = 0
    var logger = Logger(label: "bench.agent")
    logger.logLevel = .warning
    let agent = Agent(configuration: config, backend: try NetlinkNetfilter(namespace: ns), source: HostAwareSource(client),
                      logger: logger, onReconciled: { r in recorder.reports.withLock { $0.append(r) } })
    let agentTask = Task { try await agent.run() }
    defer { agentTask.cancel() }
    func waitFor(_ deadline: Duration, _ condition: () -> Bool) async -> Bool {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return condition()
    }
    guard await waitFor(.seconds(20), { agent.isReady }) else { fail("docker bench: the agent never became ready") }

    /// When the first commit whose inventory holds every one of `wanted` finished (ns since 1970).
    func committed(_ wanted: [String]) -> Int64? {
        recorder.reports.withLock { reports in
            reports.first { r in r.operations > 0 && Set(r.containers).isSuperset(of: wanted) }
                .map { Int64($0.finishedAt.timeIntervalSince1970 * 1e9) }
        }
    }
    @Sendable func run(_ name: String, service: String) -> ChildResult {
        runChild(["docker", "run", "-d", "--name", name, "--network", network, "--label", "bulkhead.bench=\(service)", image, "sleep", "3600"])
    }

    // (a) 100 sequential starts.
    var latency: [Double] = [], connectLatency: [Double] = [], dockerRun: [Double] = [], createToStart: [Double] = []
    for i in 0..<100 {
        let name = "\(prefix)-seq-\(i)"
        names.append(name)
        let r = run(name, service: i % 2 == 0 ? "a" : "b")
        guard r.status == 0 else { fail("docker run \(name) failed") }
        dockerRun.append(r.wall * 1000)
        guard await waitFor(.seconds(5), { committed([name]) != nil && recorder.events.withLock { $0[name]?[.start] != nil } }),
              let done = committed([name]), let ev = recorder.events.withLock({ $0[name] }), let start = ev[.start] else {
            fail("docker bench: \(name) was never committed (or no start event)")
        }
        latency.append(Double(done - start) / 1e6)
        if let connect = ev[.connect] { connectLatency.append(Double(done - connect) / 1e6) }
        if let create = ev[.create] { createToStart.append(Double(start - create) / 1e6) }
    }
    latency.sort(); connectLatency.sort(); dockerRun.sort(); createToStart.sort()
    json([("bench", "agent.start_to_commit"), ("impl", "bulkhead agent"), ("starts", latency.count),
          ("median_ms", percentile(latency, 0.5)), ("p99_ms", percentile(latency, 0.99)),
          ("min_ms", latency.first!), ("max_ms", latency.last!),
          ("committed_before_start", latency.filter { $0 <= 0 }.count),
          ("connect_to_commit_median_ms", percentile(connectLatency, 0.5)), ("connect_to_commit_p99_ms", percentile(connectLatency, 0.99)),
          ("target", "<= 10 ms median, <= 50 ms p99")])
    json([("bench", "agent.start_to_commit"), ("impl", "docker itself"), ("docker_run_median_ms", percentile(dockerRun, 0.5)),
          ("docker_run_p99_ms", percentile(dockerRun, 0.99)), ("create_to_start_event_median_ms", percentile(createToStart, 0.5))])

    // (b) a burst of 50 starts: create them first (not timed), then start all 50 at once through
    // the API (50 concurrent curl POSTs; 50 docker CLIs at once swamp dockerd on two cores).
    // Converged = the kernel's managed_v4 set (read over netlink every 5 ms) holds every address.
    let burst = (0..<50).map { "\(prefix)-burst-\($0)" }
    names += burst
    await withTaskGroup(of: Void.self) { group in
        for (i, name) in burst.enumerated() {
            group.addTask {
                _ = runChild(["docker", "create", "--name", name, "--network", network, "--label", "bulkhead.bench=\(i % 2 == 0 ? "a" : "b")", image, "sleep", "3600"])
            }
            if i % 8 == 7 { await group.next() }
        }
    }
    let watcher = try NetlinkNetfilter(namespace: ns)
    func managedCount() -> Int {
        ((try? watcher.dump(table: Planner.tableID))??.set(named: SetName.managed(.v4).name)?.elements.count) ?? -1
    }
    let expected = latency.count + burst.count
    let burstStart = ContinuousClock.now
    await withTaskGroup(of: Void.self) { group in
        for name in burst {
            group.addTask {
                _ = runChild(["curl", "-sf", "-o", "/dev/null", "--unix-socket", DockerEndpoint.defaultSocketPath, "-X", "POST", "http://docker/containers/\(name)/start"])
            }
        }
    }
    let burstWall = seconds(ContinuousClock.now - burstStart)
    var convergedAt: Int64?
    _ = await waitFor(.seconds(60)) {
        if managedCount() >= expected { convergedAt = Int64(Date().timeIntervalSince1970 * 1e9); return true }
        return false
    }
    _ = await waitFor(.seconds(10)) { recorder.events.withLock { ev in burst.allSatisfy { ev[$0]?[.start] != nil } } }
    let starts = recorder.events.withLock { ev in burst.compactMap { ev[$0]?[.start] } }
    guard let convergedAt, let lastStart = starts.max(), let firstStart = starts.min() else {
        fail("docker bench: the burst never converged (managed_v4 has \(managedCount()) of \(expected); \(starts.count) start events)")
    }
    json([("bench", "agent.burst_50_starts"), ("impl", "bulkhead agent"), ("starts", starts.count),
          ("converged_after_last_start_ms", Double(convergedAt - lastStart) / 1e6),
          ("start_events_spread_ms", Double(lastStart - firstStart) / 1e6), ("api_wall_s", burstWall),
          ("reconciles_so_far", recorder.reports.withLock { $0.count }), ("target", "<= 1000 ms after the last event")])
    agentTask.cancel()

    // (c) 200 running containers, the real agent process.
    let more = (0..<50).map { "\(prefix)-idle-\($0)" }
    names += more
    await withTaskGroup(of: Void.self) { group in
        for (i, name) in more.enumerated() {
            group.addTask { _ = run(name, service: i % 2 == 0 ? "a" : "b") }
            if i % 8 == 7 { await group.next() }
        }
    }
    let ns2 = freshNamespace()
    let port = 19_641 + Int(getpid() % 1000)
    let log = NSTemporaryDirectory() + prefix + "-agent.log"
    defer { unlink(log) }
    agentPID = startChild([bulkhead, "agent", "--policies", policyDir, "--netns", ns2, "--listen", "127.0.0.1:\(port)"],
                          stdout: .null, stderr: .file(log))
    let ready = await waitFor(.seconds(30)) {
        runChild(["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:\(port)/readyz"]).status == 0
    }
    guard ready else { fail("bulkhead agent never became ready (log: \(log))") }
    let running = names.count
    try await Task.sleep(for: .seconds(3))
    func procStat() -> (ticks: Int, rssKiB: Int, hwmKiB: Int) {
        let stat = (try? String(contentsOfFile: "/proc/\(agentPID)/stat", encoding: .utf8)) ?? ""
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        // after "pid (comm)": state is field 0, utime 11, stime 12
        let ticks = fields.count > 12 ? (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0) : 0
        let status = (try? String(contentsOfFile: "/proc/\(agentPID)/status", encoding: .utf8)) ?? ""
        func kib(_ key: String) -> Int {
            status.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        }
        return (ticks, kib("VmRSS:"), kib("VmHWM:"))
    }
    let before = procStat()
    let window = 20.0
    try await Task.sleep(for: .seconds(window))
    let after = procStat()
    let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
    let cpu = Double(after.ticks - before.ticks) / hz / window
    json([("bench", "agent.idle_200_containers"), ("impl", "bulkhead agent process"), ("containers", running),
          ("window_s", window), ("cpu_fraction_of_one_core", cpu), ("rss_mb", Double(after.rssKiB) / 1024),
          ("peak_rss_mb", Double(after.hwmKiB) / 1024), ("target", "CPU about 0, RSS <= 60 MB")])
}
