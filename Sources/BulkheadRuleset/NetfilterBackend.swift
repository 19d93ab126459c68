/// The side effect Bulkhead has: reading and atomically changing one nftables table.
///
/// Two conformers: `BulkheadNetfilter`'s netlink backend (the kernel) and `FakeNetfilter`
/// (in memory, for unit tests). Both must behave the same way:
/// - `dump(table:)` returns the full table — chains, sets with elements, rules with handles and
///   counters — or nil if it does not exist. Sets and chains come in creation order (as the kernel
///   lists them), elements in `ElementOrder`, rules in chain order.
/// - `apply(_:expectedGeneration:)` commits every operation of the transaction in one atomic
///   batch and returns the ruleset generation after the commit. If any operation fails, nothing
///   changes and the error is `RulesetError.operationFailed(index:operation:error:)` naming the
///   operation. With `expectedGeneration`, the commit fails with `.staleGeneration` when someone
///   changed the ruleset since that generation was read (the kernel checks
///   `NFTA_GEN_ID` in the batch begin message the same way).
/// - `generation()` reads the current generation (`NFT_MSG_GETGEN`); it increments on every
///   successful commit by anyone, so dump → diff → apply with the generation read before the
///   dump never overwrites a concurrent change.
/// - `apply(_ transactions:expectedGeneration:)` does the same for transactions on several tables
///   (`inet bulkhead` and `bridge bulkhead`): one batch, all or nothing; operation indices in
///   errors run on across the transactions in order.
/// - Every error these methods throw is a `RulesetError`, the one vocabulary of this boundary; callers
///   classify it with `isStaleGeneration`, `isPermissionDenied`, `isNotFound`, … (`RulesetError`).
public protocol NetfilterBackend: Sendable {
    func dump(table: TableID) throws -> Table?
    @discardableResult
    func apply(_ transactions: [Transaction], expectedGeneration: UInt32?) throws -> UInt32
    func generation() throws -> UInt32
}

extension NetfilterBackend {
    @discardableResult
    public func apply(_ tx: Transaction, expectedGeneration: UInt32?) throws -> UInt32 {
        try apply([tx], expectedGeneration: expectedGeneration)
    }
}
