/// What a rule is checked against: the table it goes into, or `TableState`'s indexed view of it.
protocol RuleContext {
    var family: TableFamily { get }
    func chain(named name: String) -> Chain?
    /// Only the definition is read (key, data, flags), never the elements.
    func set(named name: String) -> NFTSet?
}

extension Table: RuleContext {}

/// Checks a rule the way nft's evaluator and the kernel would, against the table it goes into.
enum RuleCheck {
    static func check(_ r: Rule, in t: some RuleContext) throws(RulesetError) {
        // The rule's text only when it is refused: rendering every rule of a 24,000-rule plan
        // cost more than checking it.
        func bad(_ reason: String) -> RulesetError { .invalidRule(chain: r.chain, rule: NFTText.rule(r), reason: reason) }

        guard !r.statements.isEmpty else { throw bad("a rule needs at least one statement") }
        if let c = r.comment {
            guard c.utf8.count <= KernelLimits.kernel.comment else { throw bad("comment longer than \(KernelLimits.kernel.comment) bytes") }
            // Control bytes (CR, LF, ESC) would reach `nft list` and terminals raw; '"' ends nft's quoting.
            guard BoundedText.isPrintable(c) else { throw bad("comment may hold printable ASCII only, without '\"'") }
        }
        var tcpKnown = false
        var previousWasTCPProto = false
        for s in r.statements {
            defer {
                if case .match(let m) = s { previousWasTCPProto = m.fields == [.metaL4proto] && !m.negated && m.operand == .value(.proto(IPProto.tcp)) } else { previousWasTCPProto = false }
            }
            switch s {
            case .match(let m):
                try checkMatch(m, family: t.family, table: t, chain: r.chain, bad: bad)
                if m.fields == [.tcpDport] || (m.fields == [.metaL4proto] && !m.negated && m.operand == .value(.proto(IPProto.tcp))) {
                    tcpKnown = true
                }
            case .vmap(let fields, let map):
                guard !fields.isEmpty else { throw bad("vmap needs a key") }
                try checkFields(fields, family: t.family, bad: bad)
                let key = KeyType(fields.map(\.dataType))
                switch map {
                case .named(let name):
                    guard let set = t.set(named: name) else { throw .lookupInMissingSet(chain: r.chain, set: name) }
                    guard set.data == .verdict else {
                        throw .lookupMismatch(chain: r.chain, set: name, reason: "vmap needs a verdict map")
                    }
                    guard set.key == key else {
                        throw .lookupMismatch(chain: r.chain, set: name, reason: "key is \(key), map has \(set.key)")
                    }
                case .anonymous(let els):
                    guard !els.isEmpty else { throw bad("empty anonymous map") }
                    for e in els {
                        guard KeyType(e.key.map(\.dataType)) == key else { throw bad("'\(e)' does not fit key \(key)") }
                        guard case .verdict(let v)? = e.data else { throw bad("'\(e)' needs a verdict") }
                        try checkJump(v, from: r.chain, in: t)
                    }
                }
            case .setFromMap(let target, let fields, let name):
                guard !fields.isEmpty else { throw bad("map lookup needs a key") }
                // The only writable field: `meta priority`, the dispatch's scratch.
                guard target == .metaPriority else { throw bad("'\(target)' cannot be set") }
                try checkFields(fields, family: t.family, bad: bad)
                let key = KeyType(fields.map(\.dataType))
                guard let set = t.set(named: name) else { throw .lookupInMissingSet(chain: r.chain, set: name) }
                guard set.data == .value(target.dataType) else {
                    throw .lookupMismatch(chain: r.chain, set: name, reason: "setting \(target) needs a map to \(target.dataType)")
                }
                guard set.key == key else {
                    throw .lookupMismatch(chain: r.chain, set: name, reason: "key is \(key), map has \(set.key)")
                }
            case .counter:
                break
            case .log(let l):
                if l.group != nil, l.level != nil { throw bad("log level and group are mutually exclusive") }
                if let p = l.prefix {
                    guard p.utf8.count <= KernelLimits.kernel.logPrefix else { throw bad("log prefix longer than \(KernelLimits.kernel.logPrefix) bytes") }
                    guard BoundedText.isPrintable(p) else { throw bad("log prefix may hold printable ASCII only, without '\"'") }
                }
            case .limit(let l):
                guard l.rate > 0 else { throw bad("limit rate must be positive") }
            case .reject(let rj):
                try checkReject(rj, family: t.family, tcpKnown: tcpKnown, explicitL4: previousWasTCPProto, bad: bad)
            case .verdict(let v):
                try checkJump(v, from: r.chain, in: t)
            }
        }
    }

