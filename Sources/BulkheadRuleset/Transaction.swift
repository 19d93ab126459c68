/// An ordered list of operations on one table, validated as each is queued.
///
/// The transaction simulates its operations on the state it was created from, so an operation
/// that the kernel would refuse (a jump to a chain that does not exist yet, a lookup in a missing
/// set, an element that does not fit its set) throws at the call that queues it, and the
/// transaction is left as it was. A backend applies all operations in one atomic batch.
///
/// `description` is the `nft -f` script a human reads in `bulkhead plan --nft`.
public struct Transaction: Hashable, Sendable, CustomStringConvertible {
    public let table: TableID
    public private(set) var operations: [Operation] = []
    /// The table as it will be after the operations, given the state the transaction started from.
    public var expected: Table? { state.table }
    private var state: TableState

    /// Starts a transaction on `table` whose current content is `current` (nil: no such table).
    public init(table: TableID, current: Table?) {
        self.table = table
        self.state = TableState(id: table, table: current)
    }

    /// Starts a transaction against a backend's current dump of `table`.
    public init(table: TableID, backend: some NetfilterBackend) throws {
        self.init(table: table, current: try backend.dump(table: table))
    }

    public var isEmpty: Bool { operations.isEmpty }

    /// Validates `op` against the simulated state and queues it; on error nothing is queued.
    public mutating func append(_ op: Operation) throws(RulesetError) {
        // In place: `TableState.apply` checks everything before it changes anything.
        try state.apply(op)
        operations.append(op)
    }

    /// Queues `op` without validating it, for tests that must send the kernel what validation
    /// refuses (`FakeVersusKernelTests`: an unknown table flag). The simulated state is left as
    /// it was, so `expected` does not include `op`.
    mutating func appendUnvalidated(_ op: Operation) {
        operations.append(op)
    }

    public mutating func add(_ object: Object) throws(RulesetError) { try append(Operation(.add, object)) }
    public mutating func create(_ object: Object) throws(RulesetError) { try append(Operation(.create, object)) }
    public mutating func delete(_ object: Object) throws(RulesetError) { try append(Operation(.delete, object)) }
    public mutating func flush(_ object: Object) throws(RulesetError) { try append(Operation(.flush, object)) }

    /// The script, one command per line.
    public var description: String {
        operations.map { NFTScript.command($0, table: table) + "\n" }.joined()
    }

    public static func == (a: Self, b: Self) -> Bool { a.table == b.table && a.operations == b.operations }
    public func hash(into h: inout Hasher) {
        h.combine(table)
        h.combine(operations)
    }
}
