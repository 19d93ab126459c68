/// The one place that knows what the kernel accepts. `Transaction` runs every queued operation
/// through it (so errors surface when queued) and `FakeNetfilter` runs a whole transaction through
/// it on commit (so the fake rejects what the kernel would: jumps to missing or base chains, loops,
/// lookups in missing or mistyped sets, duplicates on create, deleting what is still referenced,
/// elements that do not fit the set).
///
/// Indexed so that one operation costs what it touches, not what the table holds (a 4,000-chain,
/// 200,000-element table is normal; the agent validates ~12 element adds per Docker event):
/// - chains and sets by name, rules per chain (slots into one table-order list);
/// - the jump graph kept up to date with counts (`JumpGraph`), so a new jump A → B is checked
///   by searching from B for A only, and not at all when B jumps nowhere;
/// - each set keeps the sorted elements it was loaded with, untouched and shared with the input
///   table, plus the keys deleted from them and the elements added since (`SetState`); an element
///   is found by binary search (nft order) or in the added dictionary, and the sorted `Table`
///   is only built when `table` is read.
///
/// `apply` checks everything before it changes anything, so a refused operation leaves the state
/// as it was without copying it first.
struct TableState: Sendable, RuleContext {
    let id: TableID
    /// Family, name and flags; nil when the table does not exist.
    private var header: Table?
    /// Next kernel handle, when this state assigns handles (the fake); nil while merely simulating
    /// a transaction, where new rules have no handle yet.
    var nextHandle: UInt64?

    /// Chains in creation order (nil: deleted) and where each name is.
    private var chainSlots: [ChainSlot?] = []
    private var chainIndex: [String: Int] = [:]
    /// Sets in creation order (nil: deleted) and where each name is.
    private var setSlots: [SetState?] = []
    private var setIndex: [String: Int] = [:]
    /// Every rule in table order; the indices in `deadRules` were deleted.
    private var ruleList: [Rule] = []
    private var deadRules: Set<Int> = []
    private var graph = JumpGraph()
    /// How element batches are validated; tests pin one path to compare it with the other.
    var elementCheck: ElementCheck = .automatic

    /// The two ways to validate elements to add. Both refuse the same elements with the same
    /// error (`BulkElementCheckTests` compares them over generated batches).
    enum ElementCheck: Sendable {
        /// Bulk for large batches of sets whose keys it handles, one by one otherwise.
        case automatic
        /// Each element on its own: a dictionary of the batch's keys, hashed per element.
        case oneByOne
        /// The batch at once, where the set's key allows it: fixed-width sort keys written into
        /// one buffer, sorted once, duplicates found as neighbours.
        case bulk
    }

    struct ChainSlot: Sendable {
        var chain: Chain
        /// Indices into `ruleList`, in evaluation order.
        var rules: [Int] = []
    }

    init(id: TableID, table: Table?, nextHandle: UInt64? = nil) {
        self.id = id
        self.nextHandle = nextHandle
        guard let table else { return }
        header = table.header
        chainSlots.reserveCapacity(table.chains.count)
        for c in table.chains where chainIndex[c.name] == nil {
            chainIndex[c.name] = chainSlots.count
            chainSlots.append(ChainSlot(chain: c))
        }
        setSlots.reserveCapacity(table.sets.count)
        for s in table.sets where setIndex[s.name] == nil {
            setIndex[s.name] = setSlots.count
            setSlots.append(SetState(s))
            if s.data == .verdict {
                for e in s.elements {
                    if let t = e.data.flatMap(Self.target) { graph.mapTarget(s.name, t, 1) }
                }
            }
        }
        ruleList = table.rules
        for (i, r) in table.rules.enumerated() {
            if let c = chainIndex[r.chain] { chainSlots[c]!.rules.append(i) }
            graph.add(r, 1)
        }
    }

    /// The table as nft would list it: sets and chains in creation order, rules in table order,
    /// elements in `ElementOrder`. Costs O(sets + chains), plus a merge for each set changed here.
    var table: Table? {
        guard var t = header else { return nil }
        t.sets = setSlots.compactMap { $0?.materialized }
        t.chains = chainSlots.compactMap { $0?.chain }
        t.rules = deadRules.isEmpty ? ruleList : ruleList.indices.compactMap { deadRules.contains($0) ? nil : ruleList[$0] }
        return t
    }

