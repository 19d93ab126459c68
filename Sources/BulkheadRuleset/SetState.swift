/// One set's elements inside `TableState`, arranged so that adding or deleting one element of a
/// 100,000-element set costs microseconds (the agent adds ~12 per Docker event, 2 ms end to end).
///
/// `base` is the set as loaded (or as last compacted): its elements are sorted in `ElementOrder`
/// and never mutated, so they stay shared with the `Table` the state was built from instead of
/// being copied. Changes are kept beside it — indices of deleted base elements, and added elements
/// in arrival order with a key index — and merged into a sorted `NFTSet` only when the table is
/// read (`materialized`), or when they grow to a quarter of the set (so lookups stay cheap and
/// the merge cost is amortised).
struct SetState: Sendable {
    private(set) var base: NFTSet
    /// Indices into `base.elements` deleted since.
    private var removed: Set<Int> = []
    /// Elements added since, in arrival order; nil once deleted again.
    private var added: [SetElement?] = []
    private var addedIndex: [[KeyPart]: Int] = [:]
    private var addedLive = 0
    /// For sets whose intervals must not overlap: the live added elements' bounds, sorted by low end.
    private var intervals: [Interval] = []

    struct Interval: Sendable {
        var lo: [UInt8]
        var hi: [UInt8]
        var element: SetElement

        init(_ e: SetElement) {
            lo = e.key[0].low.bytes
            hi = e.key[0].high.bytes
            element = e
        }
    }

    enum Location {
        case base(Int)
        case added(Int)
    }

    init(_ set: NFTSet) { base = set }

    var name: String { base.name }

    /// Single-field big-endian interval sets: the kernel answers EEXIST to an overlapping element,
    /// and their `ElementOrder` is the low end's bytes, so neighbours are found by binary search.
    var checksOverlap: Bool {
        base.flags.contains(.interval) && base.key.fields.count == 1 && base.key.fields[0].isBigEndian
    }

    // MARK: lookups

    func location(of key: [KeyPart]) -> Location? {
        if let j = addedIndex[key] { return .added(j) }
        let els = base.elements
        if els.isEmpty { return nil }
        let sk = ElementOrder.sortKey(key)
        var i = lowerBound(sk)
        while i < els.count {
            if els[i].key == key { return removed.contains(i) ? nil : .base(i) }
            // Different keys can share a sort key (a range and a value with the same low end).
            guard ElementOrder.sortKey(els[i].key) == sk else { break }
            i += 1
        }
        return nil
    }

    /// The data of the element with `key`: nil when absent, `.some(nil)` for a set element.
    func data(for key: [KeyPart]) -> ElementData?? {
        location(of: key).map { element($0).data }
    }

    func element(_ at: Location) -> SetElement {
        switch at {
        case .base(let i): base.elements[i]
        case .added(let j): added[j]!
        }
    }

