import BulkheadCompiler
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset

/// What applying the policies would change, semantically and in nftables.
///
/// Built by `Planner.plan`; printed by `bulkhead plan`, sent by `bulkhead apply` and the agent.
public struct Plan: Sendable {
    /// What the desired state was compared against.
    public enum Baseline: Sendable, Hashable {
        /// The table the kernel holds, read at this ruleset generation.
        case kernel(generation: UInt32)
        /// An empty ruleset, with the reason (typically: no privilege to read the kernel).
        case empty(reason: String)
    }

    /// A grant that the change opens or closes, with how many containers are on each side now.
    public struct FlowChange: Sendable, Hashable {
        public var grant: Grant
        /// Containers on each side, for service endpoints (nil for world, host and CIDRs).
        public var fromContainers: Int?
        public var toContainers: Int?
    }

    /// Addresses that join or leave a service (container churn).
    public struct MembershipChange: Sendable, Hashable {
        public var service: ServiceRef
        public var added: [IPAddress]
        public var removed: [IPAddress]
        /// Names of the containers behind `added` (from the inventory).
        public var containers: [String]
    }

    public var baseline: Baseline
    public var desired: Table
    public var live: Table?
    /// Operations on `inet bulkhead`.
    public var transaction: Transaction
    /// The `bridge bulkhead` table (port binding) wanted and found, and the operations on it.
    public var bridgeDesired: Table
    public var bridgeLive: Table?
    public var bridgeTransaction: Transaction
    public var opened: [FlowChange]
    public var closed: [FlowChange]
    public var membership: [MembershipChange]
    /// Rules in the kernel's identity chains that Bulkhead did not write (drift).
    public var foreignRules: [Rule]
    /// Identities that could not be compiled; their containers are quarantined (all denied).
    public var failures: [Compiler.IdentityFailure] = []
    /// Container addresses the inventory gives that are not enrolled, with why.
    public var rejectedAddresses: [RejectedAddress] = []

    public var hasChanges: Bool { !transaction.isEmpty || !bridgeTransaction.isEmpty }

    /// Every transaction of the plan, committed together in one batch.
    public var transactions: [Transaction] { [transaction, bridgeTransaction] }

    /// Operations over both tables.
    public var operationCount: Int { transaction.operations.count + bridgeTransaction.operations.count }

    /// Operations counted by verb and kind, e.g. `["add rule": 20, "delete element": 2]`.
    public var operationCounts: [(String, Int)] {
        var counts: [String: Int] = [:]
        for op in transaction.operations + bridgeTransaction.operations {
            let key: String
            switch op.object {
            case .table: key = "\(op.verb.rawValue) table"
            case .chain: key = "\(op.verb.rawValue) chain"
            case .set: key = "\(op.verb.rawValue) set"
            case .rule: key = "\(op.verb.rawValue) rule"
            case .elements(_, let elements):
                counts["\(op.verb.rawValue) element", default: 0] += elements.count
                continue
            }
            counts[key, default: 0] += 1
        }
        return counts.sorted { $0.key < $1.key }
    }
}

/// Turns policies and an inventory into a `Plan` against a backend, and applies plans.
public struct Planner: Sendable {
    public var options: Compiler.Options

    public init(options: Compiler.Options = Compiler.Options()) {
        self.options = options
    }

    public static let tableID = TableID(family: .inet, name: Names.table)
    /// The port-binding table, programmed in the same batch as `tableID`.
    public static let bridgeTableID = PortBinding.tableID

    /// Compares the desired table with what `backend` holds (or with nothing, when `backend` is nil
    /// or cannot be read; `unreadableReason` then says why).
    public func plan(policies: PolicySet, inventory: Inventory, backend: (any NetfilterBackend)?) throws -> Plan {
        var live: Table?, bridgeLive: Table?
        var baseline: Plan.Baseline
        if let backend {
            let generation = try backend.generation()
            live = try backend.dump(table: Self.tableID)
            bridgeLive = try backend.dump(table: Self.bridgeTableID)
            baseline = .kernel(generation: generation)
        } else {
            baseline = .empty(reason: "no kernel backend")
        }
        return try plan(policies: policies, inventory: inventory, live: live, bridgeLive: bridgeLive, baseline: baseline)
    }

