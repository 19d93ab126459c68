import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Logging
import Synchronization

/// The policies of one test, in a temp directory the agent watches.
///
/// Services of compose project `network.project`: web, api, db and worker; every container of
/// the project runs the same servers (tcp/5432 and tcp/8080), so a probe only tells the policy.
final class PolicyDirectory: Sendable {
    let path: String
    let file: String
    let network: TestNetwork

    init(network: TestNetwork) throws {
        self.network = network
        path = FileManager.default.temporaryDirectory.appendingPathComponent("bh-e2e-\(network.tag)").path
        file = path + "/segment.yaml"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try write(flows: Self.baseFlows)
    }

    static let baseFlows = """
          - from: web
            to: api
            ports: [tcp/8080, icmp]
          - from: [api, worker]
            to: db
            ports: [tcp/5432]
        """

    /// The flow the edit step adds.
    static let addedFlow = """
          - from: worker
            to: api
            ports: [tcp/8080]
            description: added by the edit step
        """

    func text(flows: String) -> String {
        func service(_ name: String) -> String {
            "  \(name):\n    labels: {com.docker.compose.project: \(network.project), com.docker.compose.service: \(name)}\n"
        }
        return "segment: \(network.project)\ndescription: agent end-to-end test\nnetworks: [\(network.name)]\nservices:\n"
            + ["web", "api", "db", "worker"].map(service).joined() + "flows:\n" + flows + "\n"
    }

    func write(flows: String) throws { try write(text(flows: flows)) }

    /// Replaces the file (rename over it, as editors do).
    func write(_ text: String) throws {
        try text.write(toFile: file, atomically: true, encoding: .utf8)
    }

