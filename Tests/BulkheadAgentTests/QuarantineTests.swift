import BulkheadAgent
import BulkheadCompiler
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Logging
import Testing

/// Issue 8, item 4: should one identity still fail to compile, the agent enforces the rest and
/// says so — a log line, a metric and `/readyz` 503 with the reason — never silently.
@Suite(.serialized) struct AgentQuarantine {
    static let yaml = """
    segment: s
    networks: [n]
    services:
      web:
        labels: {role: web}
      admin:
        labels: {team: ops}
      client:
        labels: {role: client}
    flows:
      - from: client
        to: web
        ports: [tcp/80]

    """

    @Test func failedIdentityIsReportedAndTheRestEnforced() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-quarantine-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.yaml.write(toFile: dir + "/s.yaml", atomically: true, encoding: .utf8)
        let n = Network(name: "n", subnets: [IPNetwork("10.75.0.0/24")!], gateways: [IPAddress("10.75.0.1")!])
        let both = Container(name: "both", labels: ["role": "web", "team": "ops"], networks: ["n": Attachment(ipv4: IPAddress("10.75.0.2"))])
        let source = FakeContainerSource(inventory: Inventory(networks: [n], containers: [
            both,
            Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.75.0.3"))]),
            Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.75.0.4"))]),
        ]))
        let backend = FakeNetfilter()
        var config = AgentConfiguration(policyPaths: [dir])
        config.listenPort = 0
        config.policyPollInterval = .milliseconds(50)
        config.generationPollInterval = .milliseconds(50)
        config.resyncInterval = .seconds(3600)
        config.minimumBackoff = .milliseconds(20)
        config.maximumBackoff = .milliseconds(100)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        // A kernel that takes 16-byte names: "in_s_admin__s_web" (17) does not fit.
        var options = Compiler.Options()
        options.limits.objectName = 16
        let agent = Agent(configuration: config, backend: backend, source: source, logger: logger, planner: Planner(options: options))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            defer { group.cancelAll() }
            #expect(await eventually { agent.metrics.value("bulkhead_identity_failures") == 1 })
            #expect(!agent.isReady)
            let problem = agent.readinessProblem()
            #expect(problem.contains("1 identity cannot be programmed (the rest is enforced)") && problem.contains("both") && problem.contains("in_s_admin__s_web"), "\(problem)")
            let live = try #require(try backend.dump(table: Planner.tableID))
            #expect(live.chain(named: "in_s_web") != nil && live.chain(named: ChainName.quarantine.name) != nil)
            #expect(live.set(named: "svc_s_web_v4")?.elements == [SetElement(.ipv4(IPv4Address("10.75.0.4")!))])
            let number = live.set(named: "identity_v4")?.elements.first { $0.key == [.value(.ipv4(IPv4Address("10.75.0.2")!))] }?.data
            guard case .value(let n)? = number else { Issue.record("10.75.0.2 has no identity number: \(String(describing: number))"); return }
            #expect(live.set(named: "dispatch_ingress")?.elements.contains(SetElement(n, .verdict(.jump(ChainName.quarantine.name)))) == true)
            // The container goes: everything fits again, and readiness comes back.
            source.remove("both")
            #expect(await eventually { agent.isReady })
            #expect(agent.metrics.value("bulkhead_identity_failures") == 0)
        }
    }

    /// Issue 8, item 9, in the agent: addresses Docker reports that lie outside the network's
    /// subnets, claim the gateway or are claimed twice are enrolled for nobody, and counted.
    @Test func lyingAddressesAreNotEnrolled() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-lying-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.yaml.write(toFile: dir + "/s.yaml", atomically: true, encoding: .utf8)
        let n = Network(name: "n", subnets: [IPNetwork("10.78.0.0/24")!], gateways: [IPAddress("10.78.0.1")!])
        func at(_ a: String) -> [String: BulkheadInventory.Attachment] { ["n": Attachment(ipv4: IPAddress(a))] }
        let source = FakeContainerSource(inventory: Inventory(networks: [n], containers: [
            Container(name: "web", labels: ["role": "web"], networks: at("10.78.0.4")),
            Container(name: "outside", labels: ["role": "web"], networks: at("8.8.8.8")),
            Container(name: "gateway", labels: ["role": "web"], networks: at("10.78.0.1")),
            Container(name: "twin-a", labels: ["role": "client"], networks: at("10.78.0.7")),
            Container(name: "twin-b", labels: ["role": "web"], networks: at("10.78.0.7")),
        ]))
        let backend = FakeNetfilter()
        var config = AgentConfiguration(policyPaths: [dir])
        config.listenPort = 0
        config.policyPollInterval = .milliseconds(50)
        config.resyncInterval = .seconds(3600)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let agent = Agent(configuration: config, backend: backend, source: source, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            defer { group.cancelAll() }
            #expect(await eventually { agent.isReady })
            #expect(agent.metrics.value("bulkhead_rejected_addresses") == 4)
            let live = try #require(try backend.dump(table: Planner.tableID))
            let enrolled = live.sets.flatMap { s in s.elements.compactMap { $0.key.first?.low } }
            for forged in ["8.8.8.8", "10.78.0.1", "10.78.0.7"] {
                #expect(!enrolled.contains(.ipv4(IPv4Address(forged)!)), "\(forged)")
            }
            #expect(live.set(named: "svc_s_web_v4")?.elements == [SetElement(.ipv4(IPv4Address("10.78.0.4")!))])
        }
    }
}
