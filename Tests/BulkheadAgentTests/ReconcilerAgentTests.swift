import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Dispatch
import Foundation
import Logging
import Synchronization
import Testing

/// A `FakeNetfilter` that records whether each call ran on the agent's netlink queue, and can
/// hold every call until released (a slow kernel).
final class WatchedBackend: NetfilterBackend, Sendable {
    let fake = FakeNetfilter()
    private let state = Mutex<(calls: Int, offQueue: [String], held: Bool)>((0, [], false))
    private let gate = DispatchSemaphore(value: 0)

    private func enter(_ what: String) {
        let held = state.withLock { s in
            s.calls += 1
            if !NetlinkQueue.isCurrent { s.offQueue.append("\(what) on \(Thread.current)") }
            return s.held
        }
        if held { gate.wait(); gate.signal() }
    }

    var calls: Int { state.withLock { $0.calls } }
    var offQueue: [String] { state.withLock { $0.offQueue } }
    func hold() { state.withLock { $0.held = true } }
    func release() {
        state.withLock { $0.held = false }
        gate.signal()
    }

    func dump(table: TableID) throws -> Table? { enter("dump"); return try fake.dump(table: table) }
    func apply(_ transactions: [Transaction], expectedGeneration: UInt32?) throws -> UInt32 {
        enter("apply")
        return try fake.apply(transactions, expectedGeneration: expectedGeneration)
    }
    func generation() throws -> UInt32 { enter("generation"); return try fake.generation() }
}

/// Issue 10, items 2 and 4 in the agent: a container event commits elements without a compile;
/// netlink runs on its own queue; a scrape never waits on netlink.
@Suite(.serialized) struct ReconcilerAgentTests {
    final class PortBox: Sendable { let value = Mutex<Int?>(nil) }

    final class Reports: Sendable {
        let all = Mutex<[ReconcileReport]>([])
        var list: [ReconcileReport] { all.withLock { $0 } }
    }

