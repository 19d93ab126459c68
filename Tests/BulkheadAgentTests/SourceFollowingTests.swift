import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadRuleset
import BulkheadSource
import BulkheadTestSupport
import Foundation
import Logging
import Testing

/// The agent's endpoint index, driven by a fake source that counts every call: one read of the
/// container each event names, a full snapshot only at start-up, after a gap, and on resync.
@Suite(.serialized) struct SourceFollowing {
    static let shopAPI = ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"]

    @Test func eachEventReadsOnlyTheContainerItNames() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            #expect(source.snapshotCalls == 1, "one snapshot at start-up")
            #expect(source.inspected.isEmpty)
            source.run(Container(name: "shop-api-3", labels: Self.shopAPI, networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            let id = FakeContainerSource.makeID("shop-api-3")
            // run: added, connected, changed (start): three events, three reads of that container.
            #expect(await eventually { source.inspected.count == 3 && inSync(backend, dir, source.currentInventory) })
            #expect(source.inspected == [id, id, id])
            #expect(agent.metrics.value("bulkhead_source_reads_total", labels: ["kind": "inspect"]) == 3)
            source.remove("shop-api-3")
            // remove: removed (die), disconnected, removed (destroy): only the disconnect is read.
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && source.currentInventory.containers.count == 9 })
            #expect(await eventually { source.inspected.count == 4 })
            #expect(source.inspected == [id, id, id, id])
            #expect(source.snapshotCalls == 1, "no full list for events")
            #expect(agent.metrics.value("bulkhead_source_reads_total", labels: ["kind": "snapshot"]) == 1)
            let set = try backend.dump(table: Planner.tableID)?.set(named: "svc_shop_api_v4")
            #expect(set?.elements.contains(SetElement(.ipv4(IPv4Address("172.20.0.30")!))) == false)
        }
    }

    /// Containers whose bridge port is not found (here: a bridge no port finder knows) are read
    /// again on a back-off. Past a handful, that is one snapshot, not one read each: 200 reads per
    /// round kept the agent at 0.6 of a core while idle (`scripts/bench/agent.sh`).
    @Test func manyPendingPortsAreReadWithOneSnapshot() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        var inventory = try exampleInventory()
        for i in inventory.networks.indices { inventory.networks[i].bridge = "br-nowhere\(i)" }
        for c in inventory.containers.indices {
            for (name, attachment) in inventory.containers[c].networks {
                var a = attachment
                a.mac = String(format: "02:42:ac:14:%02x:%02x", c, name.count)
                a.port = nil
                inventory.containers[c].networks[name] = a
            }
        }
        let pending = inventory.containers.filter { !$0.networks.isEmpty }.count
        #expect(pending > Agent.pendingReadsBeforeSnapshot, "the case needs more pending containers than the per-container reads")
        let source = FakeContainerSource(inventory: inventory)
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            // The first pending-port round comes 50 ms after start-up.
            #expect(await eventually { source.snapshotCalls >= 2 }, "the pending ports were read again")
            #expect(source.inspected.isEmpty, "one snapshot, not \(pending) reads: \(source.inspected.count) reads")
        }
    }

    @Test func aGapLeadsToOneFullSnapshot() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            #expect(source.snapshotCalls == 1)
            // A container appears while the stream is down: no event for it ever comes.
            source.disconnect()
            var inventory = source.currentInventory
            inventory.containers.append(Container(name: "shop-api-9", id: "quiet", labels: Self.shopAPI,
                                                  networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.90"))]))
            source.currentInventory = inventory
            #expect(await eventually { inSync(backend, dir, inventory) })
            #expect(source.snapshotCalls == 2, "the gap was followed by exactly one full snapshot")
            #expect(source.subscriptions == 2)
            #expect(source.inspected.isEmpty)
            #expect(agent.metrics.value("bulkhead_source_gaps_total") == 1)
        }
    }

    @Test func aResyncedEventTakesASnapshotWithoutAGap() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            var inventory = source.currentInventory
            inventory.containers.removeAll { $0.name.hasPrefix("shop-api") }
            source.currentInventory = inventory
            source.send(.resynced)
            #expect(await eventually { inSync(backend, dir, inventory) })
            #expect(source.snapshotCalls == 2)
            #expect(source.subscriptions == 1, "the stream stayed open")
            #expect(agent.isReady)
        }
    }

    @Test func aContainerOnANetworkNotListedYetTakesASnapshot() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            var inventory = source.currentInventory
            inventory.networks.append(Network(name: "late", subnets: [IPNetwork("10.77.0.0/24")!]))
            source.currentInventory = inventory
            source.run(Container(name: "late-1", labels: Self.shopAPI, networks: ["late": Attachment(ipv4: IPAddress("10.77.0.2"))]))
            #expect(await eventually { inSync(backend, dir, source.currentInventory) })
            #expect(source.snapshotCalls >= 2, "the network's subnets came from a new snapshot")
        }
    }

    @Test func aPeriodicResyncTakesASnapshot() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withAgent(dir, backend: backend, source: source, configure: { $0.resyncInterval = .milliseconds(200) }) { agent in
            #expect(await eventually { agent.isReady })
            #expect(await eventually { source.snapshotCalls >= 3 }, "each resync lists: \(source.snapshotCalls)")
            #expect(source.subscriptions == 1, "without a gap")
        }
    }
}

