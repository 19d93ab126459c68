import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

#if canImport(Glibc)
import Glibc
#endif

/// The class of a refusal, common to both backends: the fake's `RulesetError` cases and the
/// kernel's errno map onto it (knftables' `IsNotFound` / `IsAlreadyExists` idea, one step finer).
enum Refusal: Hashable, Sendable, CustomStringConvertible {
    /// ENOENT: a table, chain, set, element, rule or jump target is missing.
    case notFound
    /// EEXIST: created twice, or an element that clashes (another verdict, an overlapping interval).
    case exists
    /// EBUSY: still referenced.
    case busy
    /// EINVAL (and ERANGE): the object does not fit (key type or length, data, definition).
    case invalid
    /// ELOOP or EMLINK: a jump would close a cycle.
    case loop
    /// EOPNOTSUPP: a jump to a base chain, a table flag that cannot be set or changed.
    case notSupported
    /// The generation check of the batch failed.
    case stale
    /// Anything else, with its text.
    case other(String)

    var description: String {
        switch self {
        case .notFound: "not found (ENOENT)"
        case .exists: "exists (EEXIST)"
        case .busy: "busy (EBUSY)"
        case .invalid: "invalid (EINVAL)"
        case .loop: "loop (ELOOP)"
        case .notSupported: "not supported (EOPNOTSUPP)"
        case .stale: "stale generation"
        case .other(let t): "other: \(t)"
        }
    }

    static func kernel(_ errno: Int32) -> Refusal {
        switch errno {
        case ENOENT: .notFound
        case EEXIST: .exists
        case EBUSY: .busy
        case EINVAL, ERANGE: .invalid
        // Kernel 6.18 refuses a jump that closes a loop with EMLINK: its jump-stack depth check
        // (NFT_JUMP_STACK_SIZE) trips before any loop detection, so it never says ELOOP here.
        case ELOOP, EMLINK: .loop
        case EOPNOTSUPP: .notSupported
        default: .other("errno \(errno)")
        }
    }

    static func fake(_ e: RulesetError) -> Refusal {
        switch e {
        case .noSuchTable, .noSuchChain, .noSuchSet, .noSuchElement, .noSuchRule, .jumpToMissingChain, .lookupInMissingSet: .notFound
        case .tableExists, .chainExists, .setExists, .elementExists, .intervalOverlap: .exists
        case .chainInUse, .setInUse: .busy
        case .keyMismatch, .dataMismatch, .invalidRule, .lookupMismatch, .invalidName, .ruleWithoutHandle, .wrongTable: .invalid
        // A redefinition: the kernel answers EEXIST for a set, EOPNOTSUPP for a chain (another
        // hook, priority or type, or a hook for a regular chain), as this suite measured.
        case .setConflict: .exists
        case .chainConflict: .notSupported
        case .jumpLoop: .loop
        case .jumpToBaseChain, .unsupported: .notSupported
        case .staleGeneration: .stale
        case .kernel(let errno, _): kernel(errno)
        case .operationFailed(_, _, let inner), .elementInBatch(_, _, let inner): fake(inner)
        case .permissionDenied, .tableOwnedByAnotherProcess, .backendFailure: .other(e.description)
        }
    }
}

/// What a backend decided about one batch.
enum Outcome: Hashable, Sendable, CustomStringConvertible {
    case accepted
    /// Refused; `index` is the operation blamed (across the batch's transactions), nil for the
    /// batch as a whole (generation).
    case refused(Refusal, index: Int?)

    init(_ error: any Error) {
        guard let r = error as? RulesetError else {
            self = .refused(.other("\(type(of: error)): \(error)"), index: nil)
            return
        }
        var index: Int?
        if case .operationFailed(let i, _, _) = r { index = i }
        self = .refused(Refusal.fake(r), index: index)
    }

