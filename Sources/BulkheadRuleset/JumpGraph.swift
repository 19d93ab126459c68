/// Who can jump where, and who uses which set, kept up to date as rules and verdict-map elements
/// come and go (so `TableState` never rebuilds it: that was quadratic in the table's size).
///
/// Counts, not flags: two rules of chain A jumping to B are two reasons for the edge A → B, and
/// deleting one leaves it. A rule `vmap @m` in chain A adds an edge A → T for every chain T that
/// some element of `m` jumps to; an element of `m` jumping to a chain no other element of `m`
/// targets adds an edge from every chain that looks `m` up.
struct JumpGraph: Sendable {
    /// from chain → to chain → number of reasons (direct jumps and verdict-map lookups).
    private(set) var edges: [String: [String: Int]] = [:]
    /// target chain → chain whose rules jump there directly (verdicts, anonymous vmaps) → count.
    private(set) var directJumps: [String: [String: Int]] = [:]
    /// verdict map → chain its elements jump to → number of elements.
    var mapTargets: [String: [String: Int]] = [:]
    /// verdict map → chain whose rules look it up with `vmap` → number of such lookups.
    private(set) var mapUsers: [String: [String: Int]] = [:]
    /// set or map → chain whose rules look it up by name → count.
    private(set) var setUsers: [String: [String: Int]] = [:]

    private static func bump(_ d: inout [String: [String: Int]], _ a: String, _ b: String, _ delta: Int) {
        if delta > 0 {
            d[a, default: [:]][b, default: 0] += delta  // in place: one lookup per level
            return
        }
        let n = (d[a]?[b] ?? 0) + delta
        if n > 0 {
            d[a, default: [:]][b] = n
        } else if d[a] != nil {
            d[a]![b] = nil
            if d[a]!.isEmpty { d[a] = nil }
        }
    }

    /// Calls back for each chain `r` jumps to directly, each verdict map it `vmap`s by name, and
    /// each set or map it looks up by name (`Rule.jumpTargets`/`referencedSets` without the arrays).
    static func forEachReference(in r: Rule, jump: (String) -> Void, vmap: (String) -> Void, lookup: (String) -> Void) {
        for s in r.statements {
            switch s {
            case .verdict(let v):
                if let t = v.targetChain { jump(t) }
            case .vmap(_, .anonymous(let elements)):
                for e in elements {
                    if case .verdict(let v)? = e.data, let t = v.targetChain { jump(t) }
                }
            case .vmap(_, .named(let m)):
                vmap(m)
                lookup(m)
            case .match(let m):
                if case .set(let name) = m.operand { lookup(name) }
            case .setFromMap(_, _, let name):
                lookup(name)
            default:
                break
            }
        }
    }

    /// Adds (`delta` 1) or removes (-1) what rule `r` contributes.
    mutating func add(_ r: Rule, _ delta: Int) {
        let a = r.chain
        Self.forEachReference(in: r, jump: { t in
            Self.bump(&edges, a, t, delta)
            Self.bump(&directJumps, t, a, delta)
        }, vmap: { m in
            Self.bump(&mapUsers, m, a, delta)
            for t in (mapTargets[m] ?? [:]).keys { Self.bump(&edges, a, t, delta) }
        }, lookup: { s in
            Self.bump(&setUsers, s, a, delta)
        })
    }

    /// `delta` elements of verdict map `map` now (1) or no longer (-1) jump to `chain`.
    mutating func mapTarget(_ map: String, _ chain: String, _ delta: Int) {
        let old = mapTargets[map]?[chain] ?? 0
        Self.bump(&mapTargets, map, chain, delta)
        let now = old + delta
        guard (old == 0) != (now <= 0), let users = mapUsers[map] else { return }
        for (u, n) in users { Self.bump(&edges, u, chain, now > 0 ? n : -n) }
    }

    /// After `flush table`: no rules, so no edges and no users; map elements stay.
    mutating func removeAllRules() {
        edges = [:]
        directJumps = [:]
        mapUsers = [:]
        setUsers = [:]
    }

    /// Whether `goal` can be reached from `start` over the edges plus `extra` ones.
    func reaches(from start: String, to goal: String, extra: [String: [String]]) -> Bool {
        if start == goal { return true }
        // Most jump targets are leaves (a service chain that accepts or drops): nothing to search.
        if edges[start] == nil && extra[start] == nil { return false }
        var seen: Set<String> = [start]
        var stack = [start]
        while let c = stack.popLast() {
            for n in (edges[c] ?? [:]).keys {
                if n == goal { return true }
                if seen.insert(n).inserted { stack.append(n) }
            }
            for n in extra[c] ?? [] {
                if n == goal { return true }
                if seen.insert(n).inserted { stack.append(n) }
            }
        }
        return false
    }
}
