import BulkheadAgent
import BulkheadConntrack
import BulkheadDocker
import BulkheadInventory
import BulkheadRuleset
import Foundation
import Logging
import Synchronization
import Testing

/// Counts the dumps of a `FakeConntrack`.
final class CountingConntrack: ConnectionTracking {
    let fake: FakeConntrack
    private let count = Mutex(0)
    init(_ fake: FakeConntrack) { self.fake = fake }
    var dumps: Int { count.withLock { $0 } }
    func entries() throws(ConntrackError) -> [ConntrackEntry] {
        count.withLock { $0 += 1 }
        return try fake.entries()
    }
    func delete(_ entry: ConntrackEntry) throws(ConntrackError) -> Bool { try fake.delete(entry) }
}

/// The agent cuts, in the reconcile that commits a change, the tracked connections the new
/// policies deny, counts them in `bulkhead_connections_revoked_total`, and never lets a
/// conntrack failure undo the commit.
@Suite(.serialized) struct RevocationAgentTests {
    static func entry(_ from: String, _ to: String, _ port: UInt16) -> ConntrackEntry {
        ConntrackEntry(original: ConntrackTuple(source: IPAddress(from)!, destination: IPAddress(to)!, proto: 6, sourcePort: 40000, destinationPort: port))
    }
    static let apiToDB = entry("172.20.0.3", "172.20.0.6", 5432)       // shop/api -> shop/db: policies/shop.yaml:29
    static let frontendToDB = entry("172.20.0.2", "172.20.0.6", 5432)  // never allowed
    static let frontendToAPI = entry("172.20.0.2", "172.20.0.3", 8080) // shop.yaml:26, stays allowed

    func withRevokingAgent(_ dir: PolicyDir, backend: FakeNetfilter, connections: any ConnectionTracking,
                           source: FakeContainerSource? = nil,
                           _ body: @Sendable (Agent) async throws -> Void) async throws {
        var config = AgentConfiguration(policyPaths: [dir.path])
        config.listenPort = 0
        config.policyPollInterval = .milliseconds(50)
        config.generationPollInterval = .milliseconds(50)
        config.resyncInterval = .seconds(3600)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let agent = Agent(configuration: config, backend: backend, source: try source ?? FakeContainerSource(inventory: try exampleInventory()),
                          logger: logger, connections: connections)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            defer { group.cancelAll() }
            try await body(agent)
        }
    }

    @Test func policyEditCutsTheClosedFlowsConnections() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let connections = FakeConntrack([Self.apiToDB, Self.frontendToDB, Self.frontendToAPI])
        try await withRevokingAgent(dir, backend: backend, connections: connections) { agent in
            #expect(await eventually { agent.isReady })
            // The first commit cuts what the policies never allowed.
            #expect(await eventually { agent.metrics.value("bulkhead_connections_revoked_total") == 1 })
            #expect(connections.table == [Self.apiToDB, Self.frontendToAPI])
            let shop = try dir.read("shop.yaml")
            let edited = shop.replacingOccurrences(of: "  - from: [api, worker]\n    to: db\n    ports: [tcp/5432]\n", with: "")
            #expect(edited != shop)
            try dir.write("shop.yaml", edited)
            #expect(await eventually { agent.metrics.value("bulkhead_connections_revoked_total") == 2 })
            #expect(connections.table == [Self.frontendToAPI])
            #expect(agent.metrics.value("bulkhead_connection_revocation_errors_total") == 0)
            #expect(agent.metrics.render().contains("# TYPE bulkhead_connections_revoked_total counter"))
        }
    }

    @Test func conntrackFailureKeepsTheCommitAndIsCounted() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let connections = FakeConntrack([Self.frontendToDB])
        connections.dumpError = .permissionDenied(operation: "dumping connection tracking")
        try await withRevokingAgent(dir, backend: backend, connections: connections) { agent in
            #expect(await eventually { agent.metrics.value("bulkhead_connection_revocation_errors_total") == 1 })
            #expect(agent.isReady, "a conntrack failure does not make the rules any less enforced")
            let table = try backend.dump(table: TableID(family: .inet, name: "bulkhead"))
            #expect(table != nil)
            #expect(agent.metrics.value("bulkhead_connections_revoked_total") == 0)
            #expect(connections.table == [Self.frontendToDB])
        }
    }

    /// Conntrack is dumped only after a change that can close a flow: a container that arrives
    /// closes nothing (no dump); the same container leaving cuts its connection (one dump).
    @Test func aContainerStartDoesNotDumpConntrack() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let newAPIToDB = Self.entry("172.20.0.30", "172.20.0.6", 5432)  // allowed while shop-api-3 runs
        let connections = CountingConntrack(FakeConntrack([Self.frontendToDB]))
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withRevokingAgent(dir, backend: backend, connections: connections, source: source) { agent in
            #expect(await eventually { agent.isReady && agent.metrics.value("bulkhead_connections_revoked_total") == 1 })
            let dumpsWhenReady = connections.dumps
            #expect(dumpsWhenReady >= 1)
            source.run(Container(name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                 networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && source.currentInventory.containers.count == 10 })
            connections.fake.open(newAPIToDB)
            source.remove("shop-api-3")
            #expect(await eventually { agent.metrics.value("bulkhead_connections_revoked_total") == 2 })
            #expect(connections.fake.table == [])
            #expect(connections.dumps == dumpsWhenReady + 1, "dumps: \(connections.dumps) after \(dumpsWhenReady): the start dumped conntrack")
        }
    }
}