    mutating func apply(_ op: Operation) throws(RulesetError) {
        if case .table(let t) = op.object {
            guard t.id == id else { throw .wrongTable(expected: id, got: t.id) }
            try applyTable(op.verb, t)
            return
        }
        guard header != nil else { throw .noSuchTable(id) }
        switch (op.verb, op.object) {
        case (.add, .chain(let c)), (.create, .chain(let c)):
            try Names.check("chain", c.name)
            if let i = chainIndex[c.name] {
                if op.verb == .create { throw .chainExists(c.name) }
                let old = chainSlots[i]!.chain
                // No hook: the kernel changes nothing, even on a base chain (FakeVersusKernelTests).
                if old.base == c.base || c.base == nil { break }
                guard var ob = old.base, let nb = c.base, ob.hook == nb.hook, ob.type == nb.type,
                      ob.priority == nb.priority else {
                    throw .chainConflict(c.name, reason: "only the policy of a base chain can change")
                }
                ob.policy = nb.policy
                chainSlots[i]!.chain.base = ob
            } else {
                chainIndex[c.name] = chainSlots.count
                chainSlots.append(ChainSlot(chain: c))
            }
        case (.delete, .chain(let c)):
            guard let i = chainIndex[c.name] else { throw .noSuchChain(c.name) }
            let users = references(to: c.name)
            guard users.isEmpty else { throw .chainInUse(c.name, by: users) }
            removeRules(ofChainAt: i)
            chainSlots[i] = nil
            chainIndex[c.name] = nil
        case (.flush, .chain(let c)):
            guard let i = chainIndex[c.name] else { throw .noSuchChain(c.name) }
            removeRules(ofChainAt: i)

        case (.add, .set(let s)), (.create, .set(let s)):
            try Names.check("set", s.name)
            try Self.checkDefinition(s)
            if let i = setIndex[s.name] {
                let old = setSlots[i]!.base
                if op.verb == .create { throw .setExists(s.name) }
                guard old.definition == s.definition else {
                    throw .setConflict(s.name, reason: "was \(Self.summary(old)), now \(Self.summary(s))")
                }
                if !s.elements.isEmpty { try addElements(s.elements, to: s.name, create: false, sorted: true) }
            } else {
                // Check the elements against the new set before creating it, so a refused
                // element leaves no empty set behind.
                var fresh = SetState(s.definition)
                let checked = try checkNewElements(s.elements, for: fresh, create: false)
                setIndex[s.name] = setSlots.count
                fresh.insert(checked.added, sortedAndUnique: checked.added.count == s.elements.count, sorted: checked.sorted)
                setSlots.append(fresh)
                registerTargets(checked.added, map: fresh.base)
            }
        case (.delete, .set(let s)):
            guard let i = setIndex[s.name] else { throw .noSuchSet(s.name) }
            let users = graph.setUsers[s.name].map { $0.keys.sorted() } ?? []
            guard users.isEmpty else { throw .setInUse(s.name, by: users) }
            setSlots[i] = nil
            setIndex[s.name] = nil
            graph.mapTargets[s.name] = nil  // no rule uses it, so no edge goes through it
        case (.flush, .set(let s)):
            guard let i = setIndex[s.name] else { throw .noSuchSet(s.name) }
            if let targets = graph.mapTargets[s.name] {
                for (t, n) in targets { graph.mapTarget(s.name, t, -n) }
            }
            setSlots[i]!.removeAll()

        case (.add, .rule(var r)), (.create, .rule(var r)):
            guard let ci = chainIndex[r.chain] else { throw .noSuchChain(r.chain) }
            try RuleCheck.check(r, in: self)
            try checkLoops(adding: r)
            if let h = nextHandle {
                r.handle = h
                nextHandle = h + 1
            } else {
                r.handle = nil
            }
            chainSlots[ci]!.rules.append(ruleList.count)
            ruleList.append(r)
            graph.add(r, 1)
        case (.delete, .rule(let r)):
            guard let ci = chainIndex[r.chain] else { throw .noSuchChain(r.chain) }
            guard let h = r.handle else { throw .ruleWithoutHandle(chain: r.chain) }
            guard let k = chainSlots[ci]!.rules.firstIndex(where: { ruleList[$0].handle == h }) else {
                throw .noSuchRule(chain: r.chain, handle: h)
            }
            let slot = chainSlots[ci]!.rules.remove(at: k)
            graph.add(ruleList[slot], -1)
            deadRules.insert(slot)
            compactRulesIfSparse()
        case (.flush, .rule):
            throw .unsupported("flush of a single rule; flush its chain or delete it by handle")

        case (.add, .elements(let name, let els)), (.create, .elements(let name, let els)):
            try addElements(els, to: name, create: op.verb == .create, sorted: false)
        case (.delete, .elements(let name, let els)):
            guard let i = setIndex[name] else { throw .noSuchSet(name) }
            let set = setSlots[i]!
            var found: [SetState.Location] = []
            found.reserveCapacity(els.count)
            var seen: Set<[KeyPart]> = []
            for e in els {
                // A key named twice in one delete is missing the second time, as before.
                guard let at = set.location(of: e.key), els.count == 1 || seen.insert(e.key).inserted else {
                    throw .noSuchElement(set: name, element: NFTText.element(e))
                }
                found.append(at)
            }
            if set.base.data == .verdict {
                for at in found {
                    if let t = set.element(at).data.flatMap(Self.target) { graph.mapTarget(name, t, -1) }
                }
            }
            setSlots[i]!.remove(found)
        case (.flush, .elements(let name, _)):
            throw .unsupported("flush of elements; flush set '\(name)' instead")
        case (_, .table):
            break  // handled above
        }
    }

