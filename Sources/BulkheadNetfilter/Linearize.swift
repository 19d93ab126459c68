import BulkheadRuleset

/// An anonymous set or verdict map a rule needs (`ip saddr { a, b }`, `vmap { k : v }`): nft
/// creates it as `__set%d` in the same batch, right before the rule, and the rule's lookup
/// refers to it by NFTA_SET_ID because its real name is only chosen by the kernel.
struct AnonymousSet: Equatable {
    var id: UInt32
    var key: KeyType
    var data: MapData?
    var interval: Bool
    var elements: [SetElement]

    /// NFT_SET_ANONYMOUS | NFT_SET_CONSTANT (| INTERVAL | MAP | CONCAT), as nft sends it.
    var kernelFlags: UInt32 {
        var f: UInt32 = 0x1 | 0x2
        if interval { f |= 0x4 }
        if data != nil { f |= 0x8 }
        if interval && key.isConcatenation { f |= 0x80 }
        return f
    }

    /// The anonymous set as a model set (for element encoding).
    var asModelSet: NFTSet {
        NFTSet(name: "__set%d", key: key, flags: interval ? [.constant, .interval] : [.constant], data: data, elements: elements)
    }
}

/// A rule turned into kernel expressions, plus the anonymous sets it needs.
struct LinearizedRule: Equatable {
    var expressions: [KernelExpression]
    var anonymousSets: [AnonymousSet]
}

// Kernel constants (include/uapi/linux/netfilter/nf_tables.h).
enum NFT {
    static let cmpEq: UInt32 = 0, cmpNeq: UInt32 = 1, cmpLt: UInt32 = 2, cmpLte: UInt32 = 3, cmpGt: UInt32 = 4, cmpGte: UInt32 = 5
    static let rangeEq: UInt32 = 0, rangeNeq: UInt32 = 1
    static let lookupInvert: UInt32 = 1 // NFT_LOOKUP_F_INV
    static let limitPackets: UInt32 = 0, limitBytes: UInt32 = 1, limitInvert: UInt32 = 1
    static let rejectICMP: UInt32 = 0, rejectTCPReset: UInt32 = 1, rejectICMPX: UInt32 = 2
    static let setElementIntervalEnd: UInt32 = 1 // NFT_SET_ELEM_INTERVAL_END
}

/// Turns model rules into kernel expressions the way nft 1.0.6 does (checked with
/// `nft --debug=netlink`), so that `nft list` prints our rules exactly like our rendering and a
/// dump can be read back into the same model.
struct Linearizer {
    let family: TableFamily
    /// Next NFTA_SET_ID for anonymous sets; ids only need to be unique within one batch.
    var nextSetID: UInt32

    init(family: TableFamily, firstSetID: UInt32 = 1) {
        self.family = family
        self.nextSetID = firstSetID
    }

    /// The register holding a field of a concatenation whose data starts `words` 32-bit words
    /// after the start of NFT_REG_1, in the numbering the kernel reports back in dumps
    /// (nft_dump_register): word-aligned to 16 bytes → NFT_REG_n, otherwise NFT_REG32_xx.
    static func register(atWord words: Int) -> UInt32 {
        words % 4 == 0 ? UInt32(1 + words / 4) : UInt32(8 + words)
    }

    /// Registers for each field of a (possibly concatenated) key: every field starts in its own
    /// 32-bit register, advancing by its length rounded up to 4 bytes.
    static func registers(for fields: [Field]) -> [UInt32] {
        var words = 0
        return fields.map { f in
            defer { words += (f.dataType.byteLength + 3) / 4 }
            return register(atWord: words)
        }
    }

    static func load(_ field: Field, into reg: UInt32, length: UInt32? = nil) -> KernelExpression {
        switch field.load {
        case .payload(let base, let offset, let len): return .payload(base: base.rawValue, offset: offset, length: length ?? len, dreg: reg)
        case .meta(let key): return .meta(key: key.rawValue, dreg: reg)
        case .ct(let key): return .ct(key: key.rawValue, dreg: reg)
        }
    }

