import Synchronization

/// An in-memory `NetfilterBackend` that validates like the kernel (see `TableState`), commits
/// atomically, assigns rule handles and counts generations. For unit tests of everything above
/// the netlink layer.
@available(macOS 15.0, *)
public final class FakeNetfilter: NetfilterBackend {
    private struct Store {
        /// Kept indexed between commits, so a commit costs what it changes (a dump materialises).
        var tables: [TableID: TableState] = [:]
        var generation: UInt32 = 1
        var nextHandle: UInt64 = 1
        var commits: [Transaction] = []
    }

    private let store: Mutex<Store>

    /// Starts with `tables` already present (handles are assigned to their rules).
    public init(tables: [Table] = []) {
        var s = Store()
        for var t in tables {
            for i in t.rules.indices {
                t.rules[i].handle = s.nextHandle
                s.nextHandle += 1
            }
            s.tables[t.id] = TableState(id: t.id, table: t)
        }
        store = Mutex(s)
    }

    public func dump(table: TableID) throws -> Table? {
        store.withLock { $0.tables[table]?.table }
    }

    public func generation() throws -> UInt32 {
        store.withLock { $0.generation }
    }

    /// Every transaction committed so far, oldest first.
    public var commits: [Transaction] {
        store.withLock { $0.commits }
    }

    @discardableResult
    public func apply(_ transactions: [Transaction], expectedGeneration: UInt32?) throws -> UInt32 {
        try store.withLock { s throws(RulesetError) -> UInt32 in
            if let expected = expectedGeneration, expected != s.generation {
                throw .staleGeneration(expected: expected, actual: s.generation)
            }
            // Copies: the stored state stays as it was if an operation fails (atomic batch).
            var states = s.tables
            var nextHandle = s.nextHandle
            var first = 0
            for tx in transactions {
                var state = states[tx.table] ?? TableState(id: tx.table, table: nil)
                state.nextHandle = nextHandle
                for (i, op) in tx.operations.enumerated() {
                    do throws(RulesetError) {
                        try state.apply(op)
                    } catch {
                        throw .operationFailed(index: first + i, operation: NFTScript.command(op, table: tx.table), error: error)
                    }
                }
                states[tx.table] = state
                nextHandle = state.nextHandle ?? nextHandle
                first += tx.operations.count
            }
            s.tables = states
            s.nextHandle = nextHandle
            let changed = transactions.filter { !$0.isEmpty }
            if !changed.isEmpty {
                s.generation &+= 1
                s.commits += changed
            }
            return s.generation
        }
    }

    /// Changes a table behind Bulkhead's back, as another program would (bumps the generation).
    public func tamper(_ id: TableID, _ change: (inout Table?) -> Void) {
        store.withLock { s in
            var t = s.tables[id]?.table
            change(&t)
            s.tables[id] = TableState(id: id, table: t)
            s.generation &+= 1
        }
    }
}
