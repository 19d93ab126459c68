import Foundation
import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadSource
import BulkheadTestSupport
import Testing

/// Issue 10, item 2: the pure reconciler. A container change is element operations only (no
/// compile); policies, snapshots and comparisons with the kernel take the full plan; and every
/// sequence of changes leaves the kernel where the full compile + diff would.
// Serialized, and the long drives run on threads of their own: they are CPU-bound, and on a
// 2-core machine they would otherwise hold the cooperative pool the agent and Docker tests run on.
@Suite(.serialized) struct ReconcilerTests {
    static func policies(_ yaml: String) throws -> PolicySet {
        let loaded = PolicyLoader.load(sources: [("r.yaml", Array(yaml.utf8))])
        #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
        return loaded.policies
    }

    /// Commits `step` to `kernel` and records it, as the agent does.
    static func commit(_ step: Reconciler.Step, _ reconciler: inout Reconciler, _ kernel: any NetfilterBackend) throws {
        var generation = try kernel.generation()
        if step.hasChanges { generation = try kernel.apply(step.transactions, expectedGeneration: step.expectedGeneration) }
        reconciler.record(step, generation: generation)
    }

    static func kernelChange(_ kernel: any NetfilterBackend) throws -> Reconciler.Change {
        .kernel(live: try kernel.dump(table: Planner.tableID), bridgeLive: try kernel.dump(table: Planner.bridgeTableID),
                generation: try kernel.generation())
    }

    static func isElementsOnly(_ tx: Transaction) -> Bool {
        tx.operations.allSatisfy { if case .elements = $0.object { return true } else { return false } }
    }

    /// Whether the kernel holds exactly the full compile of `index` (both tables).
    static func matchesFullCompile(_ kernel: FakeNetfilter, _ policies: PolicySet, _ index: EndpointIndex) throws -> Bool {
        let check = try Planner().plan(policies: policies, inventory: index.inventory, backend: kernel)
        return !check.hasChanges
    }

    @Test func containerEventsAreElementsOnlyWithoutACompile() throws {
        var rng = SeededGenerator(seed: 7)
        let world = randomSegmentWorld(&rng, bindPorts: true)
        let policies = try Self.policies(world.yaml)
        var index = EndpointIndex(world.inventory)
        let kernel = FakeNetfilter()
        var reconciler = Reconciler()
        #expect(throws: ReconcilerError.noRecord) { try reconciler.step(policies: policies, index: index, change: .containers([])) }

        let first = try reconciler.step(policies: policies, index: index, change: try Self.kernelChange(kernel), describing: true)
        #expect(first.kind == .full && first.plan != nil && first.hasChanges && !first.drift)
        #expect(!(first.plan?.opened.isEmpty ?? true), "the first full plan was described")
        try Self.commit(first, &reconciler, kernel)
        #expect(reconciler.applied?.managed == 5)

        // A container of service a arrives: elements only, no plan, nothing to revoke.
        let added = Container(name: "new", labels: ["svc": "a"],
                              networks: ["n": Attachment(ipv4: IPAddress("10.63.0.40"), ipv6: IPAddress("fd00:63::40"), mac: "02:42:0a:3f:00:40", port: "vethnew")])
        index.update("new", to: added)
        let add = try reconciler.step(policies: policies, index: index, change: .containers(["new"]))
        #expect(add.kind == .elements && add.plan == nil && add.fallback == nil && !add.mayCloseFlows)
        #expect(add.transactions.count == 2 && add.transactions.allSatisfy(Self.isElementsOnly), "\(add.transactions)")
        #expect(add.membershipChanges == 1)
        try Self.commit(add, &reconciler, kernel)
        #expect(try Self.matchesFullCompile(kernel, policies, index))
        #expect(reconciler.applied?.managed == 6)
        // The record follows the kernel: comparing with it finds no drift and nothing to do.
        let resync = try reconciler.step(policies: policies, index: index, change: try Self.kernelChange(kernel))
        #expect(resync.kind == .full && !resync.hasChanges && !resync.drift && !resync.mayCloseFlows)

        // It changes service: may close flows, still elements only.
        var moved = added
        moved.labels = ["svc": "b"]
        index.update("new", to: moved)
        let change = try reconciler.step(policies: policies, index: index, change: .containers(["new"]))
        #expect(change.kind == .elements && change.mayCloseFlows && change.membershipChanges == 2)
        // A step leaves the record as it found it: asked again, it answers the same.
        let again = try reconciler.step(policies: policies, index: index, change: .containers(["new"]))
        #expect(again.kind == .elements && again.transactions == change.transactions)
        try Self.commit(change, &reconciler, kernel)
        #expect(try Self.matchesFullCompile(kernel, policies, index))

        // It leaves.
        index.update("new", to: nil)
        let remove = try reconciler.step(policies: policies, index: index, change: .containers(["new"]))
        #expect(remove.kind == .elements && remove.mayCloseFlows && remove.transactions.allSatisfy(Self.isElementsOnly))
        try Self.commit(remove, &reconciler, kernel)
        #expect(try Self.matchesFullCompile(kernel, policies, index))
        #expect(reconciler.applied?.managed == 5)

        // A key that did not change costs nothing.
        let none = try reconciler.step(policies: policies, index: index, change: .containers(["r0", "gone"]))
        #expect(none.kind == .elements && !none.hasChanges)
    }

