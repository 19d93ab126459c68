import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Logging
import Testing

/// A policy directory in a temp folder that tests can edit.
final class PolicyDir: Sendable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("bh-agent-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for name in ["shop.yaml", "monitoring.yaml", "dns.yaml"] {
            try FileManager.default.copyItem(atPath: TestSystem.repositoryRoot + "/policies/" + name, toPath: path + "/" + name)
        }
    }

    func write(_ name: String, _ text: String, atomically: Bool = true) throws {
        try text.write(toFile: path + "/" + name, atomically: atomically, encoding: .utf8)
    }

    func read(_ name: String) throws -> String { try String(contentsOfFile: path + "/" + name, encoding: .utf8) }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

func exampleInventory() throws -> Inventory {
    let (inventory, _) = InventoryLoader.load(path: TestSystem.repositoryRoot + "/policies/inventory.json")
    return try #require(inventory)
}

/// Runs an agent against the fakes for the duration of `body`, then stops it (graceful cancel).
func withAgent(_ dir: PolicyDir, backend: FakeNetfilter, source: FakeContainerSource,
               configure: (inout AgentConfiguration) -> Void = { _ in },
               onListening: @escaping @Sendable (Int) -> Void = { _ in },
               _ body: @Sendable (Agent) async throws -> Void) async throws {
    var config = AgentConfiguration(policyPaths: [dir.path])
    config.listenPort = 0
    config.policyPollInterval = .milliseconds(50)
    config.generationPollInterval = .milliseconds(50)
    config.resyncInterval = .seconds(3600)
    config.minimumBackoff = .milliseconds(20)
    config.maximumBackoff = .milliseconds(100)
    configure(&config)
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    let agent = Agent(configuration: config, backend: backend, source: source, logger: logger, onListening: onListening)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await agent.run() }
        defer { group.cancelAll() }
        try await body(agent)
    }
}