    private mutating func applyTable(_ verb: Verb, _ t: Table) throws(RulesetError) {
        switch verb {
        case .add, .create:
            try Names.check("table", t.name)
            try Self.checkFlags(t.flags, existing: header?.flags)
            if header != nil {
                if verb == .create { throw .tableExists(id) }
                header?.flags = t.flags
            } else {
                let check = elementCheck
                self = TableState(id: id, table: t.header, nextHandle: nextHandle)
                elementCheck = check
            }
        case .delete:
            guard header != nil else { throw .noSuchTable(id) }
            let check = elementCheck
            self = TableState(id: id, table: nil, nextHandle: nextHandle)
            elementCheck = check
        case .flush:
            guard header != nil else { throw .noSuchTable(id) }
            ruleList = []
            deadRules = []
            for i in chainSlots.indices where chainSlots[i] != nil { chainSlots[i]!.rules = [] }
            graph.removeAllRules()
        }
    }

    /// Table flags as the kernel takes them (`nf_tables_newtable` / `nf_tables_updtable`, all
    /// EOPNOTSUPP): no bits beyond dormant|owner|persist; on an existing table `persist` never
    /// changes, `owner` is never dropped, and is only added to an orphan (a table left with
    /// `persist` alone after its owner exited). Found by `FakeVersusKernelTests`, where the fake
    /// took any flags.
    static func checkFlags(_ flags: TableFlags, existing: TableFlags?) throws(RulesetError) {
        let known: TableFlags = [.dormant, .owner, .persist]
        guard flags.isSubset(of: known) else {
            throw .unsupported("table flags 0x\(String(flags.rawValue, radix: 16)): the kernel knows dormant, owner and persist only")
        }
        guard let old = existing, old != flags else { return }
        if old.contains(.persist) != flags.contains(.persist) {
            throw .unsupported("the persist flag of an existing table cannot change")
        }
        if old.contains(.owner) && !flags.contains(.owner) {
            throw .unsupported("the owner flag cannot be dropped from an owned table")
        }
        if flags.contains(.owner) && !old.contains(.owner) && old.subtracting(.dormant) != .persist {
            throw .unsupported("only an orphaned persistent table can be given an owner")
        }
    }

    // MARK: lookups

