import BulkheadRuleset

/// Encodes a BulkheadRuleset `Transaction` into one nf_tables batch.
///
/// Operation *i* of the transaction becomes one or more messages (a set with elements, element
/// lists split at 64 KiB, a rule with its anonymous sets), all mapped back to index *i*.
struct TransactionEncoder {
    /// Table flags this backend adds to every NEWTABLE (owner|persist where supported).
    var ownershipFlags: TableFlags = []
    /// Page size of the batch buffer (tests use a small one to force several pages).
    var pageSize: UInt32 = EncodedBatch.defaultPageSize
    /// Keep a byte copy of every message (golden tests and error hints).
    var recordMessages = false

    /// Flags that only this backend decides (the kernel rejects `persist` where unsupported).
    static let ownershipMask: TableFlags = [.owner, .persist]

    func encode(_ tx: Transaction, generation: UInt32?, seq: @escaping () -> UInt32) throws -> EncodedBatch {
        try encode([tx], generation: generation, seq: seq)
    }

    /// One batch for several tables (`inet bulkhead` and `bridge bulkhead`): the kernel commits
    /// all of it or none, under one generation check. Operation indices run on across the
    /// transactions, in order.
    func encode(_ txs: [Transaction], generation: UInt32?, seq: @escaping () -> UInt32) throws -> EncodedBatch {
        let batch = try EncodedBatch(generation: generation, seq: seq, pageSize: pageSize, recordMessages: recordMessages)
        var setID: UInt32 = 1
        func tableFlags(_ requested: TableFlags) -> UInt32 {
            // Without ownership of its own, the backend re-sends what the table has (the kernel
            // refuses to drop `owner` or `persist` from an existing table).
            let ownership = ownershipFlags.isEmpty ? requested.intersection(Self.ownershipMask) : ownershipFlags
            return requested.subtracting(Self.ownershipMask).union(ownership).rawValue
        }
        // Re-sending NEWTABLE with owner|persist adopts a table whose owner has gone (and fails
        // with EPERM while another live process owns it), so an owned table is claimed by every
        // transaction, not only the one that creates it.
        for tx in txs {
            let touchesTable = tx.operations.contains { if case .table = $0.object { return true }; return false }
            if !ownershipFlags.isEmpty && !touchesTable && !tx.operations.isEmpty {
                let index = batch.beginOperation("adopt table \(tx.table) (flags owner,persist)")
                try MessageEncoder(table: tx.table).newTable(tx.expected ?? Table(family: tx.table.family, name: tx.table.name),
                                 flags: tableFlags(tx.expected?.flags ?? []), exclusive: false, into: batch, operation: index)
            }
        }
        batch.implicitOperations = batch.operationCount
        var first = 0
        for tx in txs {
            try append(tx, to: batch, firstIndex: first, setID: &setID, tableFlags: tableFlags)
            first += tx.operations.count
        }
        try batch.end()
        return batch
    }

    private func append(_ tx: Transaction, to batch: EncodedBatch, firstIndex: Int, setID: inout UInt32,
                        tableFlags: (TableFlags) -> UInt32) throws {
        let enc = MessageEncoder(table: tx.table)
        var knownSets: [String: NFTSet] = [:]
        for s in tx.expected?.sets ?? [] { knownSets[s.name] = s.definition }
        let offset = batch.operationCount

        for (i0, op) in tx.operations.enumerated() {
            let i = i0 + firstIndex
            let index = batch.beginOperation(NFTScript.command(op, table: tx.table))
            precondition(index == i0 + offset)
            let exclusive = op.verb == .create
            switch (op.verb, op.object) {
            case (.add, .table(let t)), (.create, .table(let t)):
                try enc.newTable(t, flags: tableFlags(t.flags), exclusive: exclusive, into: batch, operation: index)
            case (.delete, .table):
                try enc.deleteTable(into: batch, operation: index)
            case (.flush, .table):
                try enc.flushRules(chain: nil, into: batch, operation: index)

            case (.add, .chain(let c)), (.create, .chain(let c)):
                try enc.newChain(c, exclusive: exclusive, into: batch, operation: index)
            case (.delete, .chain(let c)):
                try enc.deleteChain(c.name, into: batch, operation: index)
            case (.flush, .chain(let c)):
                try enc.flushRules(chain: c.name, into: batch, operation: index)

            case (.add, .set(let s)), (.create, .set(let s)):
                try enc.newSet(name: s.name, key: s.key, kernelFlags: s.kernelFlags, data: s.data,
                               timeoutMilliseconds: s.timeoutMilliseconds, setID: setID, descSize: nil,
                               exclusive: exclusive, into: batch, operation: index)
                knownSets[s.name] = s.definition
                // By id: the set was created just now (see `MessageEncoder.elements`).
                try enc.elements(s.elements, of: s, setName: s.name, setID: setID, delete: false, exclusive: false,
                                 into: batch, operation: index)
                setID += 1
            case (.delete, .set(let s)):
                try enc.deleteSet(s.name, into: batch, operation: index)
            case (.flush, .set(let s)):
                try enc.flushSet(s.name, into: batch, operation: index)

            case (.add, .rule(let r)), (.create, .rule(let r)):
                var lin = Linearizer(family: tx.table.family, firstSetID: setID)
                let linearized = try lin.linearize(r)
                setID = lin.nextSetID
                try enc.newRule(r, linearized: linearized, into: batch, operation: index)
            case (.delete, .rule(let r)):
                guard let handle = r.handle else {
                    throw RulesetError.operationFailed(index: i, operation: NFTScript.command(op, table: tx.table),
                                                       error: .ruleWithoutHandle(chain: r.chain))
                }
                try enc.deleteRule(chain: r.chain, handle: handle, into: batch, operation: index)
            case (.flush, .rule(let r)):
                throw RulesetError.operationFailed(index: i, operation: NFTScript.command(op, table: tx.table),
                                                   error: .unsupported("flush of a single rule (chain \(r.chain)); flush the chain"))

            case (.flush, .elements(let name, _)):
                try enc.flushSet(name, into: batch, operation: index)
            case (let verb, .elements(let name, let elements)):
                guard let set = knownSets[name] else {
                    throw RulesetError.operationFailed(index: i, operation: NFTScript.command(op, table: tx.table),
                                                       error: .noSuchSet(name))
                }
                try enc.elements(elements, of: set, setName: name, setID: nil, delete: verb == .delete,
                                 exclusive: verb == .create, into: batch, operation: index)
            }
        }
    }
}
