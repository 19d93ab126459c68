/// The one place that knows what the kernel accepts. `Transaction` runs every queued operation
/// through it (so errors surface when queued) and `FakeNetfilter` runs a whole transaction through
/// it on commit (so the fake rejects what the kernel would: jumps to missing or base chains, loops,
/// lookups in missing or mistyped sets, duplicates on create, deleting what is still referenced,
/// elements that do not fit the set).
struct TableState: Sendable {
    let id: TableID
    var table: Table?
    /// Next kernel handle, when this state assigns handles (the fake); nil while merely simulating
    /// a transaction, where new rules have no handle yet.
    var nextHandle: UInt64?

    init(id: TableID, table: Table?, nextHandle: UInt64? = nil) {
        self.id = id
        self.table = table
        self.nextHandle = nextHandle
    }

    mutating func apply(_ op: Operation) throws(RulesetError) {
        if case .table(let t) = op.object {
            guard t.id == id else { throw .wrongTable(expected: id, got: t.id) }
            try applyTable(op.verb, t)
            return
        }
        guard var t = table else { throw .noSuchTable(id) }
        switch (op.verb, op.object) {
        case (.add, .chain(let c)), (.create, .chain(let c)):
            try Names.check("chain", c.name)
            if let i = t.chains.firstIndex(where: { $0.name == c.name }) {
                if op.verb == .create { throw .chainExists(c.name) }
                let old = t.chains[i]
                if old.base == c.base { break }
                guard var ob = old.base, let nb = c.base, ob.hook == nb.hook, ob.type == nb.type,
                      ob.priority == nb.priority else {
                    throw .chainConflict(c.name, reason: "only the policy of a base chain can change")
                }
                ob.policy = nb.policy
                t.chains[i].base = ob
            } else {
                t.chains.append(c)
            }
        case (.delete, .chain(let c)):
            guard t.chain(named: c.name) != nil else { throw .noSuchChain(c.name) }
            let users = Self.references(to: c.name, in: t)
            guard users.isEmpty else { throw .chainInUse(c.name, by: users) }
            t.chains.removeAll { $0.name == c.name }
            t.rules.removeAll { $0.chain == c.name }
        case (.flush, .chain(let c)):
            guard t.chain(named: c.name) != nil else { throw .noSuchChain(c.name) }
            t.rules.removeAll { $0.chain == c.name }

        case (.add, .set(let s)), (.create, .set(let s)):
            try Names.check("set", s.name)
            try Self.checkDefinition(s)
            if let old = t.set(named: s.name) {
                if op.verb == .create { throw .setExists(s.name) }
                guard old.definition == s.definition else {
                    throw .setConflict(s.name, reason: "was \(Self.summary(old)), now \(Self.summary(s))")
                }
            } else {
                t.sets.append(s.definition)
            }
            if !s.elements.isEmpty { try Self.addElements(s.elements, to: s.name, create: false, in: &t) }
        case (.delete, .set(let s)):
            guard t.set(named: s.name) != nil else { throw .noSuchSet(s.name) }
            let users = Array(Set(t.rules.filter { $0.referencedSets.contains(s.name) }.map(\.chain))).sorted()
            guard users.isEmpty else { throw .setInUse(s.name, by: users) }
            t.sets.removeAll { $0.name == s.name }
        case (.flush, .set(let s)):
            guard let i = t.sets.firstIndex(where: { $0.name == s.name }) else { throw .noSuchSet(s.name) }
            t.sets[i].setElements([])

        case (.add, .rule(var r)), (.create, .rule(var r)):
            guard t.chain(named: r.chain) != nil else { throw .noSuchChain(r.chain) }
            try RuleCheck.check(r, in: t)
            if let h = nextHandle {
                r.handle = h
                nextHandle = h + 1
            } else {
                r.handle = nil
            }
            t.rules.append(r)
            try Self.checkLoops(t)
        case (.delete, .rule(let r)):
            guard t.chain(named: r.chain) != nil else { throw .noSuchChain(r.chain) }
            guard let h = r.handle else { throw .ruleWithoutHandle(chain: r.chain) }
            guard let i = t.rules.firstIndex(where: { $0.chain == r.chain && $0.handle == h }) else {
                throw .noSuchRule(chain: r.chain, handle: h)
            }
            t.rules.remove(at: i)
        case (.flush, .rule):
            throw .unsupported("flush of a single rule; flush its chain or delete it by handle")

        case (.add, .elements(let name, let els)), (.create, .elements(let name, let els)):
            try Self.addElements(els, to: name, create: op.verb == .create, in: &t)
        case (.delete, .elements(let name, let els)):
            guard let i = t.sets.firstIndex(where: { $0.name == name }) else { throw .noSuchSet(name) }
            var set = t.sets[i]
            var present = Set(set.elements.map(\.key))
            for e in els {
                guard present.remove(e.key) != nil else { throw .noSuchElement(set: name, element: NFTText.element(e)) }
            }
            set.setElements(set.elements.filter { present.contains($0.key) })
            t.sets[i] = set
        case (.flush, .elements(let name, _)):
            throw .unsupported("flush of elements; flush set '\(name)' instead")
        case (_, .table):
            break  // handled above
        }
        table = t
    }

    private mutating func applyTable(_ verb: Verb, _ t: Table) throws(RulesetError) {
        switch verb {
        case .add, .create:
            try Names.check("table", t.name)
            if table != nil {
                if verb == .create { throw .tableExists(id) }
                table?.flags = t.flags
            } else {
                table = t.header
            }
        case .delete:
            guard table != nil else { throw .noSuchTable(id) }
            table = nil
        case .flush:
            guard table != nil else { throw .noSuchTable(id) }
            table?.rules = []
        }
    }

