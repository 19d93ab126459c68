// Issue 10 item 8, "agent at scale", driven from scripts/bench/agent-scale.sh:
//
//   bulkhead-bench agent-scale [EVENTS [SEED]]
//
// The agent (`Agent` from BulkheadAgent, in this process, exactly as `bulkhead agent` runs it but
// with a `GeneratedSource` for Docker: 10,000 containers of 1,000 services, 100 policy files on
// disk) programs a fresh network namespace through netlink. Measured:
// (a) source event -> the agent's commit (its onReconciled, after the kernel's ack), over EVENTS
//     changes drawn from the seed (a replica added or a container removed), one at a time;
// (b) CPU time of a periodic resync that finds nothing changed: from the resync's full snapshot
//     (the source marks it) to its reconcile's end; the process does nothing else meanwhile;
// (c) CPU of the idle agent over 20 s between two resyncs, and the process's peak RSS.
import BulkheadAgent
import BulkheadEngine
import BulkheadNetfilter
import BulkheadSource
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// User + system CPU seconds of this process so far.
func processCPUSeconds() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
}

/// VmRSS and VmHWM (peak) of this process, in MiB. (The kernel updates VmHWM lazily: it can read
/// a little below a VmRSS read earlier, so the peak reported is the larger of the two.)
func residentMiB() -> (now: Double, peak: Double) {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    func kib(_ key: String) -> Double {
        status.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
    }
    return (kib("VmRSS:") / 1024, kib("VmHWM:") / 1024)
}

/// Ends the benchmark with an error when a phase has not finished by its deadline (a hang guard:
/// the waits below are on the agent's reports, which never come if it is stuck).
final class PhaseGuard: Sendable {
    private let phase = Mutex<(name: String, deadline: ContinuousClock.Instant)>(("start", .now + .seconds(120)))
    init() {
        Thread.detachNewThread { [self] in
            while true {
                sleep(1)
                let (name, deadline) = phase.withLock { $0 }
                if ContinuousClock.now > deadline { fail("agent-scale: phase '\(name)' did not finish in time") }
            }
        }
    }
    func enter(_ name: String, within limit: Duration) { phase.withLock { $0 = (name, .now + limit) } }
}

struct ScaleReport: Sendable {
    var at: ContinuousClock.Instant
    var cpu: Double
    var report: ReconcileReport
}