    var description: String {
        switch self {
        case .accepted: "accepted"
        case .refused(let r, let i): "refused \(r)" + (i.map { " at operation \($0)" } ?? "")
        }
    }
}

/// The fake and the kernel (a fresh namespace), fed the same steps.
final class Differential {
    let fake = FakeNetfilter()
    let kernel: NetlinkNetfilter
    let namespace: String
    /// Steps run; every test asserts it ran some.
    private(set) var steps = 0
    static let tables = [TableID(family: .inet, name: "bulkhead"), TableID(family: .bridge, name: "bulkhead")]

    private init(namespace: String) throws {
        self.namespace = namespace
        // No ownership flags: the fake has no notion of an owning socket.
        kernel = try NetlinkNetfilter(namespace: namespace, ownership: .disabled)
    }

    static func run(sourceLocation: SourceLocation = #_sourceLocation, _ body: (Differential) throws -> Void) throws {
        try Kernel.withNamespace { ns in
            let d = try Differential(namespace: ns)
            try body(d)
            #expect(d.steps > 0, "the differential ran no step", sourceLocation: sourceLocation)
        }
    }

    /// Both tables as `backend` holds them.
    func dumps(_ backend: any NetfilterBackend) throws -> [TableID: Table?] {
        var out: [TableID: Table?] = [:]
        for id in Self.tables { out[id] = .some(try backend.dump(table: id)) }
        return out
    }

