import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadNetfilter
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Logging
import Testing

/// The agent against the real kernel of a throwaway namespace, with a table it did not create.
@Suite(.serialized, .enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct AgentKernelTests {
    /// A dormant `inet bulkhead` table without owner flags, holding a rule Bulkhead never writes
    /// (restored from a saved ruleset, say): the agent's adoption (NEWTABLE owner|persist) was
    /// refused with EOPNOTSUPP on every reconcile, so it never enforced anything. Now it replaces
    /// the table in one transaction, logs that it did, and the result is owned, awake and exact.
    @Test func replacesADormantTableItDidNotCreate() async throws {
        try await TestSystem.withNamespaceAsync(prefix: "bh-agent") { ns in
            try TestSystem.nft(["-f", "-"], in: ns, stdin: """
                table inet bulkhead {
                    flags dormant
                    chain forward { type filter hook forward priority -10; policy accept; numgen inc mod 2 0 accept; }
                }
                """)
            let backend = try NetlinkNetfilter(namespace: ns)
            try #require(backend.ownership == .ownerPersist, "this kernel lacks NFT_TABLE_F_PERSIST")
            let dir = try PolicyDir()
            let inventory = try exampleInventory()
            let source = FakeContainerSource(inventory: inventory)
            let log = LogCapture()
            var config = AgentConfiguration(policyPaths: [dir.path])
            config.listenPort = 0
            config.resyncInterval = .seconds(3600)
            config.minimumBackoff = .milliseconds(20)
            config.maximumBackoff = .milliseconds(100)
            var logger = Logger(label: "test") { _ in log }
            logger.logLevel = .info
            let agent = Agent(configuration: config, backend: backend, source: source, logger: logger)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await agent.run() }
                defer { group.cancelAll() }
                #expect(await eventually { agent.isReady })
            }
            let reader = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let live = try #require(try reader.dump(table: Planner.tableID))
            #expect(!live.flags.contains(.dormant))
            #expect(live.flags.contains(.persist))
            #expect(!live.rules.contains { $0.isUndecoded })
            #expect(same(expectedTableWithFlags(dir, inventory, live.flags), live))
            #expect(log.messages.contains { $0.hasPrefix("table replaced: it lacked the ownership flags") }, "\(log.messages)")
            #expect(agent.metrics.value("bulkhead_table_repairs_total", labels: ["kind": "replaced"]) == 1)
            #expect(agent.metrics.value("bulkhead_reconciles_total", labels: ["result": "error"]) == nil)
        }
    }
}

func expectedTableWithFlags(_ dir: PolicyDir, _ inventory: Inventory, _ flags: TableFlags) -> Table {
    var t = expectedTable(dir, inventory)
    t.flags = flags
    return t
}

/// Keeps every log message (the agent logs what it did to the table).
final class LogCapture: LogHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var messages: [String] { lock.withLock { stored } }
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        lock.withLock { stored.append(event.message.description) }
    }
}

extension TestSystem {
    /// `withNamespace` for async bodies.
    static func withNamespaceAsync<T>(prefix: String, _ body: (String) async throws -> T) async throws -> T {
        try requireRoot("a network-namespace test")
        let ns = "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
        try check(["ip", "netns", "add", ns])
        defer { _ = try? run(["ip", "netns", "del", ns]) }
        return try await body(ns)
    }
}