    /// The semantic diff (grants read back out of both tables) runs only when asked for.
    @Test func semanticDiffOnlyWhenAsked() throws {
        var rng = SeededGenerator(seed: 5)
        let world = randomSegmentWorld(&rng, bindPorts: false)
        let index = EndpointIndex(world.inventory)
        let kernel = FakeNetfilter()
        var reconciler = Reconciler()
        try Self.commit(try reconciler.step(policies: try Self.policies(world.yaml), index: index, change: try Self.kernelChange(kernel)), &reconciler, kernel)
        // New policies: every flow of the first set closes, every one of the second opens.
        let other = try Self.policies(world.yaml.replacingOccurrences(of: "segment: r", with: "segment: s"))
        let quiet = try reconciler.step(policies: other, index: index, change: .policiesChanged)
        #expect(quiet.kind == .full && quiet.hasChanges && quiet.mayCloseFlows)
        #expect(quiet.plan?.opened == [] && quiet.plan?.closed == [] && quiet.plan?.membership == [])
        let described = try reconciler.step(policies: other, index: index, change: .policiesChanged, describing: true)
        #expect(described.transactions == quiet.transactions)
        #expect(!(described.plan?.opened.isEmpty ?? true) && !(described.plan?.closed.isEmpty ?? true) && !(described.plan?.membership.isEmpty ?? true))
    }

    @Test func driftIsFoundAndDescribed() throws {
        var rng = SeededGenerator(seed: 11)
        let world = randomSegmentWorld(&rng, bindPorts: false)
        let policies = try Self.policies(world.yaml)
        let index = EndpointIndex(world.inventory)
        let kernel = FakeNetfilter()
        var reconciler = Reconciler()
        try Self.commit(try reconciler.step(policies: policies, index: index, change: try Self.kernelChange(kernel)), &reconciler, kernel)
        kernel.tamper(Planner.tableID) { table in
            let i = table!.sets.firstIndex { $0.name.hasPrefix("svc_r_a_v4") || $0.name.hasPrefix("svc_") && !$0.elements.isEmpty }!
            table!.sets[i].setElements([])
        }
        let step = try reconciler.step(policies: policies, index: index, change: try Self.kernelChange(kernel))
        #expect(step.kind == .full && step.drift && step.hasChanges && step.mayCloseFlows)
        #expect(!(step.plan?.membership.isEmpty ?? true), "drift is described for the log: \(String(describing: step.plan?.membership))")
        try Self.commit(step, &reconciler, kernel)
        #expect(try Self.matchesFullCompile(kernel, policies, index))
    }

    /// Long random sequences of events (adds, removes, service changes, address changes and
    /// reuse, addresses held twice, policy changes, snapshots, resyncs, coalesced bursts) through
    /// both paths — the reconciler's transactions on one fake kernel, the full compile + diff on
    /// another — must leave the same tables after every step.
    @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
    func randomEventsMatchTheFullPlan(seed: UInt64) async throws {
        let outcome = try await Self.onOwnThread { try Self.drive(seed: seed, steps: 60, incrementalKernel: FakeNetfilter()) }
        Self.check(outcome)
    }

    /// What a drive found; checked by the test (a drive runs on a thread of its own, outside the
    /// test's task, so it records nothing itself).
    struct DriveOutcome: Sendable {
        var problems: [String] = []
        var elementSteps = 0, fallbacks = 0, fullSteps = 0, elementOperations = 0
    }

