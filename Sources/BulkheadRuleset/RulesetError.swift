/// Everything that can be wrong with a ruleset change, worded for the person reading `plan` or
/// `apply` output: the one error vocabulary of `NetfilterBackend`. The fake raises the cases its
/// validation finds; the netlink backend maps kernel errors onto `kernel(...)` (by operation),
/// `staleGeneration`, `permissionDenied`, `tableOwnedByAnotherProcess`, and everything between it
/// and the kernel onto `backendFailure`. Callers classify with `isStaleGeneration`,
/// `isPermissionDenied`, `isNotFound`, … rather than by case or by backend.
public indirect enum RulesetError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalidName(kind: String, name: String, reason: String)
    case wrongTable(expected: TableID, got: TableID)
    case tableExists(TableID)
    case noSuchTable(TableID)
    case chainExists(String)
    case noSuchChain(String)
    case chainConflict(String, reason: String)
    case setExists(String)
    case noSuchSet(String)
    case setConflict(String, reason: String)
    case jumpToMissingChain(from: String, to: String)
    case jumpToBaseChain(from: String, to: String)
    case jumpLoop(chain: String, target: String)
    case lookupInMissingSet(chain: String, set: String)
    case lookupMismatch(chain: String, set: String, reason: String)
    case chainInUse(String, by: [String])
    case setInUse(String, by: [String])
    case keyMismatch(set: String, element: String, reason: String)
    case dataMismatch(set: String, element: String, reason: String)
    case intervalOverlap(set: String, element: String, existing: String)
    case elementExists(set: String, element: String)
    case noSuchElement(set: String, element: String)
    case noSuchRule(chain: String, handle: UInt64)
    case ruleWithoutHandle(chain: String)
    case invalidRule(chain: String, rule: String, reason: String)
    case unsupported(String)
    case staleGeneration(expected: UInt32, actual: UInt32)
    /// Element `index` (0-based) of a batch of `count` elements was refused for `error`: in a
    /// batch of 100,000 the value alone does not say where to look.
    case elementInBatch(index: Int, count: Int, error: RulesetError)
    /// Operation `index` (0-based) of a transaction failed; nothing was changed.
    case operationFailed(index: Int, operation: String, error: RulesetError)
    /// An error from the kernel that has no better mapping (errno and extended-ack text).
    case kernel(errno: Int32, message: String)
    /// The process lacks CAP_NET_ADMIN where it reads or changes nftables.
    case permissionDenied(operation: String)
    /// Another live process holds the table (`owner` flag): only it can change it.
    case tableOwnedByAnotherProcess(table: String)
    /// The backend could not talk to the kernel at all (socket, namespace, timeout, a reply it
    /// cannot read); the text is the backend's own error.
    case backendFailure(String)

    public var description: String {
        switch self {
        case .invalidName(let kind, let name, let reason): "invalid \(kind) name '\(name)': \(reason)"
        case .wrongTable(let e, let g): "operation is for table \(g) but the transaction is for table \(e)"
        case .tableExists(let t): "table \(t) already exists"
        case .noSuchTable(let t): "table \(t) does not exist"
        case .chainExists(let c): "chain '\(c)' already exists"
        case .noSuchChain(let c): "chain '\(c)' does not exist"
        case .chainConflict(let c, let r): "chain '\(c)' already exists with a different definition: \(r)"
        case .setExists(let s): "set '\(s)' already exists"
        case .noSuchSet(let s): "set '\(s)' does not exist"
        case .setConflict(let s, let r): "set '\(s)' already exists with a different definition: \(r)"
        case .jumpToMissingChain(let f, let t): "chain '\(f)' jumps to missing chain '\(t)'"
        case .jumpToBaseChain(let f, let t): "chain '\(f)' jumps to base chain '\(t)'; only regular chains can be jump targets"
        case .jumpLoop(let c, let t): "jump from chain '\(c)' to '\(t)' would create a loop"
        case .lookupInMissingSet(let c, let s): "a rule in chain '\(c)' looks up missing set '\(s)'"
        case .lookupMismatch(let c, let s, let r): "a rule in chain '\(c)' cannot look up '\(s)': \(r)"
        case .chainInUse(let c, let by): "chain '\(c)' is still referenced by \(by.joined(separator: ", "))"
        case .setInUse(let s, let by): "set '\(s)' is still used by rules in \(by.map { "chain '\($0)'" }.joined(separator: ", "))"
        case .keyMismatch(let s, let e, let r): "element '\(e)' does not fit set '\(s)': \(r)"
        case .dataMismatch(let s, let e, let r): "element '\(e)' of '\(s)': \(r)"
        case .intervalOverlap(let s, let e, let x): "element '\(e)' overlaps '\(x)' in interval set '\(s)'"
        case .elementExists(let s, let e): "element '\(e)' already exists in '\(s)'"
        case .noSuchElement(let s, let e): "element '\(e)' is not in '\(s)'"
        case .noSuchRule(let c, let h): "chain '\(c)' has no rule with handle \(h)"
        case .ruleWithoutHandle(let c): "cannot delete a rule in chain '\(c)' without its handle"
        case .invalidRule(let c, let r, let reason): "invalid rule in chain '\(c)' (\(r)): \(reason)"
        case .unsupported(let what): "unsupported: \(what)"
        case .staleGeneration(let e, let a):
            "the ruleset changed since it was read (generation \(a), expected \(e)); read it again and retry"
        case .elementInBatch(let i, let n, let err): "element \(i + 1) of \(n): \(err)"
        case .operationFailed(let i, let op, let err): "operation \(i + 1) (\(op)) failed: \(err)"
        case .kernel(let errno, let message): "kernel error \(errno): \(message)"
        case .permissionDenied(let op):
            "\(op): permission denied: Bulkhead needs CAP_NET_ADMIN (run as root, or grant the capability) to read or change nftables"
        case .tableOwnedByAnotherProcess(let table):
            "\(table): refused with EPERM: another running process owns the table (flags owner,persist), "
                + "probably the bulkhead agent; stop it or make the change through it"
        case .backendFailure(let text): text
        }
    }
}