    static func expressions(for dependency: Dependency) -> [KernelExpression] {
        switch dependency {
        case .nfproto(let p): return [.meta(key: MetaKey.nfproto.rawValue, dreg: 1), .cmp(sreg: 1, op: NFT.cmpEq, data: [p])]
        case .l4proto(let p): return [.meta(key: MetaKey.l4proto.rawValue, dreg: 1), .cmp(sreg: 1, op: NFT.cmpEq, data: [p])]
        case .etherType(let t): return [.meta(key: MetaKey.protocol.rawValue, dreg: 1), .cmp(sreg: 1, op: NFT.cmpEq, data: [UInt8(t >> 8), UInt8(t & 0xff)])]
        }
    }

    mutating func linearize(_ rule: Rule) throws -> LinearizedRule {
        var out: [KernelExpression] = []
        var anonymous: [AnonymousSet] = []
        // nft's protocol context: dependencies already established by an earlier match.
        var established: Set<Dependency> = []

        func require(_ fields: [Field]) {
            for f in fields {
                for d in f.dependencies(in: family) where !established.contains(d) {
                    out += Self.expressions(for: d)
                    established.insert(d)
                }
            }
        }
        func requireDependency(_ d: Dependency) {
            if !established.contains(d) {
                out += Self.expressions(for: d)
                established.insert(d)
            }
        }
        func loadAll(_ fields: [Field]) {
            for (f, r) in zip(fields, Self.registers(for: fields)) { out.append(Self.load(f, into: r)) }
        }
        func newAnonymous(_ fields: [Field], data: MapData?, elements: [SetElement]) -> UInt32 {
            let id = nextSetID
            nextSetID += 1
            let interval = elements.contains { $0.key.contains { $0.isRange } }
            anonymous.append(AnonymousSet(id: id, key: KeyType(fields.map(\.dataType)), data: data, interval: interval, elements: elements))
            return id
        }
        func invalid(_ reason: String) -> NetfilterError {
            .unsupported("rule in chain \(rule.chain) (\(rule.description)): \(reason)")
        }

        for statement in rule.statements {
            switch statement {
            case .match(let m):
                guard let first = m.fields.first else { throw invalid("a match without a field") }
                require(m.fields)
                let op = m.negated ? NFT.cmpNeq : NFT.cmpEq
                switch m.operand {
                case .value(let v):
                    guard m.fields.count == 1 else { throw invalid("a concatenation can only be matched against a set") }
                    out.append(Self.load(first, into: 1))
                    if case .ctState(let state) = v {
                        // `ct state X` tests bits: bitwise & X, cmp neq 0 (as nft). For `!=` with one
                        // state nft compares the value (cmp neq X), the same test since the register
                        // holds exactly one state bit. With several states nft 1.0.6 also emits
                        // cmp neq X, which is true for *every* packet (2 != 6); BulkheadRuleset
                        // refuses that rule, and should one get here we emit the intended test,
                        // bitwise & X, cmp eq 0.
                        if m.negated && state.rawValue.nonzeroBitCount == 1 {
                            out.append(.cmp(sreg: 1, op: NFT.cmpNeq, data: v.bytes))
                        } else {
                            out.append(.bitwise(sreg: 1, dreg: 1, length: 4, mask: v.bytes, xor: [0, 0, 0, 0]))
                            out.append(.cmp(sreg: 1, op: m.negated ? NFT.cmpEq : NFT.cmpNeq, data: [0, 0, 0, 0]))
                        }
                    } else if case .ifname(let name) = v, name.hasSuffix("*") {
                        // A wildcard compares only the prefix bytes (no NUL), as nft does.
                        out.append(.cmp(sreg: 1, op: op, data: Array(name.dropLast().utf8)))
                    } else {
                        guard v.dataType == first.dataType else { throw invalid("\(v) is not a \(first.dataType)") }
                        out.append(.cmp(sreg: 1, op: op, data: v.bytes))
                    }
                    if !m.negated {
                        switch (first, v) {
                        case (.metaL4proto, .proto(let p)): established.insert(.l4proto(p))
                        case (.metaNfproto, .nfProto(let p)): established.insert(.nfproto(p))
                        default: break
                        }
                    }
                case .prefix(let v, let bits):
                    guard m.fields.count == 1, case .payload(let base, let offset, let length) = first.load,
                          v.dataType == first.dataType, Int(bits) <= Int(length) * 8 else {
                        throw invalid("a prefix needs an address field and a length within it")
                    }
                    let bytes = v.bytes
                    if bits % 8 == 0 {
                        // Byte-aligned prefix: nft loads only the prefix bytes and compares them.
                        let n = Int(bits) / 8
                        out.append(.payload(base: base.rawValue, offset: offset, length: UInt32(n), dreg: 1))
                        out.append(.cmp(sreg: 1, op: op, data: Array(bytes.prefix(n))))
                    } else {
                        var mask = [UInt8](repeating: 0, count: Int(length))
                        for i in 0..<Int(bits) { mask[i / 8] |= 0x80 >> UInt8(i % 8) }
                        out.append(.payload(base: base.rawValue, offset: offset, length: length, dreg: 1))
                        out.append(.bitwise(sreg: 1, dreg: 1, length: length, mask: mask, xor: [UInt8](repeating: 0, count: Int(length))))
                        out.append(.cmp(sreg: 1, op: op, data: zip(bytes, mask).map { $0 & $1 }))
                    }
                case .range(let low, let high):
                    guard m.fields.count == 1 else { throw invalid("a concatenation can only be matched against a set") }
                    out.append(Self.load(first, into: 1))
                    out.append(.range(sreg: 1, op: m.negated ? NFT.rangeNeq : NFT.rangeEq, from: low.bytes, to: high.bytes))
                case .set(let name):
                    loadAll(m.fields)
                    out.append(.lookup(set: name, setID: nil, sreg: 1, dreg: nil, flags: m.negated ? NFT.lookupInvert : 0))
                case .anonymousSet(let elements):
                    loadAll(m.fields)
                    let id = newAnonymous(m.fields, data: nil, elements: elements)
                    out.append(.lookup(set: "__set%d", setID: id, sreg: 1, dreg: nil, flags: m.negated ? NFT.lookupInvert : 0))
                }
            case .vmap(let fields, let map):
                require(fields)
                loadAll(fields)
                switch map {
                case .named(let name):
                    out.append(.lookup(set: name, setID: nil, sreg: 1, dreg: KernelExpression.verdictRegister, flags: 0))
                case .anonymous(let elements):
                    let id = newAnonymous(fields, data: .verdict, elements: elements)
                    out.append(.lookup(set: "__map%d", setID: id, sreg: 1, dreg: KernelExpression.verdictRegister, flags: 0))
                }
            case .setFromMap(let target, let fields, let name):
                guard case .meta(let key) = target.load else { throw invalid("only meta fields can be set") }
                require(fields)
                loadAll(fields)
                out.append(.lookup(set: name, setID: nil, sreg: 1, dreg: 1, flags: 0))
                out.append(.metaSet(key: key.rawValue, sreg: 1))
            case .counter(let packets, let bytes):
                out.append(.counter(packets: packets, bytes: bytes))
            case .log(let log):
                out.append(.log(prefix: log.prefix, group: log.group, level: log.level?.number))
            case .limit(let l):
                out.append(.limit(rate: l.rate, unit: l.unit.seconds, burst: l.burst,
                                  type: l.bytes ? NFT.limitBytes : NFT.limitPackets, flags: l.over ? NFT.limitInvert : 0))
            case .reject(let r):
                switch r {
                case .default:
                    switch family {
                    case .ip: out.append(.reject(type: NFT.rejectICMP, code: 3))     // ICMP_PORT_UNREACH
                    case .ip6: out.append(.reject(type: NFT.rejectICMP, code: 4))    // ICMPV6_PORT_UNREACH
                    default: out.append(.reject(type: NFT.rejectICMPX, code: 1))     // NFT_REJECT_ICMPX_PORT_UNREACH
                    }
                case .tcpReset:
                    out.append(.reject(type: NFT.rejectTCPReset, code: 0))
                case .icmp(let code):
                    if family == .inet { requireDependency(.nfproto(NFProto.ipv4)) }
                    if family == .bridge { requireDependency(.etherType(0x0800)) }
                    out.append(.reject(type: NFT.rejectICMP, code: code))
                case .icmpv6(let code):
                    if family == .inet { requireDependency(.nfproto(NFProto.ipv6)) }
                    if family == .bridge { requireDependency(.etherType(0x86dd)) }
                    out.append(.reject(type: NFT.rejectICMP, code: code))
                case .icmpx(let code):
                    out.append(.reject(type: NFT.rejectICMPX, code: code))
                }
            case .verdict(let v):
                out.append(.verdict(code: v.code, chain: v.targetChain))
            }
        }
        return LinearizedRule(expressions: out, anonymousSets: anonymous)
    }
}