func agentScale(_ args: [String]) async throws {
    let eventCount = args.first.flatMap { Int($0) } ?? 200
    let seed = args.dropFirst().first.flatMap { UInt64($0) } ?? 10
    guard eventCount >= 1 else { fail("usage: bulkhead-bench agent-scale [EVENTS [SEED]]") }
    let phases = PhaseGuard()

    /// (clock, CPU seconds) at the start of each full snapshot the agent takes.
    let snapshots = Mutex<[(at: ContinuousClock.Instant, cpu: Double)]>([])
    let source = GeneratedSource(seed: seed, onSnapshot: { snapshots.withLock { $0.append((.now, processCPUSeconds())) } })
    let policyDir = NSTemporaryDirectory() + "bh-scale-\(getpid())-policies"
    try FileManager.default.createDirectory(atPath: policyDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    defer { try? FileManager.default.removeItem(atPath: policyDir) }
    for (name, yaml) in source.policyFiles() {
        guard FileManager.default.createFile(atPath: policyDir + "/" + name, contents: Data(yaml.utf8), attributes: [.posixPermissions: 0o644]) else {
            fail("cannot write \(policyDir)/\(name)")
        }
    }

    // What the generated host itself holds, before any agent: the rest of the peak is the agent's.
    let beforeAgent = residentMiB().now
    let ns = freshNamespace()
    var config = AgentConfiguration(policyPaths: [policyDir])
    config.listenPort = 0
    let resyncInterval = config.resyncInterval  // the default, as `bulkhead agent` runs
    var logger = Logger(label: "bench.agent-scale")
    logger.logLevel = .info
    let (reports, feed) = AsyncStream<ScaleReport>.makeStream()
    let agent = Agent(configuration: config, backend: try NetlinkNetfilter(namespace: ns), source: source, logger: logger,
                      onReconciled: { r in feed.yield(ScaleReport(at: .now, cpu: processCPUSeconds(), report: r)) })
    var next = reports.makeAsyncIterator()
    func nextReport() async -> ScaleReport {
        guard let r = await next.next() else { fail("agent-scale: the report stream ended") }
        return r
    }

    // Start-up: the first reconcile that programs the 10,000 containers.
    phases.enter("start-up", within: .seconds(120))
    let started = ContinuousClock.now, cpuAtStart = processCPUSeconds()
    let agentTask = Task { try await agent.run() }
    defer { agentTask.cancel() }
    var first = await nextReport()
    while first.report.containers.count != source.containerCount { first = await nextReport() }
    json([("bench", "agent.scale_startup"), ("impl", "bulkhead agent"), ("containers", source.containerCount),
          ("services", source.shape.services), ("wall_s", seconds(first.at - started)), ("cpu_s", first.cpu - cpuAtStart),
          ("operations", first.report.operations)])

    // (a) event -> commit, one change at a time.
    phases.enter("events", within: .seconds(Int64(30 + eventCount * 10)))
    var latency: [Double] = [], reconcile: [Double] = [], cpuPerEvent: [Double] = []
    var adds = 0, removes = 0, withResync = 0
    for _ in 0..<eventCount {
        let t0 = ContinuousClock.now, cpu0 = processCPUSeconds()
        let (event, container) = source.step()
        let added = event.kind == .added
        if added { adds += 1 } else { removes += 1 }
        while true {
            let r = await nextReport()
            // The first commit whose inventory reflects the change (names of added replicas are
            // never reused, so presence tells).
            guard r.report.containers.contains(container.name) == added else { continue }
            latency.append(seconds(r.at - t0) * 1000)
            reconcile.append(r.report.seconds * 1000)
            cpuPerEvent.append((r.cpu - cpu0) * 1000)
            if r.report.reasons.contains(.resync) { withResync += 1 }
            break
        }
    }
    latency.sort(); reconcile.sort(); cpuPerEvent.sort()
    json([("bench", "agent.scale_event_to_commit"), ("impl", "bulkhead agent"), ("containers", source.containerCount),
          ("services", source.shape.services), ("events", latency.count), ("adds", adds), ("removes", removes),
          ("median_ms", percentile(latency, 0.5)), ("p99_ms", percentile(latency, 0.99)), ("max_ms", latency.last!),
          ("reconcile_median_ms", percentile(reconcile, 0.5)), ("cpu_per_event_median_ms", percentile(cpuPerEvent, 0.5)),
          ("events_meeting_a_resync", withResync), ("target", "median <= 5 ms, p99 <= 20 ms")])

    // (b) + (c): the next periodic resync, 20 s idle, the resync after.
    func resync() async -> (cpuMs: Double, wallMs: Double, operations: Int) {
        while true {
            let r = await nextReport()
            guard r.report.reasons.contains(.resync) else { continue }
            guard let mark = snapshots.withLock({ $0.last }) else { fail("agent-scale: a resync without a snapshot") }
            return ((r.cpu - mark.cpu) * 1000, seconds(r.at - mark.at) * 1000, r.report.operations)
        }
    }
    phases.enter("first resync", within: resyncInterval + .seconds(60))
    let resync1 = await resync()
    phases.enter("idle", within: .seconds(60))
    let window = 20.0
    let idleCPU0 = processCPUSeconds()
    try await Task.sleep(for: .seconds(window))
    let idleCPU = (processCPUSeconds() - idleCPU0) / window
    let memory = residentMiB()
    phases.enter("second resync", within: resyncInterval + .seconds(60))
    let resync2 = await resync()
    let resyncs = [resync1, resync2]
    json([("bench", "agent.scale_resync_unchanged"), ("impl", "bulkhead agent"), ("containers", source.containerCount),
          ("resyncs", resyncs.count), ("cpu_ms", resyncs.map(\.cpuMs).max()!), ("cpu_ms_each", resyncs.map { String(format: "%.1f", $0.cpuMs) }.joined(separator: "/")),
          ("wall_ms_max", resyncs.map(\.wallMs).max()!), ("operations", resyncs.map(\.operations).reduce(0, +)),
          ("interval_s", seconds(resyncInterval)), ("target", "<= 300 ms CPU")])
    json([("bench", "agent.scale_idle"), ("impl", "bulkhead agent"), ("containers", source.containerCount),
          ("window_s", window), ("cpu_fraction_of_one_core", idleCPU), ("rss_mb", memory.now), ("peak_rss_mb", max(memory.now, residentMiB().peak)),
          ("rss_before_agent_mb", beforeAgent),
          ("target", "CPU about 0 between resyncs, peak RSS <= 150 MB")])
    phases.enter("stop", within: .seconds(30))
    agentTask.cancel()
    _ = try? await agentTask.value
}
