import BulkheadCompiler
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadSource

/// The agent's decisions without its I/O: given the policies, the endpoint index and what was
/// last committed, plus one change, the transactions to commit — element operations only for a
/// container change, a full compile and diff only when the policies change, on resync and on
/// drift — and, once they are committed, the new record of what the kernel holds.
///
/// It never reads the kernel, the source or the clock: the caller dumps the live tables when a
/// change asks for a comparison with the kernel (`Change.kernel`), commits `Step.transactions`,
/// and calls `record(_:generation:)` after the kernel's ack. A failed commit is followed by
/// `forget()`: the next step then compares with the kernel again.
///
/// Container changes reuse `IncrementalPlanner` (the element operations `Diff` would produce for
/// that container); whenever it says a change is more than elements (a new combination of
/// services, an address held twice, an unknown network, an address not enrolled), the step falls
/// back to the full plan against the recorded tables, and `Step.fallback` says why.
public struct Reconciler: Sendable {
    /// One change to reconcile.
    public enum Change: Sendable {
        /// The index entries under these keys changed since the last commit (added, removed or
        /// changed containers; the index holds their new state).
        case containers(Set<String>)
        /// The policies changed: full compile, diffed against what was last committed.
        case policiesChanged
        /// The index was replaced by a full snapshot (after a gap in the event stream, a source
        /// that cannot say what changed): full compile, diffed against what was last committed.
        case snapshot
        /// Compare with the kernel (start-up, a resync's full snapshot, another program
        /// committed, a failed commit): full compile, diffed against the live tables read at
        /// `generation`. A difference between the live tables and our record is drift.
        case kernel(live: Table?, bridgeLive: Table?, generation: UInt32)
    }

    /// What was committed last.
    public struct Applied: Sendable {
        /// `inet bulkhead` and `bridge bulkhead` as we last wrote them.
        public internal(set) var table: Table
        public internal(set) var bridge: Table
        /// The index's containers the tables were computed from, by key.
        public internal(set) var containers: [String: Container]
        /// Containers that match some service.
        public internal(set) var managed: Int
        public internal(set) var failures: [Compiler.IdentityFailure]
        public internal(set) var rejectedAddresses: [RejectedAddress]
        public internal(set) var generation: UInt32?
        /// The policies the tables were compiled from.
        public internal(set) var policies: PolicySet
        var incremental: IncrementalPlanner
    }

    /// The answer for one change: what to commit, and what to record once it is.
    public struct Step: Sendable {
        public enum Kind: Sendable, Hashable {
            /// Element operations from `IncrementalPlanner`: no compile happened.
            case elements
            /// A full compile and diff.
            case full
        }

        public var kind: Kind
        /// What to commit, in one batch (empty: nothing to do).
        public var transactions: [Transaction]
        /// The generation the commit must find (nil: our own table, the owner flag keeps others out).
        public var expectedGeneration: UInt32?
        /// The full plan (nil for `.elements`).
        public var plan: Plan?
        /// Why a container change took the full path (nil otherwise).
        public var fallback: String?
        /// Whether the live tables differed from our record of them (only for `.kernel`).
        public var drift: Bool = false
        /// Whether the change can close a flow, so that established connections may have to be
        /// cut: policies changed, a container left, or changed its addresses or services; a
        /// comparison with the kernel that changes something. A pure addition cannot.
        public var mayCloseFlows: Bool
        /// Containers added and removed (`.elements`), for the log.
        public var membershipChanges: Int = 0
        fileprivate var changes: [IncrementalPlanner.Change] = []
        fileprivate var keys: [String: Container?] = [:]
        fileprivate var managedDelta = 0
        fileprivate var next: Applied?

        public var operationCount: Int { transactions.reduce(0) { $0 + $1.operations.count } }
        public var hasChanges: Bool { transactions.contains { !$0.isEmpty } }
    }

    public var planner: Planner
    public private(set) var applied: Applied?

    public init(planner: Planner = Planner()) {
        self.planner = planner
    }