    // MARK: references

    /// Who jumps to `chain`: rules of other chains and verdict maps.
    static func references(to chain: String, in t: Table) -> [String] {
        var users: Set<String> = []
        for r in t.rules where r.chain != chain && r.jumpTargets.contains(chain) {
            users.insert("chain '\(r.chain)'")
        }
        for s in t.sets where s.data == .verdict {
            if s.elements.contains(where: { $0.data.flatMap(Self.target) == chain }) {
                users.insert("map '\(s.name)'")
            }
        }
        return users.sorted()
    }

    static func target(_ d: ElementData) -> String? {
        if case .verdict(let v) = d { return v.targetChain }
        return nil
    }

    /// The kernel refuses a jump that closes a cycle (ELOOP); so do we.
    static func checkLoops(_ t: Table) throws(RulesetError) {
        var mapTargets: [String: Set<String>] = [:]
        for s in t.sets where s.data == .verdict {
            mapTargets[s.name] = Set(s.elements.compactMap { $0.data.flatMap(target) })
        }
        var edges: [String: [String]] = [:]
        for r in t.rules {
            var targets = r.jumpTargets
            for case .vmap(_, .named(let m)) in r.statements { targets += mapTargets[m].map { Array($0) } ?? [] }
            edges[r.chain, default: []] += targets
        }
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
        for c in t.chains.map(\.name) where state[c] == nil {
            if let (from, to) = visit(c) { throw .jumpLoop(chain: from, target: to) }
        }
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

    static func addElements(_ els: [SetElement], to name: String, create: Bool, in t: inout Table) throws(RulesetError) {
        guard let i = t.sets.firstIndex(where: { $0.name == name }) else { throw .noSuchSet(name) }
        var set = t.sets[i]
        var existing: [[KeyPart]: ElementData?] = [:]
        existing.reserveCapacity(set.elements.count + els.count)
        for e in set.elements { existing[e.key] = e.data }
        var added: [SetElement] = []
        for e in els {
            try checkElement(e, for: set, in: t)
            if let old = existing[e.key] {
                if create || old != e.data { throw .elementExists(set: name, element: NFTText.element(e)) }
                continue
            }
            existing[e.key] = e.data
            added.append(e)
        }
        if added.isEmpty { return }
        if set.flags.contains(.interval), set.key.fields.count == 1, set.key.fields[0].isBigEndian {
            try checkOverlap(set.elements + added, set: name)
        }
        set.setElements(set.elements + added)
        t.sets[i] = set
        if set.data == .verdict, added.contains(where: { $0.data.flatMap(target) != nil }) {
            try checkLoops(t)
        }
    }

    static func checkElement(_ e: SetElement, for set: NFTSet, in t: Table) throws(RulesetError) {
        let text = NFTText.element(e)
        let got = KeyType(e.key.map(\.dataType))
        guard got == set.key else {
            throw .keyMismatch(set: set.name, element: text,
                               reason: "key is \(got) (\(got.byteLength) bytes), set expects \(set.key) (\(set.key.byteLength) bytes)")
        }
        if !set.flags.contains(.interval), let p = e.key.first(where: \.isRange) {
            throw .keyMismatch(set: set.name, element: text, reason: "'\(p)' is a range but the set has no interval flag")
        }
        for p in e.key {
            if case .range(let lo, let hi) = p, ElementOrder.sortKey([.value(hi)]).lexicographicallyPrecedes(ElementOrder.sortKey([.value(lo)])) {
                throw .keyMismatch(set: set.name, element: text, reason: "range '\(p)' has its low end above its high end")
            }
        }
        switch (set.data, e.data) {
        case (nil, nil):
            break
        case (nil, .some):
            throw .dataMismatch(set: set.name, element: text, reason: "a set element cannot map to a value")
        case (.some(let d), nil):
            throw .dataMismatch(set: set.name, element: text, reason: "a map element needs a \(d)")
        case (.verdict, .verdict(let v)?):
            if let target = v.targetChain {
                guard let c = t.chain(named: target) else { throw .jumpToMissingChain(from: "map '\(set.name)'", to: target) }
                if c.isBase { throw .jumpToBaseChain(from: "map '\(set.name)'", to: target) }
            }
        case (.value(let dt), .value(let v)?) where v.dataType == dt:
            break
        case (.some(let d), .some(let got)):
            throw .dataMismatch(set: set.name, element: text, reason: "maps to '\(got)', the map holds \(d)")
        }
    }

    /// Interval elements may not overlap (the kernel answers EEXIST).
    static func checkOverlap(_ els: [SetElement], set: String) throws(RulesetError) {
        let ranges = els.map { e in (lo: e.key[0].low.bytes, hi: e.key[0].high.bytes, e: e) }
            .sorted { $0.lo.lexicographicallyPrecedes($1.lo) }
        for (a, b) in zip(ranges, ranges.dropFirst()) where !a.hi.lexicographicallyPrecedes(b.lo) {
            throw .intervalOverlap(set: set, element: NFTText.element(b.e), existing: NFTText.element(a.e))
        }
    }
}

/// Object names as both nft's parser and the kernel accept them.
enum Names {
    static func check(_ kind: String, _ name: String) throws(RulesetError) {
        guard !name.isEmpty else { throw .invalidName(kind: kind, name: name, reason: "empty") }
        guard name.utf8.count <= 255 else {
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
