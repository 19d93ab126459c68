/// Computes the smallest transaction that turns the live table into the desired one.
///
/// - Equal inputs (ignoring rule handles and counter values) give an empty transaction.
/// - Set and map content changes become element add/delete only; a changed element value is a
///   delete then an add of that key.
/// - A chain whose rules changed is flushed and its rules re-added; the chain itself stays, so
///   jumps and verdict-map elements that point at it stay valid throughout.
/// - New chains and sets are added before anything that refers to them; removed ones are deleted
///   after everything that referred to them is gone. A set whose definition changed (key, flags,
///   data type) is deleted and re-created, after the chains that look it up are flushed.
/// - Table flags are compared: `dormant` is set or cleared in place; a change of ownership flags the
///   kernel cannot make in place (`needsReplacement`) deletes and re-creates the whole table in
///   the same transaction.
/// - A base chain whose hook, type or priority changed is deleted and re-created; a policy change
///   alone is an `add chain` with the new policy.
///
/// The transaction is built with validation against `live`, so an inconsistent desired table
/// (a rule jumping to a chain it does not define, say) throws here instead of at apply time.
public enum Diff {
    /// - Parameter table: the table's identity, needed only when both sides may be nil.
    public static func between(desired: Table?, live: Table?, table: TableID? = nil) throws(RulesetError) -> Transaction {
        guard let id = desired?.id ?? live?.id ?? table else {
            throw .unsupported("a diff of two absent tables needs the table's identity")
        }
        if let d = desired, let l = live, d.id != l.id { throw .wrongTable(expected: l.id, got: d.id) }
        var tx = Transaction(table: id, current: live)
        guard let d = desired else {
            if let l = live { try tx.delete(.table(l.header)) }
            return tx
        }
        func create(_ d: Table) throws(RulesetError) {
            try tx.add(.table(d.header))
            for c in d.chains { try tx.add(.chain(c)) }
            for s in d.sets { try tx.add(.set(s)) }
            for r in d.rules { try tx.add(.rule(r.zeroed)) }
        }
        guard let l = live else {
            try create(d)
            return tx
        }
        if needsReplacement(from: l.flags, to: d.flags) {
            // Deleting and creating a table in one batch is one commit: the kernel switches from
            // the old table to the new one at once, never through a ruleset without either.
            try tx.delete(.table(l.header))
            try create(d)
            return tx
        }

        if d.flags != l.flags { try tx.add(.table(d.header)) }

        // Classify sets.
        let liveSets = Dictionary(l.sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let desiredSets = Dictionary(d.sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let newSets = d.sets.filter { liveSets[$0.name] == nil }
        let redefinedSets = d.sets.filter { s in liveSets[s.name].map { $0.definition != s.definition } ?? false }
        let keptSets = d.sets.filter { s in liveSets[s.name].map { $0.definition == s.definition } ?? false }
        let removedSets = l.sets.filter { desiredSets[$0.name] == nil }
        let replacedSetNames = Set((redefinedSets + removedSets).map(\.name))

        // Classify chains.
        let liveChains = Dictionary(l.chains.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let desiredChains = Dictionary(d.chains.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // Rule indices per chain, not rule copies: grouping 24,000 rules by value cost more
        // than comparing them.
        func byChain(_ rules: [Rule]) -> [String: [Int]] {
            var out: [String: [Int]] = [:]
            for (i, r) in rules.enumerated() { out[r.chain, default: []].append(i) }
            return out
        }
        let liveRules = byChain(l.rules)
        let desiredRules = byChain(d.rules)
        var newChains: [Chain] = [], recreated: [Chain] = [], policyOnly: [Chain] = [], changed: [Chain] = []
        for c in d.chains {
            guard let old = liveChains[c.name] else {
                newChains.append(c)
                continue
            }
            if old.base != c.base {
                if let ob = old.base, let nb = c.base, ob.hook == nb.hook, ob.type == nb.type, ob.priority == nb.priority {
                    policyOnly.append(c)
                } else {
                    recreated.append(c)
                    continue
                }
            }
            let was = liveRules[c.name] ?? [], now = desiredRules[c.name] ?? []
            let sameRules = was.count == now.count && zip(was, now).allSatisfy { l.rules[$0].sameContent(as: d.rules[$1]) }
            let usesReplacedSet = !replacedSetNames.isEmpty && was.contains { !Set(l.rules[$0].referencedSets).isDisjoint(with: replacedSetNames) }
            if !sameRules || usesReplacedSet { changed.append(c) }
        }
        let removedChains = l.chains.filter { desiredChains[$0.name] == nil }

        // 1. Everything new that others may refer to.
        for c in newChains { try tx.add(.chain(c)) }
        for s in newSets { try tx.add(.set(s)) }
        for c in policyOnly { try tx.add(.chain(c)) }
        // 2. Empty the chains whose rules go away or are replaced.
        for c in changed + recreated + removedChains where !(liveRules[c.name] ?? []).isEmpty {
            try tx.flush(.chain(Chain(name: c.name)))
        }
        // 3. Elements that go away (this also drops verdicts into chains about to be deleted).
        var elementAdds: [(String, [SetElement])] = []
        for s in keptSets {
            guard let old = liveSets[s.name] else { continue }
            let (adds, deletes) = elementChanges(from: old.elements, to: s.elements)
            if !deletes.isEmpty { try tx.delete(.elements(set: s.name, deletes)) }
            if !adds.isEmpty { elementAdds.append((s.name, adds)) }
        }
        // 4. Sets and chains that go away or are replaced, now unreferenced.
        for s in redefinedSets + removedSets { try tx.delete(.set(NFTSet(name: s.name, key: s.key, data: s.data))) }
        for c in recreated + removedChains { try tx.delete(.chain(Chain(name: c.name))) }
        for c in recreated { try tx.add(.chain(c)) }
        for s in redefinedSets { try tx.add(.set(s)) }
        // 5. New elements and rules.
        for (name, adds) in elementAdds { try tx.add(.elements(set: name, adds)) }
        let refill = Set((newChains + changed + recreated).map(\.name))
        for r in d.rules where refill.contains(r.chain) { try tx.add(.rule(r.zeroed)) }
        return tx
    }

    /// True when the table's flags cannot change in place: the kernel refuses (EOPNOTSUPP) to
    /// change `persist` on an existing table, to remove `owner`, and to add `owner` except to an
    /// orphaned persistent table (one whose owner has exited: `persist` without `owner`).
    public static func needsReplacement(from live: TableFlags, to desired: TableFlags) -> Bool {
        if live.contains(.persist) != desired.contains(.persist) { return true }
        if live.contains(.owner) && !desired.contains(.owner) { return true }
        return desired.contains(.owner) && !live.contains(.owner) && !live.contains(.persist)
    }

    /// Keys to add (new, or with new data) and to delete (gone, or with old data), in set order.
    static func elementChanges(from old: [SetElement], to new: [SetElement]) -> (adds: [SetElement], deletes: [SetElement]) {
        // Both sides are in `ElementOrder` with unique keys, so an element of the common head or
        // tail is in both and its key appears nowhere else: only the middle needs hashing. A
        // one-container change to a 200,000-element table then hashes a handful of keys.
        var head = 0
        while head < old.count, head < new.count, old[head] == new[head] { head += 1 }
        var tail = 0
        while tail < old.count - head, tail < new.count - head, old[old.count - 1 - tail] == new[new.count - 1 - tail] { tail += 1 }
        if head == old.count && head == new.count { return ([], []) }
        return hashedChanges(from: old[head..<(old.count - tail)], to: new[head..<(new.count - tail)])
    }

    private static func hashedChanges(from old: ArraySlice<SetElement>, to new: ArraySlice<SetElement>) -> (adds: [SetElement], deletes: [SetElement]) {
        var oldData: [[KeyPart]: ElementData?] = [:]
        oldData.reserveCapacity(old.count)
        for e in old { oldData[e.key] = e.data }
        var newData: [[KeyPart]: ElementData?] = [:]
        newData.reserveCapacity(new.count)
        for e in new { newData[e.key] = e.data }
        let adds = new.filter { e in oldData[e.key].map { $0 != e.data } ?? true }
        let deletes = old.filter { e in newData[e.key].map { $0 != e.data } ?? true }
        return (adds, deletes)
    }
}