    /// First base index whose sort key is not below `sk`.
    private func lowerBound(_ sk: [UInt8]) -> Int {
        let els = base.elements
        var lo = 0, hi = els.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ElementOrder.sortKey(els[mid].key).lexicographicallyPrecedes(sk) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// First base index whose sort key is above `sk` (where an equal-keyed newcomer goes: after).
    private func upperBound(_ sk: [UInt8]) -> Int {
        let els = base.elements
        var lo = 0, hi = els.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sk.lexicographicallyPrecedes(ElementOrder.sortKey(els[mid].key)) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    private static func intervalUpperBound(_ list: [Interval], _ lo: [UInt8]) -> Int {
        var a = 0, b = list.count
        while a < b {
            let mid = (a + b) / 2
            if lo.lexicographicallyPrecedes(list[mid].lo) { b = mid } else { a = mid + 1 }
        }
        return a
    }

    // MARK: checks

    /// Interval elements may not overlap (the kernel answers EEXIST). `new` are absent keys. The
    /// error names the pair as nft order has them: the one with the lower low end is `existing`.
    func checkOverlap(_ new: [SetElement]) throws(RulesetError) {
        func overlap(_ first: SetElement, _ second: SetElement) -> RulesetError {
            .intervalOverlap(set: name, element: NFTText.element(second), existing: NFTText.element(first))
        }
        let els = base.elements
        var batch: [Interval] = []
        batch.reserveCapacity(new.count)
        for e in new {
            let n = Interval(e)
            let pos = upperBound(n.lo)
            var j = pos - 1
            while j >= 0 && removed.contains(j) { j -= 1 }
            if j >= 0, !els[j].key[0].high.bytes.lexicographicallyPrecedes(n.lo) { throw overlap(els[j], e) }
            j = pos
            while j < els.count && removed.contains(j) { j += 1 }
            if j < els.count, !n.hi.lexicographicallyPrecedes(els[j].key[0].low.bytes) { throw overlap(e, els[j]) }
            let p = Self.intervalUpperBound(intervals, n.lo)
            if p > 0, !intervals[p - 1].hi.lexicographicallyPrecedes(n.lo) { throw overlap(intervals[p - 1].element, e) }
            if p < intervals.count, !n.hi.lexicographicallyPrecedes(intervals[p].lo) { throw overlap(e, intervals[p].element) }
            batch.append(n)
        }
        if batch.count > 1 {
            let sorted = batch.enumerated().sorted { a, b in
                a.element.lo.lexicographicallyPrecedes(b.element.lo)
                    || (a.element.lo == b.element.lo && a.offset < b.offset)
            }.map(\.element)
            for (a, b) in zip(sorted, sorted.dropFirst()) where !a.hi.lexicographicallyPrecedes(b.lo) {
                throw overlap(a.element, b.element)
            }
        }
    }

    // MARK: changes

    /// True when the set holds no element.
    var isEmpty: Bool { base.elements.isEmpty && addedLive == 0 }

    /// Adds elements whose keys are absent (checked by the caller).
    /// - Parameter sortedAndUnique: `els` are already in `ElementOrder` (an `NFTSet`'s elements).
    /// - Parameter sorted: `els` in `ElementOrder`, when the caller has them (the bulk check).
    mutating func insert(_ els: [SetElement], sortedAndUnique: Bool, sorted: [SetElement]? = nil) {
        if base.elements.isEmpty && added.isEmpty {
            base.replaceElements(sorted ?? (sortedAndUnique ? els : ElementOrder.sorted(els, key: base.key)))
            return
        }
        added.reserveCapacity(added.count + els.count)
        for e in els {
            addedIndex[e.key] = added.count
            added.append(e)
        }
        addedLive += els.count
        if checksOverlap {
            if els.count <= 8 {
                for e in els {
                    let n = Interval(e)
                    intervals.insert(n, at: Self.intervalUpperBound(intervals, n.lo))
                }
            } else {
                intervals = (intervals + els.map(Interval.init)).enumerated().sorted { a, b in
                    a.element.lo.lexicographicallyPrecedes(b.element.lo)
                        || (a.element.lo == b.element.lo && a.offset < b.offset)
                }.map(\.element)
            }
        }
        compactIfLarge()
    }

    /// Deletes present elements (found by `location(of:)` on this state, each once).
    mutating func remove(_ at: [Location]) {
        for l in at {
            switch l {
            case .base(let i):
                removed.insert(i)
            case .added(let j):
                let key = added[j]!.key
                added[j] = nil
                addedIndex[key] = nil
                addedLive -= 1
                if checksOverlap, let k = intervals.firstIndex(where: { $0.element.key == key }) {
                    intervals.remove(at: k)
                }
            }
        }
        compactIfLarge()
    }

    mutating func removeAll() {
        self = SetState(base.definition)
    }

    /// Folds the changes into `base` once they are a quarter of it, so a long transaction or a
    /// long-lived fake keeps lookups at O(log n) and pays O(n) only every n/4 changes.
    private mutating func compactIfLarge() {
        let churn = removed.count + added.count
        guard churn > 64, churn * 4 > base.elements.count else { return }
        self = SetState(materialized)
    }

    /// The set with its current elements, in `ElementOrder`: an O(n) merge of the base with the
    /// sorted additions (equal sort keys keep arrival order, base first, like a stable sort of
    /// old + new), skipping deleted base elements. The base itself when nothing changed.
    var materialized: NFTSet {
        if removed.isEmpty && addedLive == 0 { return base }
        let els = base.elements
        let additions = added.enumerated().compactMap { i, e in e.map { (ElementOrder.sortKey($0.key), i, $0) } }
            .sorted { a, b in a.0.lexicographicallyPrecedes(b.0) || (a.0 == b.0 && a.1 < b.1) }
        let gone = removed.sorted()
        var out: [SetElement] = []
        out.reserveCapacity(els.count - gone.count + additions.count)
        var next = 0, g = 0
        func copyBase(upTo end: Int) {
            while next < end {
                while g < gone.count && gone[g] < next { g += 1 }
                let stop = g < gone.count ? min(gone[g], end) : end
                out.append(contentsOf: els[next..<stop])
                next = stop
                if next < end, g < gone.count, gone[g] == next { next += 1 }
            }
        }
        for (sk, _, e) in additions {
            copyBase(upTo: upperBound(sk))
            out.append(e)
        }
        copyBase(upTo: els.count)
        var set = base
        set.replaceElements(out)
        return set
    }
}