/// Polls `condition` every 10 ms for up to `seconds`.
func eventually(_ seconds: Double = 30, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

func expectedTable(_ dir: PolicyDir, _ inventory: Inventory) -> Table {
    let policies = PolicyLoader.load(paths: [dir.path]).policies
    return Compiler.compiledTable(policies, inventory)
}

import BulkheadCompiler
extension Compiler {
    static func compiledTable(_ p: PolicySet, _ i: Inventory) -> Table { compile(p, i).table }
}

/// True when the fake kernel holds exactly what the policies in `dir` say about `inventory`.
func inSync(_ backend: FakeNetfilter, _ dir: PolicyDir, _ inventory: Inventory) -> Bool {
    guard let live = try? backend.dump(table: Planner.tableID),
          let tx = try? Diff.between(desired: expectedTable(dir, inventory), live: live) else { return false }
    return tx.isEmpty
}

func same(_ a: Table?, _ b: Table?) -> Bool {
    (try? Diff.between(desired: a, live: b, table: Planner.tableID).isEmpty) ?? false
}

@Suite(.serialized) struct AgentBehaviour {
    @Test func enforcesAndBecomesReady() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            #expect(inSync(backend, dir, inventory))
            #expect(agent.metrics.value("bulkhead_reconciles_total", labels: ["result": "success"]) ?? 0 >= 1)
            #expect(agent.metrics.value("bulkhead_managed_containers") == 9)
        }
        // Stopping leaves the rules in place.
        #expect(try backend.dump(table: Planner.tableID) != nil)
    }

    @Test func followsContainerStartsAndStops() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            source.run(Container(name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                 networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && source.currentInventory.containers.count == 10 })
            let set = try backend.dump(table: Planner.tableID)?.set(named: "svc_shop_api_v4")
            #expect(set?.elements.contains(SetElement(.ipv4(IPv4Address("172.20.0.30")!))) == true)
            source.remove("shop-api-3")
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && source.currentInventory.containers.count == 9 })
        }
    }

    @Test func invalidPolicyEditKeepsLastGood() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            let before = try backend.dump(table: Planner.tableID)
            let good = try dir.read("shop.yaml")
            try dir.write("shop.yaml", good.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [5432]"))
            // The failed reload is reported: /readyz says 503 and why, the last good rules stay.
            #expect(await eventually { !agent.isReady })
            #expect(agent.metrics.value("bulkhead_policy_errors") == 1)
            #expect(same(before, try backend.dump(table: Planner.tableID)))
            #expect(agent.readinessProblem().contains("policy reload failed: 1 error"))
            // A valid edit is enforced.
            try dir.write("shop.yaml", good.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [tcp/5433]"))
            #expect(await eventually { inSync(backend, dir, inventory) })
            #expect(agent.metrics.value("bulkhead_policy_errors") == 0)
            #expect(await eventually { agent.isReady })
        }
    }

    @Test func repairsDrift() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            backend.tamper(Planner.tableID) { $0 = nil }  // someone deletes our table
            #expect(await eventually { inSync(backend, dir, inventory) })
            #expect(await eventually { agent.metrics.value("bulkhead_drift_repairs_total") == 1 })
            backend.tamper(Planner.tableID) { t in t?.rules.removeAll { $0.chain == "in_shop_db" } }
            #expect(await eventually { inSync(backend, dir, inventory) })
            #expect(await eventually { agent.metrics.value("bulkhead_drift_repairs_total") == 2 })
        }
    }

    @Test func dockerUnreachableKeepsRulesAndRecovers() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            let before = try backend.dump(table: Planner.tableID)
            source.setFailure(.connectionRefused(path: "/var/run/docker.sock"))
            #expect(await eventually { !agent.isReady })
            // Not programmed from an empty list: the table is exactly as before, after the agent
            // has asked (and failed) twice more (10 s: a hang guard, not a delay).
            let failedFrom = source.snapshotCalls
            #expect(await eventually(10) { source.snapshotCalls >= failedFrom + 2 })
            #expect(same(before, try backend.dump(table: Planner.tableID)))
            #expect(agent.metrics.value("bulkhead_docker_up") == 0)
            let calls = source.snapshotCalls
            try await Task.sleep(for: .milliseconds(300))
            #expect(source.snapshotCalls - calls < 20, "retries back off instead of spinning")
            source.setFailure(nil)
            #expect(await eventually { agent.isReady })
        }
    }

    @Test func neverProgramsWithoutDocker() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        source.setFailure(.socketMissing(path: "/var/run/docker.sock"))
        try await withAgent(dir, backend: backend, source: source) { agent in
            // Waits for the event that matters, not for a guessed delay: the agent has asked
            // Docker for the container list 4 times (the first attempt and 3 retries after their
            // backoff), and every answer was a failure. 10 s is a hang guard.
            let retried = await eventually(10) { source.snapshotCalls >= 4 }
            #expect(retried, "the agent retried the container list: \(source.snapshotCalls) attempts")
            #expect(!agent.isReady)
            #expect(agent.readinessProblem() == "not ready: Docker is unreachable (the last rules stay enforced)")
            let reconciles = agent.metrics.value("bulkhead_reconciles_total", labels: ["result": "success"])
            #expect(reconciles == nil, "no reconcile ran: \(String(describing: reconciles))")
            let table = try backend.dump(table: Planner.tableID)
            #expect(table == nil)
        }
    }

    @Test func burstOfEventsCoalesces() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            let before = agent.metrics.value("bulkhead_reconciles_total", labels: ["result": "success"]) ?? 0
            for i in 0..<50 {
                source.run(Container(name: "burst-\(i)", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "worker"],
                                     networks: ["shop_default": Attachment(ipv4: .v4(0xAC14_1000 + UInt32(i)))]))
            }
            #expect(await eventually { inSync(backend, dir, source.currentInventory) })
            let after = agent.metrics.value("bulkhead_reconciles_total", labels: ["result": "success"]) ?? 0
            #expect(after - before < 150, "50 starts (150 events) coalesce into fewer reconciles: \(after - before)")
        }
    }
}

@Test func metricsRender() {
    let m = MetricsRegistry()
    m.describe("x_total", type: "counter", "An x.")
    m.increment("x_total", labels: ["flow": "a.yaml:3"])
    m.observe("d_seconds", 0.003, buckets: [0.001, 0.01])
    let text = m.render()
    #expect(text.contains("# HELP x_total An x.\n# TYPE x_total counter\nx_total{flow=\"a.yaml:3\"} 1.0\n"))
    #expect(text.contains("d_seconds_bucket{le=\"0.01\"} 1\n"))
    #expect(text.contains("d_seconds_count 1\n"))
}
