import BulkheadCompiler
import BulkheadInventory
import BulkheadLayout
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

    /// What a plan does to the table itself, beyond its contents.
    public enum TableChange: Sendable, Hashable {
        /// The table does not exist yet and is created.
        case create
        /// The table lacks the ownership flags the backend puts on it (`owner,persist`; it was
        /// created by another program or restored with `nft -f`), and the kernel never adds them
        /// to an existing table (EOPNOTSUPP). It is deleted and created again with everything in
        /// it, in the same transaction: the kernel swaps the old table for the new one in one
        /// commit, so no packet sees neither. Rule counters start again from zero.
        case replace(liveFlags: TableFlags, flags: TableFlags)
        /// Flags changed in place, e.g. `dormant` cleared (a dormant table enforces nothing).
        case flags(from: TableFlags, to: TableFlags)
    }

    public var baseline: Baseline
    /// What happens to the table itself (nil: it stays as it is).
    public var tableChange: TableChange?
    /// The same for the `bridge bulkhead` table.
    public var bridgeTableChange: TableChange? = nil
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
    /// Live connections the policies deny, which applying would cut (nil: not asked; `plan`
    /// fills it from connection tracking, see `Revocation`).
    public var connections: Revocation.Census? = nil
    /// The classification `desired` was compiled from (`Compiler.Output.evaluator`): what
    /// `plan`'s connection census and `apply`'s revocation ask, so they judge by the same one.
    public var evaluator: Evaluator

    public var hasChanges: Bool { !transaction.isEmpty || !bridgeTransaction.isEmpty }

    /// Every transaction of the plan, committed together in one batch.
    public var transactions: [Transaction] { [transaction, bridgeTransaction] }

    /// Operations over both tables.
    public var operationCount: Int { transaction.operations.count + bridgeTransaction.operations.count }

    /// `dormant,owner,persist`, or `none`.
    public static func flagNames(_ flags: TableFlags) -> String {
        let names = [(TableFlags.dormant, "dormant"), (.owner, "owner"), (.persist, "persist")].filter { flags.contains($0.0) }.map(\.1)
        return names.isEmpty ? "none" : names.joined(separator: ",")
    }

    /// One sentence on what happens to the table itself, for `plan` and `apply` (nil: nothing).
    public var tableChangeSummary: String? { Self.summary(of: tableChange) }

    /// The same for the `bridge bulkhead` table.
    public var bridgeTableChangeSummary: String? { Self.summary(of: bridgeTableChange) }

    static func summary(of change: TableChange?) -> String? {
        switch change {
        case .replace(let was, let now)?:
            return "the table is replaced: it has flags \(Self.flagNames(was)) and lacks \(Self.flagNames(now.subtracting(was))), "
                + "which the kernel never adds to an existing table (it was created by another program or restored with nft -f); "
                + "it is deleted and created again with flags \(Self.flagNames(now)) in this one transaction (atomic; rule counters restart)"
        case .flags(let was, let now)?:
            let why = was.contains(.dormant) && !now.contains(.dormant) ? " (a dormant table enforces nothing)" : ""
            return "table flags change from \(Self.flagNames(was)) to \(Self.flagNames(now))\(why)"
        case .create?, nil:
            return nil
        }
    }

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

    /// Ownership flags the backend keeps on the table (`owner,persist` for the netlink backend on
    /// kernels that have them; empty: none). `plan(…backend:)` takes them from a backend that
    /// conforms to `TableFlagsManaging`.
    public var ownershipFlags: TableFlags

    public init(options: Compiler.Options = Compiler.Options(), ownershipFlags: TableFlags = []) {
        self.options = options
        self.ownershipFlags = ownershipFlags
    }

    /// Flags the kernel lets a backend neither add to nor remove from an existing table:
    /// `persist` never changes, and `owner` is added only to an orphaned persistent table.
    static let ownershipMask: TableFlags = [.owner, .persist]

    public static let tableID = TableLayout.inet
    /// The port-binding table, programmed in the same batch as `tableID`.
    public static let bridgeTableID = PortBinding.tableID

    /// Compares the desired table with what `backend` holds (or with nothing, when `backend` is nil
    /// or cannot be read; `unreadableReason` then says why).
    public func plan(policies: PolicySet, inventory: Inventory, backend: (any NetfilterBackend)?) throws -> Plan {
        var planner = self
        if let managing = backend as? any TableFlagsManaging { planner.ownershipFlags = managing.managedTableFlags }
        return try planner.planReading(policies: policies, inventory: inventory, backend: backend)
    }

    private func planReading(policies: PolicySet, inventory: Inventory, backend: (any NetfilterBackend)?) throws -> Plan {
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
    ///   - describing: whether to read the grants and memberships back out of both tables
    ///     (`opened`, `closed`, `membership`, the decompiler's foreign rules). That semantic diff
    ///     costs about as much as the compile; the agent asks for it only when it logs it (a
    ///     policy change, drift), `plan` always. Without it those fields are empty and
    ///     `foreignRules` holds only the rules the backend could not decode.
    public func plan(policies: PolicySet, inventory: Inventory, live: Table?, bridgeLive: Table?, baseline: Plan.Baseline,
                     describing: Bool = true) throws -> Plan {
        let compiled = Compiler.compile(policies, inventory, options: options)
        var desired = compiled.table
        let tableChange = tableFlags(desired: &desired, live: live)
        let transaction = try Diff.between(desired: desired, live: live, table: Self.tableID)
        // The bridge table gets the same treatment: a dormant one binds no port.
        var bridgeDesired = compiled.bridgeTable
        let bridgeTableChange = tableFlags(desired: &bridgeDesired, live: bridgeLive)
        let bridgeTransaction = try Diff.between(desired: bridgeDesired, live: bridgeLive, table: Self.bridgeTableID)

        guard describing else {
            var foreign: [Rule] = []
            for rule in (live?.rules ?? []) + (bridgeLive?.rules ?? []) where rule.isUndecoded { foreign.append(rule) }
            var plan = Plan(baseline: baseline, tableChange: tableChange, desired: desired, live: live, transaction: transaction,
                            bridgeDesired: bridgeDesired, bridgeLive: bridgeLive, bridgeTransaction: bridgeTransaction,
                            opened: [], closed: [], membership: [], foreignRules: foreign, evaluator: compiled.evaluator)
            plan.bridgeTableChange = bridgeTableChange
            plan.failures = compiled.failures
            plan.rejectedAddresses = compiled.rejectedAddresses
            return plan
        }
        let evaluator = compiled.evaluator
        var containersOf: [ServiceRef: [String]] = [:]
        for (name, services) in evaluator.membership {
            for s in services { containersOf[s, default: []].append(name) }
        }
        func count(_ e: Endpoint) -> Int? { e.serviceRef.map { containersOf[$0]?.count ?? 0 } }

        let desiredReading = Decompiler.read(desired)
        let liveReading = live.map(Decompiler.read)
        let liveGrants = Set(liveReading?.grants ?? [])
        // Against no table (a cold plan) every desired grant opens and none closes.
        let desiredGrants: Set<Grant> = liveReading == nil ? [] : Set(desiredReading.grants)
        // The tables name flows by their root-relative file (`FlowReference`); people read the
        // path they gave. A reference no current flow has (a closed one) stays as the table has it.
        var given: [String: String] = [:]
        for (reference, flow) in compiled.flowsByReference { given[reference.text] = flow.reference }
        func change(_ g: Grant) -> Plan.FlowChange {
            var g = g
            g.reference = given[g.reference] ?? g.reference
            return Plan.FlowChange(grant: g, fromContainers: count(g.from), toContainers: count(g.to))
        }
        let opened = (liveGrants.isEmpty ? desiredReading.grants : desiredReading.grants.filter { !liveGrants.contains($0) }).map(change)
        let closed = (liveReading?.grants ?? []).filter { !desiredGrants.contains($0) }.map(change)

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
        // Rules the backend could not decode (another program's expressions, lengths Bulkhead
        // never writes) anywhere in the table, besides the identity-chain rules the decompiler
        // does not recognise: all of them are replaced by the transaction.
        var foreign = liveReading?.unrecognized ?? []
        for rule in live?.rules ?? [] where rule.isUndecoded && !foreign.contains(rule) { foreign.append(rule) }
        for rule in bridgeLive?.rules ?? [] where rule.isUndecoded { foreign.append(rule) }
        var plan = Plan(baseline: baseline, tableChange: tableChange, desired: desired, live: live, transaction: transaction,
                        bridgeDesired: bridgeDesired, bridgeLive: bridgeLive, bridgeTransaction: bridgeTransaction,
                        opened: opened, closed: closed, membership: membership, foreignRules: foreign,
                        evaluator: compiled.evaluator)
        plan.bridgeTableChange = bridgeTableChange
        plan.failures = compiled.failures
        plan.rejectedAddresses = compiled.rejectedAddresses
        return plan
    }

    /// Decides the flags of the desired table against the live one. The compiler never asks for
    /// `dormant` (a dormant table enforces nothing), so a live dormant table is woken up. The
    /// ownership flags come from the backend: a table that has `persist` is ours to adopt as it
    /// is; one without it cannot get it and is replaced, when the backend manages ownership.
    func tableFlags(desired: inout Table, live: Table?) -> Plan.TableChange? {
        let mask = Self.ownershipMask
        desired.flags.subtract(mask)
        guard let live else {
            desired.flags.formUnion(ownershipFlags)
            return .create
        }
        if ownershipFlags.isEmpty || live.flags.contains(.persist) {
            desired.flags.formUnion(live.flags.intersection(mask))
        } else {
            desired.flags.formUnion(ownershipFlags)
            return .replace(liveFlags: live.flags, flags: desired.flags)
        }
        return desired.flags == live.flags ? nil : .flags(from: live.flags, to: desired.flags)
    }

    /// Applies `plan`, refusing (without writing anything) if the ruleset changed since it was read.
    @discardableResult
    public func apply(_ plan: Plan, to backend: any NetfilterBackend) throws -> UInt32 {
        var expected: UInt32?
        if case .kernel(let generation) = plan.baseline { expected = generation }
        return try backend.apply(plan.transactions, expectedGeneration: expected)
    }
}
