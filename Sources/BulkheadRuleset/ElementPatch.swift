/// Element operations applied to a table model in place, as the kernel applies them: what lets a
/// caller keep "the table last committed" current after an element-only transaction without a
/// dump or a full rebuild (the reconciler's record of what it applied).
///
/// Costs a binary search and an array move per element, not a re-sort or a copy of the table.
extension Table {
    /// Applies the element additions and deletions of `transaction` (which must be for this
    /// table) to the model. Returns false, having changed nothing, when the transaction holds
    /// anything but element operations or names a set the table does not have: the caller then
    /// takes the table from a full compile instead.
    public mutating func applyElementOperations(of transaction: Transaction) -> Bool {
        guard transaction.table == id else { return false }
        var positions: [String: Int] = [:]
        for op in transaction.operations {
            guard case .elements(let name, _) = op.object, op.verb == .add || op.verb == .delete else { return false }
            guard positions[name] == nil else { continue }
            guard let i = sets.firstIndex(where: { $0.name == name }) else { return false }
            positions[name] = i
        }
        for op in transaction.operations {
            guard case .elements(let name, let elements) = op.object, let i = positions[name] else { continue }
            if op.verb == .add {
                sets[i].insertInOrder(elements)
            } else {
                sets[i].removeInOrder(elements)
            }
        }
        return true
    }
}

extension NFTSet {
    /// Inserts `new` at their places in `ElementOrder`; an element whose key is present replaces it.
    mutating func insertInOrder(_ new: [SetElement]) {
        var els = elements
        replaceElements([])  // unique storage: the moves below happen in place
        for e in new {
            let sk = ElementOrder.sortKey(e.key)
            var i = Self.lowerBound(els, sk)
            var replaced = false
            while i < els.count, ElementOrder.sortKey(els[i].key) == sk {
                if els[i].key == e.key { els[i] = e; replaced = true; break }
                i += 1
            }
            if !replaced { els.insert(e, at: i) }
        }
        replaceElements(els)
    }

    /// Removes the elements with the keys of `gone` (absent keys are ignored).
    mutating func removeInOrder(_ gone: [SetElement]) {
        var els = elements
        replaceElements([])
        for e in gone {
            let sk = ElementOrder.sortKey(e.key)
            var i = Self.lowerBound(els, sk)
            while i < els.count, ElementOrder.sortKey(els[i].key) == sk {
                if els[i].key == e.key { els.remove(at: i); break }
                i += 1
            }
        }
        replaceElements(els)
    }

    private static func lowerBound(_ els: [SetElement], _ sk: [UInt8]) -> Int {
        var lo = 0, hi = els.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ElementOrder.sortKey(els[mid].key).lexicographicallyPrecedes(sk) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