    func chain(named name: String) -> Chain? { chainIndex[name].flatMap { chainSlots[$0]?.chain } }
    /// The set with the elements it was loaded with (enough for definitions; see `SetState`).
    func set(named name: String) -> NFTSet? { setIndex[name].flatMap { setSlots[$0]?.base } }
    var family: TableFamily { id.family }

    // MARK: rules and references

    private mutating func removeRules(ofChainAt i: Int) {
        let slots = chainSlots[i]!.rules
        if slots.isEmpty { return }
        chainSlots[i]!.rules = []
        for s in slots {
            graph.add(ruleList[s], -1)
            deadRules.insert(s)
        }
        compactRulesIfSparse()
    }

    /// Drops deleted rules from `ruleList` once they are most of it, so a long-lived fake does not
    /// grow without bound; amortised O(1) per deletion.
    private mutating func compactRulesIfSparse() {
        guard deadRules.count > 1024, deadRules.count * 2 > ruleList.count else { return }
        var newIndex = [Int](repeating: -1, count: ruleList.count)
        var kept: [Rule] = []
        kept.reserveCapacity(ruleList.count - deadRules.count)
        for i in ruleList.indices where !deadRules.contains(i) {
            newIndex[i] = kept.count
            kept.append(ruleList[i])
        }
        for c in chainSlots.indices where chainSlots[c] != nil {
            chainSlots[c]!.rules = chainSlots[c]!.rules.map { newIndex[$0] }
        }
        ruleList = kept
        deadRules = []
    }

    /// Who jumps to `chain`: rules of other chains and verdict maps.
    func references(to chain: String) -> [String] {
        var users: Set<String> = []
        for (from, _) in graph.directJumps[chain] ?? [:] where from != chain {
            users.insert("chain '\(from)'")
        }
        for (map, targets) in graph.mapTargets where targets[chain] != nil {
            users.insert("map '\(map)'")
        }
        return users.sorted()
    }

    static func target(_ d: ElementData) -> String? {
        if case .verdict(let v) = d { return v.targetChain }
        return nil
    }

    // MARK: loops

    /// The kernel refuses a jump that closes a cycle (ELOOP); so do we. All edges a new rule adds
    /// leave its own chain, so it closes a cycle exactly when one of its targets already reaches
    /// that chain.
    private func checkLoops(adding r: Rule) throws(RulesetError) {
        var targets: [String] = []
        JumpGraph.forEachReference(in: r, jump: { targets.append($0) }, vmap: { m in
            if let t = graph.mapTargets[m] { targets += t.keys }
        }, lookup: { _ in })
        for t in targets where graph.reaches(from: t, to: r.chain, extra: [:]) {
            throw loopError(pendingRule: r, pendingMapTargets: [:], fallback: (r.chain, t))
        }
    }

    /// New targets of verdict map `map` add an edge from every chain that looks the map up to
    /// each of them; several such edges can close one cycle together, so each is searched with
    /// all of them in place.
    private func checkLoops(map: String, newTargets: [String]) throws(RulesetError) {
        guard let users = graph.mapUsers[map], !users.isEmpty, !newTargets.isEmpty else { return }
        let sources = users.keys.sorted()
        var extra: [String: [String]] = [:]
        for u in sources { extra[u] = newTargets }
        for u in sources {
            for t in newTargets where graph.reaches(from: t, to: u, extra: extra) {
                throw loopError(pendingRule: nil, pendingMapTargets: [map: newTargets], fallback: (u, t))
            }
        }
    }