    /// The policies on disk; throws when they do not load cleanly.
    func load() throws -> PolicySet {
        let loaded = PolicyLoader.load(paths: [path])
        let errors = loaded.diagnostics.filter { $0.severity == .error }
        guard errors.isEmpty else { throw TestSystem.Failure("test policies invalid: \(errors.map(\.formatted))") }
        return loaded.policies
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The kernel side: the one netlink socket (and so, with owner|persist, the table's owner) each
/// agent generation uses, and the removal of the table at the end of a test.
final class KernelTable: Sendable {
    private let current = Mutex<NetlinkNetfilter?>(nil)

    /// A new socket for a new agent; the previous one is released (its table becomes orphaned
    /// and adoptable, as when the agent process exits).
    func newBackend() throws -> NetlinkNetfilter {
        current.withLock { $0 = nil }
        let backend = try NetlinkNetfilter()
        current.withLock { $0 = backend }
        return backend
    }

    func release() { current.withLock { $0 = nil } }

    /// Removes `inet bulkhead` (what `bulkhead uninstall` does) through the last agent's socket,
    /// which is the only one the kernel lets change an owned table. Never throws: runs in `defer`.
    func remove() {
        let backend = current.withLock { $0 } ?? (try? NetlinkNetfilter())
        guard let backend else { return }
        // Both tables: `inet bulkhead` and the port binding's `bridge bulkhead`.
        var txs: [Transaction] = []
        for id in [Planner.tableID, Planner.bridgeTableID] {
            guard let live = try? backend.dump(table: id) else { continue }
            var tx = Transaction(table: id, current: live)
            do {
                try tx.delete(.table(live.header))
                txs.append(tx)
            } catch {
                print("[e2e] cannot plan the removal of table \(id): \(error)")
            }
        }
        do {
            if !txs.isEmpty { try backend.apply(txs, expectedGeneration: nil) }
        } catch {
            print("[e2e] could not remove our tables: \(error) — run `bulkhead uninstall`")
        }
        current.withLock { $0 = nil }
    }

    /// `nft list table inet bulkhead` as an independent oracle: nil when the table is absent.
    static func listedByNft() async throws -> String? {
        let r = try await Command.run(["nft", "list", "table", "inet", "bulkhead"])
        return r.status == 0 ? r.out : nil
    }
}

/// One running agent and what it reported.
final class RunningAgent: Sendable {
    let agent: Agent
    let backend: NetlinkNetfilter
    private let recorded = Recorded()

    /// What the agent's callbacks hand over (a class: the callbacks capture it before `self` exists).
    private final class Recorded: Sendable {
        let port = Mutex<Int?>(nil)
        let reports = Mutex<[ReconcileReport]>([])
    }

    init(policies: PolicyDirectory, backend: NetlinkNetfilter) {
        var config = AgentConfiguration(policyPaths: [policies.path])
        config.listenPort = 0
        config.policyPollInterval = .milliseconds(100)
        config.generationPollInterval = .milliseconds(100)
        config.resyncInterval = .seconds(5)
        config.minimumBackoff = .milliseconds(50)
        config.maximumBackoff = .milliseconds(800)
        var logger = Logger(label: "bulkhead.agent.e2e")
        // BULKHEAD_E2E_LOG=info shows one line per reconcile (with its duration).
        logger.logLevel = ProcessInfo.processInfo.environment["BULKHEAD_E2E_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        self.backend = backend
        let recorded = self.recorded
        agent = Agent(configuration: config, backend: backend, source: HostAwareSource(DockerClient(), portFinder: NetlinkPortFinder(), logger: logger), logger: logger,
                      onListening: { p in recorded.port.withLock { $0 = p } },
                      onReconciled: { r in recorded.reports.withLock { $0.append(r) } })
    }

    var port: Int? { recorded.port.withLock { $0 } }
    var reports: [ReconcileReport] { recorded.reports.withLock { $0 } }

    func metric(_ name: String, _ labels: [String: String] = [:]) -> Double { agent.metrics.value(name, labels: labels) ?? 0 }

    func get(_ path: String) async throws -> LoopbackHTTP.Answer {
        guard let port else { throw TestSystem.Failure("the agent is not listening yet") }
        return try await LoopbackHTTP.get(port: port, path: path)
    }

    /// Runs an agent on a new socket until `body` returns, then cancels it (the rules stay).
    static func with<T>(_ policies: PolicyDirectory, _ kernel: KernelTable,
                        _ body: (RunningAgent) async throws -> T) async throws -> T {
        let running = RunningAgent(policies: policies, backend: try kernel.newBackend())
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await running.agent.run() }
            defer { group.cancelAll() }
            let clock = ContinuousClock(), start = clock.now
            guard await eventually(30, { running.port != nil && running.agent.isReady }) else {
                throw TestSystem.Failure("the agent did not become ready within 30 s (port \(String(describing: running.port)))")
            }
            note("agent ready \(ms(clock.now - start)) after start (first reconcile: \(running.reports.first.map { "\($0.operations) operations, \(String(format: "%.1f", $0.seconds * 1000)) ms" } ?? "?"))")
            return try await body(running)
        }
    }
}

/// True when the kernel's table holds what the policies say about what Docker runs now: the same
/// members per service and the same allowed flows (host-address sets aside: other suites' bridges
/// come and go on this host).
func inSync(_ backend: NetlinkNetfilter, _ policies: PolicySet) async throws -> Bool {
    let inventory = try await HostAwareSource(DockerClient()).snapshot()
    let plan = try Planner().plan(policies: policies, inventory: inventory, backend: backend)
    return plan.live != nil && plan.membership.isEmpty && plan.opened.isEmpty && plan.closed.isEmpty
}

/// Waits for `inSync`, failing with what differs after `seconds`; returns how long it took.
@discardableResult
func waitInSync(_ backend: NetlinkNetfilter, _ policies: PolicySet, _ what: String, seconds: Double = 15) async throws -> Duration {
    let clock = ContinuousClock(), start = clock.now
    guard try await eventually(seconds, every: .milliseconds(25), { try await inSync(backend, policies) }) else {
        let inventory = try await HostAwareSource(DockerClient()).snapshot()
        let plan = try Planner().plan(policies: policies, inventory: inventory, backend: backend)
        throw TestSystem.Failure("\(what): the table did not converge within \(seconds) s: membership \(plan.membership), opened \(plan.opened.map(\.grant)), closed \(plan.closed.map(\.grant))")
    }
    return clock.now - start
}

/// Progress lines in the test output (timings for the report), on unbuffered stderr so they
/// survive a test process that is killed.
func note(_ line: String) { FileHandle.standardError.write(Data("[e2e] \(line)\n".utf8)) }