    /// - Parameters:
    ///   - live: `inet bulkhead` as the kernel (or our last commit) holds it; nil: absent.
    ///   - bridgeLive: `bridge bulkhead` likewise.
    public func plan(policies: PolicySet, inventory: Inventory, live: Table?, bridgeLive: Table?, baseline: Plan.Baseline) throws -> Plan {
        let compiled = Compiler.compile(policies, inventory, options: options)
        var desired = compiled.table
        // Keep the flags the kernel reports for an existing table: ownership flags are the
        // backend's business, and a flag difference alone must not make a plan non-empty.
        if let live { desired.flags = live.flags }
        let transaction = try Diff.between(desired: desired, live: live, table: Self.tableID)
        var bridgeDesired = compiled.bridgeTable
        if let bridgeLive { bridgeDesired.flags = bridgeLive.flags }
        let bridgeTransaction = try Diff.between(desired: bridgeDesired, live: bridgeLive, table: Self.bridgeTableID)

        let evaluator = Evaluator(policies: policies, inventory: inventory)
        var containersOf: [ServiceRef: [String]] = [:]
        for (name, services) in evaluator.membership {
            for s in services { containersOf[s, default: []].append(name) }
        }
        func count(_ e: Endpoint) -> Int? { e.serviceRef.map { containersOf[$0]?.count ?? 0 } }

        let desiredReading = Decompiler.read(desired)
        let liveReading = live.map(Decompiler.read)
        let liveGrants = Set(liveReading?.grants ?? [])
        let desiredGrants = Set(desiredReading.grants)
        let opened = desiredReading.grants.filter { !liveGrants.contains($0) }
            .map { Plan.FlowChange(grant: $0, fromContainers: count($0.from), toContainers: count($0.to)) }
        let closed = (liveReading?.grants ?? []).filter { !desiredGrants.contains($0) }
            .map { Plan.FlowChange(grant: $0, fromContainers: count($0.from), toContainers: count($0.to)) }

        var owners: [IPAddress: String] = [:]
        for c in inventory.containers { for a in c.addresses { owners[a] = c.name } }
        var membership: [Plan.MembershipChange] = []
        let services = Set(desiredReading.members.keys).union(liveReading?.members.keys ?? [:].keys)
        for s in services.sorted() {
            let now = Set(desiredReading.members[s] ?? []), before = Set(liveReading?.members[s] ?? [])
            let added = now.subtracting(before).sorted(), removed = before.subtracting(now).sorted()
            guard !added.isEmpty || !removed.isEmpty else { continue }
            let names = Array(Set(added.compactMap { owners[$0] })).sorted()
            membership.append(.init(service: s, added: added, removed: removed, containers: names))
        }
        var plan = Plan(baseline: baseline, desired: desired, live: live, transaction: transaction,
                        bridgeDesired: bridgeDesired, bridgeLive: bridgeLive, bridgeTransaction: bridgeTransaction,
                        opened: opened, closed: closed, membership: membership,
                        foreignRules: liveReading?.unrecognized ?? [])
        plan.failures = compiled.failures
        plan.rejectedAddresses = compiled.rejectedAddresses
        return plan
    }

    /// Applies `plan`, refusing (without writing anything) if the ruleset changed since it was read.
    @discardableResult
    public func apply(_ plan: Plan, to backend: any NetfilterBackend) throws -> UInt32 {
        var expected: UInt32?
        if case .kernel(let generation) = plan.baseline { expected = generation }
        return try backend.apply(plan.transactions, expectedGeneration: expected)
    }
}