    static func check(_ outcome: DriveOutcome, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(outcome.problems.isEmpty, "\(outcome.problems.joined(separator: "\n"))", sourceLocation: sourceLocation)
        #expect(outcome.elementSteps > 10 && outcome.elementOperations > 0 && outcome.fullSteps > 0,
                "elements \(outcome.elementSteps), fallbacks \(outcome.fallbacks), full \(outcome.fullSteps)", sourceLocation: sourceLocation)
    }

    /// Runs CPU-bound `body` on a thread of its own: several seconds of compiles must not hold a
    /// thread of the cooperative pool, where the agent and Docker tests' loops run (2 cores here).
    static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result(catching: body)) }.start()
        }
    }

    struct InvalidPolicies: Error, CustomStringConvertible { var description: String }

    /// `policies(_:)` without recording (a drive's thread has no test to record into).
    static func loadedPolicies(_ yaml: String) throws -> PolicySet {
        let loaded = PolicyLoader.load(sources: [("r.yaml", Array(yaml.utf8))])
        if loaded.hasErrors { throw InvalidPolicies(description: "\(loaded.diagnostics.map(\.formatted))") }
        return loaded.policies
    }

    /// The same on the real kernel, once, in a throwaway network namespace: the reconciler's
    /// transactions go to the kernel, the full path to the fake, and the two must hold the same.
    @Test(.enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
    func randomEventsOnTheKernelMatchTheFullPlan() async throws {
        try TestSystem.requireRoot("programming nftables in a test namespace")
        let ns = "bh-rec-\(UInt32.random(in: 0...UInt32.max))"
        try TestSystem.check(["ip", "netns", "add", ns])
        defer { _ = try? TestSystem.run(["ip", "netns", "del", ns]) }
        let outcome = try await Self.onOwnThread { try Self.drive(seed: 9, steps: 40, incrementalKernel: try NetlinkNetfilter(namespace: ns, ownership: .disabled)) }
        Self.check(outcome)
    }

    static func drive(seed: UInt64, steps: Int, incrementalKernel: any NetfilterBackend) throws -> DriveOutcome {
        var outcome = DriveOutcome()
        var rng = SeededGenerator(seed: seed)
        func yaml() -> String {
            // Service e selects by another label: containers of a..d that also carry it have a
            // two-service identity, whose chains exist only while some container has it.
            randomSegmentWorld(&rng, bindPorts: true).yaml.replacingOccurrences(of: "\nflows:\n", with:
                "\n  e:\n    labels: {tier: front}\nflows:\n  - from: e\n    to: a\n    ports: [tcp/80]\n")
        }
        let start = randomSegmentWorld(&rng, bindPorts: true)
        var policies = try Self.loadedPolicies(yaml())
        var index = EndpointIndex(start.inventory)
        let fullKernel = FakeNetfilter()
        var reconciler = Reconciler()
        try Self.commit(try reconciler.step(policies: policies, index: index, change: try Self.kernelChange(incrementalKernel)), &reconciler, incrementalKernel)
        var serial = 100

        func randomContainer(name: String) -> Container {
            let held = Set(index.containers.values.flatMap(\.addresses))
            var host = UInt32.random(in: 2...24, using: &rng)
            // Mostly a free address (reusing freed ones), sometimes one another container holds.
            if Int.random(in: 0..<10, using: &rng) > 0 {
                for _ in 0..<30 where held.contains(.v4(0x0A3F_0000 + host)) { host = UInt32.random(in: 2...24, using: &rng) }
            }
            var labels = ["svc": ["a", "b", "c", "d", "none"].randomElement(using: &rng)!]
            if Bool.random(using: &rng) && Int.random(in: 0..<3, using: &rng) == 0 { labels["tier"] = "front" }
            let v6 = Bool.random(using: &rng) ? IPAddress("fd00:63::\(String(host, radix: 16))") : nil
            let attachment = Attachment(ipv4: .v4(0x0A3F_0000 + host), ipv6: v6, mac: String(format: "02:42:0a:3f:00:%02x", host), port: "veth\(name)")
            return Container(name: name, labels: labels, networks: ["n": attachment])
        }

        for stepNumber in 0..<steps {
            let roll = Int.random(in: 0..<100, using: &rng)
            var change: Reconciler.Change
            var keys: Set<String> = []
            // Container changes: told one by one (a burst coalesced into one step), or missed (a gap
            // in the event stream) and found by the snapshot or the resync that follows.
            let burst = roll < 75 || roll >= 85 ? (Int.random(in: 0..<4, using: &rng) == 0 ? Int.random(in: 2...5, using: &rng) : 1) : 0
            for _ in 0..<burst {
                let existing = index.containers.keys.sorted()
                let kind = Int.random(in: 0..<4, using: &rng)
                if kind == 0 || existing.isEmpty {
                    serial += 1
                    let key = "k\(serial)"
                    index.update(key, to: randomContainer(name: "c\(serial)"))
                    keys.insert(key)
                } else {
                    let key = existing.randomElement(using: &rng)!
                    let old = index.containers[key]!
                    switch kind {
                    case 1:
                        index.update(key, to: nil)
                    case 2:
                        var c = old
                        c.labels = ["svc": ["a", "b", "c", "d", "none"].randomElement(using: &rng)!]
                        if Bool.random(using: &rng) { c.labels["tier"] = "front" }
                        index.update(key, to: c)
                    default:
                        index.update(key, to: randomContainer(name: old.name))
                    }
                    keys.insert(key)
                }
            }
            if roll < 75 {
                change = .containers(keys)
            } else if roll < 85 {
                policies = try Self.loadedPolicies(yaml())
                change = .policiesChanged
            } else if roll < 92 {
                change = .snapshot
            } else {
                change = try Self.kernelChange(incrementalKernel)
            }

            let step = try reconciler.step(policies: policies, index: index, change: change)
            switch (step.kind, step.fallback) {
            case (.elements, _):
                outcome.elementSteps += 1
                outcome.elementOperations += step.operationCount
                if step.plan != nil || !step.transactions.allSatisfy(Self.isElementsOnly) {
                    outcome.problems.append("seed \(seed) step \(stepNumber): an element step holds more than elements: \(step.transactions)")
                }
            case (.full, .some): outcome.fallbacks += 1
            case (.full, nil): outcome.fullSteps += 1
            }
            try Self.commit(step, &reconciler, incrementalKernel)

            // The other path: full compile of the same index, diffed against its own kernel.
            let full = try Planner().plan(policies: policies, inventory: index.inventory, backend: fullKernel)
            try Planner().apply(full, to: fullKernel)

            for table in [Planner.tableID, Planner.bridgeTableID] {
                let a = try incrementalKernel.dump(table: table), b = try fullKernel.dump(table: table)
                let difference = try Diff.between(desired: b, live: a, table: table)
                if !difference.isEmpty {
                    outcome.problems.append("seed \(seed) step \(stepNumber) (\(change)) \(table): the incremental kernel differs:\n\(difference)")
                    return outcome
                }
            }
            // The record is what the kernel holds.
            if !same(reconciler.applied?.table, try incrementalKernel.dump(table: Planner.tableID)) {
                outcome.problems.append("seed \(seed) step \(stepNumber): the record differs from the kernel")
            }
        }
        return outcome
    }

    static func same(_ a: Table?, _ b: Table?) -> Bool {
        (try? Diff.between(desired: a, live: b, table: Planner.tableID).isEmpty) ?? false
    }

    func same(_ a: Table?, _ b: Table?) -> Bool { Self.same(a, b) }

    /// `Table.applyElementOperations` keeps the element order a dump has.
    @Test func elementPatchKeepsDumpOrder() throws {
        var rng = SeededGenerator(seed: 3)
        let world = randomSegmentWorld(&rng, bindPorts: true)
        let policies = try Self.policies(world.yaml)
        let kernel = FakeNetfilter()
        let empty = Inventory(networks: world.inventory.networks, containers: [])
        var reconciler = Reconciler()
        var index = EndpointIndex(empty)
        try Self.commit(try reconciler.step(policies: policies, index: index, change: try Self.kernelChange(kernel)), &reconciler, kernel)
        var n = 0
        for c in world.inventory.containers.reversed() {
            index.update(c.name, to: c)
            let step = try reconciler.step(policies: policies, index: index, change: .containers([c.name]))
            if step.kind == .elements { n += 1 }
            try Self.commit(step, &reconciler, kernel)
            for (mine, theirs) in zip(reconciler.applied?.table.sets ?? [], try kernel.dump(table: Planner.tableID)?.sets ?? []) {
                #expect(mine.elements == theirs.elements, "\(mine.name) in dump order")
            }
        }
        #expect(n > 0)
    }
}