    static func checkJump(_ v: Verdict, from chain: String, in t: some RuleContext) throws(RulesetError) {
        guard let target = v.targetChain else { return }
        guard let c = t.chain(named: target) else { throw .jumpToMissingChain(from: chain, to: target) }
        if c.isBase { throw .jumpToBaseChain(from: chain, to: target) }
    }

    static func checkFields(_ fields: [Field], family: TableFamily, bad: (String) -> RulesetError) throws(RulesetError) {
        for f in fields {
            switch (f, family) {
            case (.ipSaddr, .ip6), (.ipDaddr, .ip6), (.icmpType, .ip6):
                throw bad("'\(f)' cannot match in an ip6 table")
            case (.ip6Saddr, .ip), (.ip6Daddr, .ip), (.icmpv6Type, .ip):
                throw bad("'\(f)' cannot match in an ip table")
            default:
                break
            }
        }
    }

    static func checkMatch(_ m: Match, family: TableFamily, table t: some RuleContext, chain: String,
                           bad: (String) -> RulesetError) throws(RulesetError) {
        guard !m.fields.isEmpty else { throw bad("a match needs a field") }
        try checkFields(m.fields, family: family, bad: bad)
        let key = KeyType(m.fields.map(\.dataType))
        if m.fields.count > 1 {
            switch m.operand {
            case .set, .anonymousSet: break
            default: throw bad("a concatenation can only be matched against a set")
            }
        }
        let type = m.fields[0].dataType
        switch m.operand {
        case .value(let v):
            guard v.dataType == type else { throw bad("'\(v)' is not a \(type)") }
            if case .ctState(let s) = v {
                if s.isEmpty { throw bad("empty ct state") }
                // nft 1.0.6 turns `ct state != a,b` into `cmp neq a|b`, which is always true.
                if m.negated, s.rawValue.nonzeroBitCount > 1 {
                    throw bad("'ct state != a,b' never matches as intended; use an anonymous set: ct state != { a, b }")
                }
            }
        case .prefix(let v, let len):
            guard v.dataType == type, type.printsPrefixes else { throw bad("prefixes only apply to addresses") }
            guard Int(len) <= type.byteLength * 8 else { throw bad("prefix length \(len) too long") }
        case .range(let lo, let hi):
            guard lo.dataType == type, hi.dataType == type else { throw bad("range ends must be \(type)") }
            guard type != .ctState, type != .ifname else { throw bad("\(type) cannot be a range") }
            guard ElementOrder.sortKey([.value(lo)]).lexicographicallyPrecedes(ElementOrder.sortKey([.value(hi)])) else {
                throw bad("range low end must be below its high end")
            }
        case .set(let name):
            guard let set = t.set(named: name) else { throw .lookupInMissingSet(chain: chain, set: name) }
            guard !set.isMap else {
                throw .lookupMismatch(chain: chain, set: name, reason: "it is a map; use vmap for verdict maps")
            }
            guard set.key == key else {
                throw .lookupMismatch(chain: chain, set: name, reason: "key is \(key), set has \(set.key)")
            }
        case .anonymousSet(let els):
            guard !els.isEmpty else { throw bad("empty anonymous set") }
            for e in els {
                guard KeyType(e.key.map(\.dataType)) == key else { throw bad("'\(e)' does not fit key \(key)") }
                guard e.data == nil else { throw bad("'\(e)': anonymous set entries have no data") }
            }
        }
    }

    static func checkReject(_ rj: Reject, family: TableFamily, tcpKnown: Bool, explicitL4: Bool,
                            bad: (String) -> RulesetError) throws(RulesetError) {
        switch (rj, family) {
        case (.tcpReset, .ip), (.tcpReset, .ip6):
            // nft hides `meta l4proto tcp` before a tcp reset in these families (not in inet).
            if explicitL4 { throw bad("in \(family.rawValue) tables write 'reject with tcp reset' without 'meta l4proto tcp'; the protocol check is implicit") }
        case (.tcpReset, _):
            guard tcpKnown else { throw bad("'reject with tcp reset' needs 'meta l4proto tcp' or a tcp match before it") }
        case (.icmpx(1), .inet), (.icmpx(1), .bridge), (.icmp(3), .ip), (.icmpv6(4), .ip6):
            throw bad("this is the family's default reject; write Reject.default (nft prints plain 'reject')")
        case (.icmpx, .ip), (.icmpx, .ip6), (.icmpv6, .ip), (.icmp, .ip6):
            throw bad("this reject type does not exist in the \(family.rawValue) family")
        default:
            break
        }
    }
}