    func withWatchedAgent(_ dir: PolicyDir, backend: any NetfilterBackend, source: FakeContainerSource, reports: Reports,
                          port: PortBox? = nil, configure: (inout AgentConfiguration) -> Void = { _ in },
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
        let agent = Agent(configuration: config, backend: backend, source: source, logger: logger,
                          onListening: { p in port?.value.withLock { $0 = p } },
                          onReconciled: { r in reports.all.withLock { $0.append(r) } })
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            defer { group.cancelAll() }
            try await body(agent)
        }
    }

    static func compiles(_ agent: Agent) -> Double { causes(agent).values.reduce(0, +) }

    static func causes(_ agent: Agent) -> [String: Double] {
        Dictionary(uniqueKeysWithValues: ["kernel", "policy", "snapshot", "container", "container_fallback"].map {
            ($0, agent.metrics.value("bulkhead_full_compiles_total", labels: ["cause": $0]) ?? 0)
        })
    }

    @Test func containerEventsCommitElementsWithoutACompile() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        let reports = Reports()
        try await withWatchedAgent(dir, backend: backend, source: source, reports: reports) { agent in
            // (The start-up's policy load, even when it reconciles after the first comparison with
            // the kernel, compiles nothing more: the policies are the ones compiled.)
            #expect(await eventually { agent.isReady })
            let compilesWhenReady = Self.compiles(agent)
            #expect(compilesWhenReady >= 1 && agent.metrics.value("bulkhead_full_compiles_total", labels: ["cause": "kernel"]) ?? 0 >= 1)
            let commitsWhenReady = backend.commits.count
            func committingReports() -> Int { reports.list.filter { $0.operations > 0 }.count }
            let reportsWhenReady = committingReports()
            source.run(Container(name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                 networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && source.currentInventory.containers.count == 10 })
            #expect(await eventually { committingReports() == reportsWhenReady + 1 })
            source.remove("shop-api-3")
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && source.currentInventory.containers.count == 9 })
            #expect(await eventually { committingReports() == reportsWhenReady + 2 })
            #expect(Self.compiles(agent) == compilesWhenReady, "a container event compiled the table: \(Self.compiles(agent)) vs \(compilesWhenReady); by cause: \(Self.causes(agent))")
            #expect(agent.metrics.value("bulkhead_full_compiles_total", labels: ["cause": "container"]) == 0
                && agent.metrics.value("bulkhead_full_compiles_total", labels: ["cause": "container_fallback"]) == 0)
            let churn = reports.list.filter { $0.operations > 0 }.suffix(2)
            #expect(churn.count == 2 && churn.allSatisfy { !$0.fullCompile }, "\(churn.map(\.script))")
            let commits = backend.commits.dropFirst(commitsWhenReady)
            #expect(commits.count == 2 && commits.allSatisfy { $0.operations.allSatisfy { if case .elements = $0.object { true } else { false } } },
                    "\(commits)")

            // A policy change is a full compile.
            try dir.write("shop.yaml", try dir.read("shop.yaml").replacingOccurrences(of: "8080", with: "8081"))
            #expect(await eventually { agent.metrics.value("bulkhead_full_compiles_total", labels: ["cause": "policy"]) == 1 })
            #expect(await eventually { inSync(backend, dir, source.currentInventory) })
        }
    }

    @Test func netlinkCallsRunOnTheirOwnQueue() async throws {
        let dir = try PolicyDir()
        let backend = WatchedBackend()
        let source = FakeContainerSource(inventory: try exampleInventory())
        try await withWatchedAgent(dir, backend: backend, source: source, reports: Reports()) { agent in
            #expect(await eventually { agent.isReady })
            source.run(Container(name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                 networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            #expect(await eventually { source.currentInventory.containers.count == 10 && inSync(backend.fake, dir, source.currentInventory) })
        }
        #expect(backend.calls > 3)
        #expect(backend.offQueue.isEmpty, "netlink calls off the netlink queue: \(backend.offQueue.prefix(3))")
    }

    @Test func aScrapeNeverWaitsOnNetlink() async throws {
        let dir = try PolicyDir()
        let backend = WatchedBackend()
        let source = FakeContainerSource(inventory: try exampleInventory())
        let port = PortBox()
        try await withWatchedAgent(dir, backend: backend, source: source, reports: Reports(), port: port) { agent in
            #expect(await eventually { agent.isReady && port.value.withLock { $0 } != nil })
            let p = try #require(port.value.withLock { $0 })
            // The kernel stops answering, with a commit in flight.
            backend.hold()
            defer { backend.release() }
            let callsBefore = backend.calls
            source.run(Container(name: "shop-api-3", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                 networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            #expect(await eventually { backend.calls > callsBefore }, "the reconcile reached the kernel")
            // Two scrapes (the second would read the counters if scrapes dumped the table) answer.
            for _ in 0..<2 {
                let answer = try await Task.detached { try HTTPInitializerTests.get("/metrics", port: p) }.value
                #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n") && answer.contains("bulkhead_reconciles_total"), "\(answer.prefix(200))")
            }
            backend.release()
            #expect(await eventually { inSync(backend.fake, dir, source.currentInventory) })
        }
    }

    /// The resync period and the generation watch run on the injected clock: drift stays until the
    /// clock passes the watch interval, and the periodic snapshot comes when it passes the period.
    @Test func timersFollowTheInjectedClock() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        // Ready, and the generation watch and the resync loop asleep on the clock.
        try await withResyncingAgent(dir, backend: backend, source: source, reports: Reports()) { agent, clock in
            let snapshots = source.snapshotCalls
            backend.tamper(Planner.tableID) { $0 = nil }
            #expect(!inSync(backend, dir, inventory), "nothing notices before the clock moves")
            clock.advance(by: .seconds(1))
            #expect(await eventually { inSync(backend, dir, inventory) }, "the generation watch fired and the table was repaired")
            #expect(source.snapshotCalls == snapshots, "no resync before its period")
            #expect(await eventually { clock.sleeping >= 2 })
            clock.advance(by: .seconds(29))
            #expect(await eventually { source.snapshotCalls == snapshots + 1 }, "the periodic resync took a snapshot")
        }
    }

    /// An agent whose timers run on a manual clock (resync every 30 s, generation watch every
    /// 1 s), ready and in sync, with both timers asleep: the test moves time itself.
    func withResyncingAgent(_ dir: PolicyDir, backend: FakeNetfilter, source: FakeContainerSource, reports: Reports,
                            _ body: @Sendable (Agent, ManualClock) async throws -> Void) async throws {
        let clock = ManualClock()
        try await withWatchedAgent(dir, backend: backend, source: source, reports: reports, configure: { (config: inout AgentConfiguration) in
            config.clock = clock
            config.resyncInterval = Duration.seconds(30)
            config.generationPollInterval = Duration.seconds(1)
        }) { agent in
            #expect(await eventually { agent.isReady && inSync(backend, dir, source.currentInventory) })
            #expect(await eventually { clock.sleeping >= 2 }, "sleeping: \(clock.sleeping)")
            try await body(agent, clock)
        }
    }

    /// Issue 10, item 8: a resync costs what it finds. One that finds nothing compiles nothing and
    /// commits nothing; one that finds a container whose events were lost commits its elements,
    /// without a compile.
    @Test func aResyncThatFindsNothingCompilesNothing() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        let reports = Reports()
        try await withResyncingAgent(dir, backend: backend, source: source, reports: reports) { agent, clock in
            let compiles = Self.compiles(agent)
            let (snapshots, commits) = (source.snapshotCalls, backend.commits.count)
            func resyncs() -> [ReconcileReport] { reports.list.filter { $0.reasons.contains(.resync) } }
            clock.advance(by: .seconds(30))
            #expect(await eventually { source.snapshotCalls == snapshots + 1 && resyncs().count == 1 }, "the periodic resync took a snapshot and reconciled")
            let resync = try #require(resyncs().first)
            #expect(!resync.fullCompile && resync.operations == 0, "a resync that found nothing: \(resync.operations) operations, full compile \(resync.fullCompile)")
            #expect(Self.compiles(agent) == compiles, "by cause: \(Self.causes(agent))")
            #expect(backend.commits.count == commits)
        }
    }

    @Test func aResyncFindsAMissedEventAsElements() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let source = FakeContainerSource(inventory: try exampleInventory())
        let reports = Reports()
        try await withResyncingAgent(dir, backend: backend, source: source, reports: reports) { agent, clock in
            let compiles = Self.compiles(agent)
            let commits = backend.commits.count
            // A container the events never told of, and one whose removal they never told.
            source.changeWithoutEvents { inventory in
                inventory.containers.removeAll { $0.name == "shop-api-2" }  // its identity stays: shop-api-1
                inventory.containers.append(Container(name: "shop-api-3", id: FakeContainerSource.makeID("shop-api-3"),
                                                      labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api"],
                                                      networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.30"))]))
            }
            #expect(!inSync(backend, dir, source.currentInventory), "nothing notices before the resync")
            clock.advance(by: .seconds(30))
            #expect(await eventually { inSync(backend, dir, source.currentInventory) }, "the resync found both")
            #expect(Self.compiles(agent) == compiles, "by cause: \(Self.causes(agent))")
            let changed = backend.commits.dropFirst(commits)
            #expect(!changed.isEmpty && changed.allSatisfy { $0.operations.allSatisfy { if case .elements = $0.object { true } else { false } } },
                    "the resync committed element operations only: \(changed)")
        }
    }
}