// Classification, as knftables' IsNotFound / IsAlreadyExists: callers react to the kind of
// failure, whichever backend (kernel or fake) raised it and however deep it is wrapped.
extension RulesetError {
    // errno values (Linux), so this target needs no libc import.
    static let ENOENT: Int32 = 2, EPERM: Int32 = 1, EEXIST: Int32 = 17, EBUSY: Int32 = 16, EOPNOTSUPP: Int32 = 95

    /// The error an operation failure wraps, or the error itself.
    public var underlying: RulesetError {
        if case .operationFailed(_, _, let inner) = self { return inner.underlying }
        if case .elementInBatch(_, _, let inner) = self { return inner.underlying }
        return self
    }

    /// Someone committed since the ruleset was read: nothing was written; read again and retry.
    public var isStaleGeneration: Bool {
        if case .staleGeneration = underlying { return true }
        return false
    }

    /// The process lacks the privilege (CAP_NET_ADMIN) to read or change nftables.
    public var isPermissionDenied: Bool {
        if case .permissionDenied = underlying { return true }
        return false
    }

    /// Another live process owns the table (EPERM on one message, not on the whole batch).
    public var isOwnedByAnotherProcess: Bool {
        switch underlying {
        case .tableOwnedByAnotherProcess: return true
        case .kernel(let errno, _): return errno == Self.EPERM
        default: return false
        }
    }

    /// Something the operation needs does not exist (table, chain, set, element, rule).
    public var isNotFound: Bool {
        switch underlying {
        case .noSuchTable, .noSuchChain, .noSuchSet, .noSuchElement, .noSuchRule, .jumpToMissingChain, .lookupInMissingSet: return true
        case .kernel(let errno, _): return errno == Self.ENOENT
        default: return false
        }
    }

    /// Something the operation creates exists already.
    public var isAlreadyExists: Bool {
        switch underlying {
        case .tableExists, .chainExists, .setExists, .elementExists: return true
        case .kernel(let errno, _): return errno == Self.EEXIST
        default: return false
        }
    }

    /// Something is still in use (a chain jumped to, a set looked up).
    public var isInUse: Bool {
        switch underlying {
        case .chainInUse, .setInUse: return true
        case .kernel(let errno, _): return errno == Self.EBUSY
        default: return false
        }
    }

    /// The backend never reached the kernel's verdict (socket, namespace, timeout, garbled reply).
    public var isBackendFailure: Bool {
        if case .backendFailure = underlying { return true }
        return false
    }

    /// `error` is a `RulesetError` for which `isStaleGeneration` holds.
    public static func isStaleGeneration(_ error: any Error) -> Bool { (error as? RulesetError)?.isStaleGeneration ?? false }
    /// `error` is a `RulesetError` for which `isPermissionDenied` holds.
    public static func isPermissionDenied(_ error: any Error) -> Bool { (error as? RulesetError)?.isPermissionDenied ?? false }
    /// `error` is a `RulesetError` for which `isNotFound` holds.
    public static func isNotFound(_ error: any Error) -> Bool { (error as? RulesetError)?.isNotFound ?? false }
    /// `error` is a `RulesetError` for which `isAlreadyExists` holds.
    public static func isAlreadyExists(_ error: any Error) -> Bool { (error as? RulesetError)?.isAlreadyExists ?? false }
}