    /// Forgets the record (after a failed commit): the next step must compare with the kernel.
    public mutating func forget() { applied = nil }

    /// Whether a container change can be answered from the record (a step for `.containers`
    /// without a record would have nothing to diff against: compare with the kernel instead).
    public var hasRecord: Bool { applied != nil }

    /// The transactions for `change`. Pure: reads nothing but its arguments and the record, and
    /// leaves the record as it found it (mutating only to work in the record's storage).
    ///
    /// - Parameter describing: read the grants back out of both tables for the log (`Plan.opened`,
    ///   `closed`, `membership`) on a full plan. Asked for by the caller when it logs them; the
    ///   step asks for it anyway when it finds drift (the log says what was reopened).
    public mutating func step(policies: PolicySet, index: EndpointIndex, change: Change, describing: Bool = false) throws -> Step {
        switch change {
        case .containers(let keys):
            guard applied != nil else { throw ReconcilerError.noRecord }
            return try containerStep(policies: policies, index: index, keys: keys)
        case .policiesChanged:
            guard let applied else { throw ReconcilerError.noRecord }
            var step = try fullStep(policies: policies, index: index, live: applied.table, bridgeLive: applied.bridge,
                                    generation: applied.generation, expected: nil, describing: describing)
            step.mayCloseFlows = true
            return step
        case .snapshot:
            guard let applied else { throw ReconcilerError.noRecord }
            var step = try fullStep(policies: policies, index: index, live: applied.table, bridgeLive: applied.bridge,
                                    generation: applied.generation, expected: nil, describing: describing)
            step.mayCloseFlows = step.hasChanges
            return step
        case .kernel(let live, let bridgeLive, let generation):
            var step = try fullStep(policies: policies, index: index, live: live, bridgeLive: bridgeLive,
                                    generation: generation, expected: generation, describing: describing)
            if let applied, applied.generation != nil {
                let expected = try Diff.between(desired: applied.table, live: live, table: Planner.tableID)
                let expectedBridge = try Diff.between(desired: applied.bridge, live: bridgeLive, table: Planner.bridgeTableID)
                step.drift = !expected.isEmpty || !expectedBridge.isEmpty
                if step.drift && !describing {
                    let next = step.next
                    step = try fullStep(policies: policies, index: index, live: live, bridgeLive: bridgeLive,
                                        generation: generation, expected: generation, describing: true)
                    step.drift = true
                    step.next = next
                }
            }
            step.mayCloseFlows = step.hasChanges
            return step
        }
    }

    /// Records a committed step (`generation`: the kernel's answer to the commit, or the
    /// generation the tables were read at when nothing was committed).
    public mutating func record(_ step: Step, generation: UInt32?) {
        switch step.kind {
        case .full:
            guard var next = step.next else { return }
            next.generation = generation
            applied = next
        case .elements:
            guard var a = applied else { return }
            applied = nil  // unique storage: the tables change in place
            for tx in step.transactions where !tx.isEmpty {
                let ok = tx.table == Planner.tableID ? a.table.applyElementOperations(of: tx) : a.bridge.applyElementOperations(of: tx)
                precondition(ok, "an element step holds element operations on sets the tables have")
            }
            for change in step.changes { a.incremental.record(change) }
            for (key, container) in step.keys { a.containers[key] = container }
            a.managed += step.managedDelta
            a.generation = generation
            applied = a
        }
    }

    // MARK: - Paths

    private func fullStep(policies: PolicySet, index: EndpointIndex, live: Table?, bridgeLive: Table?,
                          generation: UInt32?, expected: UInt32?, describing: Bool) throws -> Step {
        let inventory = index.inventory
        let plan = try planner.plan(policies: policies, inventory: inventory, live: live, bridgeLive: bridgeLive,
                                    baseline: .kernel(generation: generation ?? 0), describing: describing)
        let incremental = IncrementalPlanner(policies: policies, inventory: inventory, applied: plan.desired)
        let next = Applied(table: plan.desired, bridge: plan.bridgeDesired, containers: index.containers,
                           managed: Self.managedCount(policies: policies, containers: inventory.containers),
                           failures: plan.failures, rejectedAddresses: plan.rejectedAddresses, generation: generation,
                           policies: policies, incremental: incremental)
        var step = Step(kind: .full, transactions: plan.transactions, expectedGeneration: expected, plan: plan, mayCloseFlows: false)
        step.next = next
        return step
    }