/// The agent following an inventory file (`bulkhead agent --inventory FILE`), on the fake kernel.
@Suite(.serialized) struct InventoryFileFollowing {
    static func file(_ dir: PolicyDir) throws -> String {
        let path = dir.path + "/inventory/inventory.json"
        try FileManager.default.createDirectory(atPath: dir.path + "/inventory", withIntermediateDirectories: true)
        // As `bulkhead inventory` writes it, so that the edits below change only what they mean to.
        try write(try exampleInventory(), to: path)
        return path
    }

    @Test func editsAreEnforcedAndAnInvalidEditKeepsTheLastGood() async throws {
        let dir = try PolicyDir()
        let path = try Self.file(dir)
        let backend = FakeNetfilter()
        let source = InventoryFileSource(path: path)
        var config = AgentConfiguration(policyPaths: [dir.path + "/shop.yaml", dir.path + "/monitoring.yaml", dir.path + "/dns.yaml"])
        config.listenPort = 0
        config.resyncInterval = .seconds(3600)
        config.minimumBackoff = .milliseconds(20)
        config.maximumBackoff = .milliseconds(100)
        let agent = Agent(configuration: config, backend: backend, source: source, logger: quietLogger())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            defer { group.cancelAll() }
            let original = try exampleInventory()
            #expect(await eventually { agent.isReady && inSync(backend, dir, original) })
            // Add a container by editing the file (rename over it, as editors save).
            var edited = original
            edited.containers.append(Container(name: "shop-api-7", labels: SourceFollowing.shopAPI,
                                               networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.77"))]))
            try write(edited, to: path)
            #expect(await eventually { inSync(backend, dir, edited) })
            #expect(agent.metrics.value("bulkhead_source_reads_total", labels: ["kind": "snapshot"]) == 1, "an edit is read per container")
            // Invalid content: the last good inventory stays, /readyz says why.
            let before = try backend.dump(table: Planner.tableID)
            try "containers: [{name: x}]\n".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(await eventually { !agent.isReady })
            #expect(agent.readinessProblem().hasPrefix("not ready: inventory file \(path) is invalid: "), "\(agent.readinessProblem())")
            #expect(same(before, try backend.dump(table: Planner.tableID)))
            // Deleted: still the last good, and the reason says so.
            try FileManager.default.removeItem(atPath: path)
            #expect(await eventually { agent.readinessProblem() == "not ready: inventory file \(path) is missing; restore it (the last good inventory stays enforced)" })
            #expect(same(before, try backend.dump(table: Planner.tableID)))
            // Restored without the added container: enforced, ready again.
            try write(original, to: path)
            #expect(await eventually { agent.isReady && inSync(backend, dir, original) })
        }
    }
}

func quietLogger() -> Logger {
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return logger
}

/// Writes `inventory` as a snapshot file, by rename over `path`.
func write(_ inventory: Inventory, to path: String) throws {
    try InventorySnapshot.render(inventory).write(toFile: path, atomically: true, encoding: .utf8)
}