    /// Names the loop the way a full depth-first search of the table (chains in creation order,
    /// rules in order) finds it; only run once a loop is known to exist.
    private func loopError(pendingRule: Rule?, pendingMapTargets: [String: [String]],
                           fallback: (String, String)) -> RulesetError {
        var mapTargets: [String: [String]] = [:]
        for (m, t) in graph.mapTargets { mapTargets[m] = t.keys.sorted() }
        for (m, t) in pendingMapTargets { mapTargets[m] = Array(Set(t + (mapTargets[m] ?? []))).sorted() }
        var edges: [String: [String]] = [:]
        func add(_ r: Rule) {
            var targets = r.jumpTargets
            for case .vmap(_, .named(let m)) in r.statements { targets += mapTargets[m] ?? [] }
            edges[r.chain, default: []] += targets
        }
        for i in ruleList.indices where !deadRules.contains(i) { add(ruleList[i]) }
        if let pendingRule { add(pendingRule) }
        var state: [String: Int] = [:]  // 1 = on stack, 2 = done
        func visit(_ c: String) -> (String, String)? {
            state[c] = 1
            for n in edges[c] ?? [] {
                if state[n] == 1 { return (c, n) }
                if state[n] == nil, let loop = visit(n) { return loop }
            }
            state[c] = 2
            return nil
        }
        for case let slot? in chainSlots where state[slot.chain.name] == nil {
            if let (from, to) = visit(slot.chain.name) { return .jumpLoop(chain: from, target: to) }
        }
        return .jumpLoop(chain: fallback.0, target: fallback.1)
    }

    // MARK: sets and elements

    static func checkDefinition(_ s: NFTSet) throws(RulesetError) {
        guard !s.key.fields.isEmpty else { throw .setConflict(s.name, reason: "a set needs a key type") }
        guard s.key.byteLength <= 64 else {
            throw .setConflict(s.name, reason: "key of \(s.key.byteLength) bytes exceeds the kernel's 64")
        }
    }

    static func summary(_ s: NFTSet) -> String {
        var out = "type \(s.key)"
        if let d = s.data { out += " : \(d)" }
        let flags = NFTText.printedFlags(s)
        if !flags.isEmpty { out += " flags \(flags.joined(separator: ","))" }
        if let t = s.timeoutMilliseconds { out += " timeout \(NFTText.duration(t))" }
        return out
    }

    /// - Parameter sorted: `els` are in `ElementOrder` without duplicate keys (an `NFTSet`'s).
    private mutating func addElements(_ els: [SetElement], to name: String, create: Bool, sorted: Bool) throws(RulesetError) {
        guard let i = setIndex[name] else { throw .noSuchSet(name) }
        let checked = try checkNewElements(els, for: setSlots[i]!, create: create)
        if checked.added.isEmpty { return }
        setSlots[i]!.insert(checked.added, sortedAndUnique: sorted && checked.added.count == els.count, sorted: checked.sorted)
        registerTargets(checked.added, map: setSlots[i]!.base)
    }

    private mutating func registerTargets(_ added: [SetElement], map: NFTSet) {
        guard map.data == .verdict else { return }
        for e in added {
            if let t = e.data.flatMap(Self.target) { graph.mapTarget(map.name, t, 1) }
        }
    }

    /// Validates elements to add to `set`; returns those not already present (in order, each key
    /// once). Throws for a misfit, a conflicting or (with `create`) existing key, an interval
    /// overlap, or a verdict that would close a jump loop.
    private func checkNewElements(_ els: [SetElement], for set: SetState, create: Bool) throws(RulesetError) -> NewElements {
        let def = set.base
        let checked: NewElements
        if usesBulkCheck(els.count, def) {
            checked = try checkBulk(els, for: set, create: create)
        } else {
            checked = NewElements(added: try checkOneByOne(els, for: set, create: create), sorted: nil)
        }
        let added = checked.added
        if added.isEmpty { return checked }
        if set.checksOverlap { try set.checkOverlap(added) }
        if def.data == .verdict {
            var newTargets: [String] = []
            var seen: Set<String> = []
            for e in added {
                if let t = e.data.flatMap(Self.target), graph.mapTargets[def.name]?[t] == nil, seen.insert(t).inserted {
                    newTargets.append(t)
                }
            }
            try checkLoops(map: def.name, newTargets: newTargets)
        }
        return checked
    }

    /// Elements that passed the checks and are not in the set yet.
    struct NewElements {
        /// In arrival order, each key once.
        var added: [SetElement]
        /// The same in `ElementOrder`, when the bulk check has sorted them anyway.
        var sorted: [SetElement]?
    }

    /// An element's error, with its place when the batch has more than one.
    static func inBatch(_ error: RulesetError, index: Int, count: Int) -> RulesetError {
        count > 1 ? .elementInBatch(index: index, count: count, error: error) : error
    }