    /// Mutating only to reuse the record's storage: it records the changes one after the other in
    /// place (a container that changed is a removal, then an addition computed with the removal
    /// recorded) and takes them back before it returns, so the record is as it was, without the
    /// copy of every container a working copy would cost at 10,000 containers.
    private mutating func containerStep(policies: PolicySet, index: EndpointIndex, keys: Set<String>) throws -> Step {
        var changes: [IncrementalPlanner.Change] = []
        var touched: [String: Container?] = [:]
        var mayClose = false, delta = 0
        for key in keys.sorted() {
            let before = applied!.containers[key], now = index.containers[key]
            guard before != now else { continue }
            touched[key] = .some(now)
            if let before {
                changes.append(.removed(before))
                let servicesBefore = applied!.incremental.services(of: before)
                if !servicesBefore.isEmpty { delta -= 1 }
                if now.map({ $0.addresses != before.addresses || applied!.incremental.services(of: $0) != servicesBefore }) ?? true {
                    mayClose = true
                }
            }
            if let now {
                changes.append(.added(now))
                if !applied!.incremental.services(of: now).isEmpty { delta += 1 }
            }
        }
        var recorded: [IncrementalPlanner.Change] = []
        defer {
            for change in recorded.reversed() {
                switch change {
                case .added(let c): applied!.incremental.record(.removed(c))
                case .removed(let c): applied!.incremental.record(.added(c))
                }
            }
        }
        var fallbackReason: String?
        var transactions: [Transaction] = []
        for (i, change) in changes.enumerated() {
            if i > 0 {
                applied!.incremental.record(changes[i - 1])
                recorded.append(changes[i - 1])
            }
            let outcome = applied!.incremental.transaction(for: change)
            let bridgeOutcome = applied!.incremental.bindingTransaction(for: change)
            switch (outcome, bridgeOutcome) {
            case (.transaction(let tx), .transaction(let bridgeTx)):
                if !tx.isEmpty { transactions.append(tx) }
                if !bridgeTx.isEmpty { transactions.append(bridgeTx) }
            case (.needsFullPlan(let reason), _), (_, .needsFullPlan(let reason)):
                fallbackReason = reason
            }
            if fallbackReason != nil { break }
        }
        if let reason = fallbackReason {
            let a = applied!
            var step = try fullStep(policies: policies, index: index, live: a.table, bridgeLive: a.bridge,
                                    generation: a.generation, expected: nil, describing: false)
            step.fallback = reason
            // A fallback can take an address from a container that held it (claimed twice).
            step.mayCloseFlows = step.hasChanges
            return step
        }
        var step = Step(kind: .elements, transactions: transactions, expectedGeneration: nil, plan: nil, mayCloseFlows: mayClose)
        step.changes = changes
        step.keys = touched
        step.managedDelta = delta
        step.membershipChanges = changes.count
        return step
    }

    /// Containers that match some service (replicas share labels: decided once per label set).
    static func managedCount(policies: PolicySet, containers: [Container]) -> Int {
        let services = policies.services
        var byLabels: [[String: String]: Bool] = [:]
        var n = 0
        for c in containers {
            let managed = byLabels[c.labels] ?? {
                let m = services.contains { $0.matches(c) }
                byLabels[c.labels] = m
                return m
            }()
            if managed { n += 1 }
        }
        return n
    }
}

public enum ReconcilerError: Error, CustomStringConvertible, Equatable {
    /// A container or policy change without a record of what was committed.
    case noRecord

    public var description: String {
        switch self {
        case .noRecord: return "nothing was committed yet to diff against: compare with the kernel first (Reconciler.Change.kernel)"
        }
    }
}