    /// Builds the batch once per backend from that backend's own dumps (rule handles differ
    /// between them), requires the two batches to be the same apart from handles, applies each,
    /// and requires both decisions to equal `expect` and the tables to be the same afterwards.
    func step(_ label: String, expect: Outcome, generation: (UInt32) -> UInt32 = { $0 },
              sourceLocation: SourceLocation = #_sourceLocation,
              _ build: ([TableID: Table?]) throws -> [Transaction]) throws {
        let fakeBatch = try build(try dumps(fake))
        let kernelBatch = try build(try dumps(kernel))
        #expect(Self.withoutHandles(fakeBatch) == Self.withoutHandles(kernelBatch),
                "\(label): the two backends' dumps led to different transactions", sourceLocation: sourceLocation)
        let f: Outcome, k: Outcome
        do {
            try fake.apply(fakeBatch, expectedGeneration: generation(try fake.generation()))
            f = .accepted
        } catch { f = Outcome(error) }
        do {
            try kernel.apply(kernelBatch, expectedGeneration: generation(try kernel.generation()))
            k = .accepted
        } catch { k = Outcome(error) }
        #expect(f == k, "\(label): the fake and the kernel disagree: fake \(f), kernel \(k)", sourceLocation: sourceLocation)
        #expect(k == expect, "\(label): kernel \(k), expected \(expect)", sourceLocation: sourceLocation)
        #expect(f == expect, "\(label): fake \(f), expected \(expect)", sourceLocation: sourceLocation)
        try compareTables(label, sourceLocation: sourceLocation)
        steps += 1
    }

    /// Plans `policies` over `inventory` against each backend (both tables) and applies it.
    func plan(_ label: String, _ policies: PolicySet, _ inventory: Inventory, expect: Outcome, expectEmpty: Bool = false,
              sourceLocation: SourceLocation = #_sourceLocation) throws {
        try step(label, expect: expect, sourceLocation: sourceLocation) { t in
            let plan = try Planner().plan(policies: policies, inventory: inventory, live: t[Self.tables[0]] ?? nil,
                                          bridgeLive: t[Self.tables[1]] ?? nil, baseline: .empty(reason: "differential"))
            if expectEmpty {
                #expect(!plan.hasChanges, "\(label): expected nothing to do, got\n\(plan.transaction)\(plan.bridgeTransaction)",
                        sourceLocation: sourceLocation)
            } else {
                #expect(plan.hasChanges, "\(label): expected changes", sourceLocation: sourceLocation)
            }
            return plan.transactions
        }
    }

    /// The agent's element-only path for one container added or removed (both tables).
    func incremental(_ label: String, _ policies: PolicySet, _ inventory: Inventory, _ change: IncrementalPlanner.Change,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        try step(label, expect: .accepted, sourceLocation: sourceLocation) { t in
            let applied = try #require(t[Self.tables[0]] ?? nil, sourceLocation: sourceLocation)
            let planner = IncrementalPlanner(policies: policies, inventory: inventory, applied: applied)
            var out: [Transaction] = []
            for outcome in [planner.transaction(for: change), planner.bindingTransaction(for: change)] {
                switch outcome {
                case .transaction(let tx):
                    #expect(!tx.isEmpty, "\(label): an empty incremental transaction", sourceLocation: sourceLocation)
                    out.append(tx)
                case .needsFullPlan(let reason):
                    throw TestSystem.Failure("\(label): the incremental planner wants a full plan: \(reason)")
                }
            }
            return out
        }
    }

    func compareTables(_ label: String, sourceLocation: SourceLocation) throws {
        for id in Self.tables {
            let f = Self.normalized(try fake.dump(table: id)), k = Self.normalized(try kernel.dump(table: id))
            if f != k {
                let ft = f.map(NFTText.table) ?? "<no table>\n", kt = k.map(NFTText.table) ?? "<no table>\n"
                Issue.record("\(label): \(id) differs between the fake and the kernel\n\(ft == kt ? "(same text; model values differ)\nfake   \(String(describing: f))\nkernel \(String(describing: k))" : lineDiff(kt, ft).replacingOccurrences(of: "  nft:", with: "  kernel:").replacingOccurrences(of: "  model:", with: "  fake:"))",
                             sourceLocation: sourceLocation)
            }
        }
    }

    /// Without live state (handles, counter values), rules grouped chain by chain as the kernel
    /// lists them (the fake keeps them in table order).
    static func normalized(_ t: Table?) -> Table? {
        guard var t = comparable(t) else { return nil }
        let order = Dictionary(uniqueKeysWithValues: t.chains.enumerated().map { ($1.name, $0) })
        t.rules = t.rules.enumerated().sorted { (order[$0.1.chain] ?? -1, $0.0) < (order[$1.1.chain] ?? -1, $1.0) }.map(\.1)
        return t
    }

    static func withoutHandles(_ batch: [Transaction]) -> [[BulkheadRuleset.Operation]] {
        batch.map { tx in
            tx.operations.map { op in
                guard case .rule(var r) = op.object else { return op }
                r.handle = nil
                return BulkheadRuleset.Operation(op.verb, .rule(r))
            }
        }
    }
}

// MARK: inputs

func exampleDiffPolicies() throws -> PolicySet {
    let loaded = PolicyLoader.load(paths: [TestSystem.repositoryRoot + "/policies"])
    #expect(!loaded.hasErrors)
    return loaded.policies
}

func exampleDiffInventory() throws -> Inventory {
    let (inventory, _) = InventoryLoader.load(path: TestSystem.repositoryRoot + "/policies/inventory.json")
    return try #require(inventory)
}

func diffPolicies(_ yaml: String) throws -> PolicySet {
    let loaded = PolicyLoader.load(sources: [("test.yaml", Array(yaml.utf8))])
    #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
    return loaded.policies
}

/// Gives every attachment a MAC and a port, so the bridge table binds them (the example
/// inventory file has none: it stands for a host whose ports are looked up at run time).
func withPorts(_ inventory: Inventory) -> Inventory {
    var inv = inventory
    for (i, c) in inv.containers.enumerated() {
        for (j, name) in c.networks.keys.sorted().enumerated() {
            inv.containers[i].networks[name]!.mac = String(format: "02:42:00:00:%02x:%02x", i, j)
            inv.containers[i].networks[name]!.port = "vethc\(i)n\(j)"
        }
    }
    return inv
}