    /// Below this many elements the dictionary of the one-by-one check is cheaper than sorting
    /// (the agent adds about a dozen per Docker event).
    static let bulkThreshold = 64

    /// The bulk check needs keys whose fixed-width bytes tell them apart: no ranges (interval
    /// sets) and no interface names (a name longer than 16 bytes has the bytes of its prefix).
    private func usesBulkCheck(_ count: Int, _ def: NFTSet) -> Bool {
        let eligible = !def.flags.contains(.interval) && !def.key.fields.isEmpty && !def.key.fields.contains(.ifname)
        switch elementCheck {
        case .automatic: return eligible && count >= Self.bulkThreshold
        case .oneByOne: return false
        case .bulk: return eligible
        }
    }

    /// Element by element: the first that does not fit, or whose key is in the set or earlier in
    /// the batch with other data (or at all, with `create`), is refused.
    private func checkOneByOne(_ els: [SetElement], for set: SetState, create: Bool) throws(RulesetError) -> [SetElement] {
        let def = set.base
        var inBatch: [[KeyPart]: ElementData?] = [:]
        var added: [SetElement] = []
        added.reserveCapacity(els.count)
        for (i, e) in els.enumerated() {
            do throws(RulesetError) {
                try checkElement(e, for: def)
            } catch {
                throw Self.inBatch(error, index: i, count: els.count)
            }
            if let old = set.data(for: e.key) ?? (els.count > 1 ? inBatch[e.key] : nil) {
                if create || old != e.data {
                    throw Self.inBatch(.elementExists(set: def.name, element: NFTText.element(e)), index: i, count: els.count)
                }
                continue
            }
            if els.count > 1 { inBatch[e.key] = e.data }
            added.append(e)
        }
        return added
    }

    /// The same verdict as `checkOneByOne`, the same element named, for a whole batch at once.
    ///
    /// Element by element, a 100,000-element batch hashed every key into a dictionary (twice,
    /// with the sort that followed): half of the time of a 100k commit. Here every element's
    /// `ElementOrder` sort key is written into one buffer (fixed width: the key type's unpadded
    /// length), the indices are sorted once by (key, arrival), and a key given twice shows up as
    /// neighbours, the first arrival first. The error is the one the element-by-element loop
    /// meets first: the lowest index among the first misfit, the first key that clashes with
    /// the set, and the first repeat that clashes with its first arrival.
    private func checkBulk(_ els: [SetElement], for set: SetState, create: Bool) throws(RulesetError) -> NewElements {
        let def = set.base
        let width = ElementOrder.sortKeyLength(def.key)
        let keys = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, els.count * width))
        defer { keys.deallocate() }
        func exists(_ i: Int) -> RulesetError { .elementExists(set: def.name, element: NFTText.element(els[i])) }

        // Fit, element by element (no allocation); the first misfit ends what the rest looks at.
        var firstError: (index: Int, error: RulesetError)?
        var n = els.count
        for i in els.indices {
            do throws(RulesetError) {
                try checkElement(els[i], for: def)
            } catch {
                firstError = (i, error)
                n = i
                break
            }
            ElementOrder.writeSortKey(els[i].key, to: keys + i * width, length: width)
        }

        // Keys the set already holds: skipped when the data agrees, refused otherwise.
        var present = [Bool](repeating: false, count: n)
        if !set.isEmpty {
            for i in 0..<n {
                guard let old = set.data(for: els[i].key) else { continue }
                if create || old != els[i].data {
                    firstError = (i, exists(i))
                    break
                }
                present[i] = true
            }
        }

        func compare(_ a: Int, _ b: Int) -> Int {
            let pa = keys + a * width, pb = keys + b * width
            for k in 0..<width where pa[k] != pb[k] { return pa[k] < pb[k] ? -1 : 1 }
            return 0
        }
        var order = Array(0..<n)
        order.sort { a, b in
            let c = compare(a, b)
            return c < 0 || (c == 0 && a < b)
        }

        // Repeats within the batch: each run of equal keys starts with its first arrival. A key
        // the set holds was judged above for every arrival (`present` is exact below the first
        // error, and a run whose first arrival lies beyond it cannot name a lower index).
        var repeated = [Bool](repeating: false, count: n)
        var run = 0
        while run < n {
            var next = run + 1
            while next < n && compare(order[run], order[next]) == 0 { next += 1 }
            let first = order[run]
            for t in (run + 1)..<max(run + 1, next) {
                let j = order[t]
                repeated[j] = true
                if !present[first], create || els[j].data != els[first].data, j < (firstError?.index ?? Int.max) {
                    firstError = (j, exists(j))
                }
            }
            run = next
        }
        if let firstError { throw Self.inBatch(firstError.error, index: firstError.index, count: els.count) }

        var sorted: [SetElement] = []
        sorted.reserveCapacity(n)
        for i in order where !present[i] && !repeated[i] { sorted.append(els[i]) }
        // Usually every element is new: then the batch itself is the answer, shared, not copied.
        if sorted.count == els.count { return NewElements(added: els, sorted: sorted) }
        var added: [SetElement] = []
        added.reserveCapacity(sorted.count)
        for i in 0..<n where !present[i] && !repeated[i] { added.append(els[i]) }
        return NewElements(added: added, sorted: sorted)
    }

    func checkElement(_ e: SetElement, for set: NFTSet) throws(RulesetError) {
        var fits = e.key.count == set.key.fields.count
        if fits {
            for (p, f) in zip(e.key, set.key.fields) where p.dataType != f { fits = false }
        }
        guard fits else {
            let got = KeyType(e.key.map(\.dataType))
            throw .keyMismatch(set: set.name, element: NFTText.element(e),
                               reason: "key is \(got) (\(got.byteLength) bytes), set expects \(set.key) (\(set.key.byteLength) bytes)")
        }
        if !set.flags.contains(.interval), let p = e.key.first(where: \.isRange) {
            throw .keyMismatch(set: set.name, element: NFTText.element(e), reason: "'\(p)' is a range but the set has no interval flag")
        }
        for p in e.key {
            if case .range(let lo, let hi) = p, ElementOrder.sortKey([.value(hi)]).lexicographicallyPrecedes(ElementOrder.sortKey([.value(lo)])) {
                throw .keyMismatch(set: set.name, element: NFTText.element(e), reason: "range '\(p)' has its low end above its high end")
            }
        }
        switch (set.data, e.data) {
        case (nil, nil):
            break
        case (nil, .some):
            throw .dataMismatch(set: set.name, element: NFTText.element(e), reason: "a set element cannot map to a value")
        case (.some(let d), nil):
            throw .dataMismatch(set: set.name, element: NFTText.element(e), reason: "a map element needs a \(d)")
        case (.verdict, .verdict(let v)?):
            if let target = v.targetChain {
                guard let c = chain(named: target) else { throw .jumpToMissingChain(from: "map '\(set.name)'", to: target) }
                if c.isBase { throw .jumpToBaseChain(from: "map '\(set.name)'", to: target) }
            }
        case (.value(let dt), .value(let v)?) where v.dataType == dt:
            break
        case (.some(let d), .some(let got)):
            throw .dataMismatch(set: set.name, element: NFTText.element(e), reason: "maps to '\(got)', the map holds \(d)")
        }
    }
}

/// Object names as both nft's parser and the kernel accept them.
enum Names {
    static func check(_ kind: String, _ name: String) throws(RulesetError) {
        guard !name.isEmpty else { throw .invalidName(kind: kind, name: name, reason: "empty") }
        guard name.utf8.count <= KernelLimits.kernel.objectName else {
            throw .invalidName(kind: kind, name: name, reason: "longer than 255 bytes (NFT_NAME_MAXLEN)")
        }
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else {
            throw .invalidName(kind: kind, name: name, reason: "must start with a letter or '_'")
        }
        for c in name.unicodeScalars where !(c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || "_.-".unicodeScalars.contains(c))) {
            throw .invalidName(kind: kind, name: name, reason: "'\(c)' is not allowed (letters, digits, '_', '.', '-')")
        }
        if name.hasPrefix("__") {
            throw .invalidName(kind: kind, name: name, reason: "names starting with '__' are reserved for anonymous sets")
        }
    }
}
