import BulkheadRuleset

/// Reads kernel expressions back into model statements: the inverse of `Linearizer`.
///
/// Decoding is checked by re-encoding: a rule is only accepted when `Linearizer` turns the
/// decoded statements back into exactly the dumped expressions (counter values aside). Anything
/// else (a rule someone else wrote, an expression Bulkhead never emits) becomes a *foreign*
/// rule, which compares unequal to every rule we generate, so a diff replaces it.
struct Delinearizer {
    let family: TableFamily
    /// Anonymous sets of the table by their kernel name (`__set0`), with elements.
    let anonymousSets: [String: NFTSet]

    /// Prefix of the comment that marks a rule Bulkhead could not read back.
    static let foreignMarker = Rule.undecodedCommentPrefix

    func rule(chain: String, handle: UInt64?, expressions: [KernelExpression], userdata: [UInt8]) -> Rule {
        let comment = userdata.isEmpty ? nil : Rule.comment(fromUserdata: userdata)
        if let statements = statements(expressions) {
            let candidate = Rule(chain: chain, handle: handle, statements, comment: comment)
            var lin = Linearizer(family: family)
            if let again = try? lin.linearize(candidate),
               Self.normalized(again.expressions, anonymous: nil) == Self.normalized(expressions, anonymous: anonymousSets),
               comment == nil || candidate.userdata == userdata {
                return candidate
            }
        }
        let text = expressions.map(Self.describe).joined(separator: " ")
        return Rule(chain: chain, handle: handle, [], comment: String((Self.foreignMarker + text).prefix(400)))
    }

    /// Expressions with live state and batch-local names removed, for comparison.
    static func normalized(_ list: [KernelExpression], anonymous: [String: NFTSet]?) -> [KernelExpression] {
        list.map { e in
            switch e {
            case .counter: return .counter(packets: 0, bytes: 0)
            case .lookup(let set, let id, let sreg, let dreg, let flags):
                let isAnon = id != nil || (anonymous?[set] != nil)
                return .lookup(set: isAnon ? "<anonymous>" : set, setID: nil, sreg: sreg, dreg: dreg, flags: flags)
            default: return e
            }
        }
    }

    static func describe(_ e: KernelExpression) -> String {
        switch e {
        case .unknown(let name, let text): return "[\(name) \(text)]"
        default: return "[\(e)]"
        }
    }

    // MARK: parsing

    private enum Pending {
        case dependency(Dependency, Statement)
    }

    func field(for load: KernelExpression, context: Set<Dependency>) -> (Field, UInt32)? {
        switch load {
        case .payload(let base, let offset, let length, _):
            let arp = context.contains(.etherType(0x0806))
            switch (base, offset) {
            case (PayloadBase.link.rawValue, 12) where length == 2: return (.etherType, 2)
            case (PayloadBase.link.rawValue, 6) where length == 6: return (.etherSaddr, 6)
            case (PayloadBase.network.rawValue, 8) where arp && length == 6: return (.arpSaddrEther, 6)
            case (PayloadBase.network.rawValue, 14) where arp && length == 4: return (.arpSaddrIP, 4)
            case (PayloadBase.transport.rawValue, 8) where length == 16 && context.contains(.l4proto(IPProto.icmpv6)):
                return (.icmpv6Taddr, 16)
            case (PayloadBase.network.rawValue, 12) where length <= 4: return (.ipSaddr, length)
            case (PayloadBase.network.rawValue, 16) where length <= 4: return (.ipDaddr, length)
            case (PayloadBase.network.rawValue, 8) where length <= 16: return (.ip6Saddr, length)
            case (PayloadBase.network.rawValue, 24) where length <= 16: return (.ip6Daddr, length)
            case (PayloadBase.transport.rawValue, 2) where length == 2:
                if context.contains(.l4proto(IPProto.tcp)) { return (.tcpDport, 2) }
                if context.contains(.l4proto(IPProto.udp)) { return (.udpDport, 2) }
                return (.thDport, 2)
            case (PayloadBase.transport.rawValue, 0) where length == 1:
                if context.contains(.l4proto(IPProto.icmp)) { return (.icmpType, 1) }
                if context.contains(.l4proto(IPProto.icmpv6)) { return (.icmpv6Type, 1) }
                return nil
            default: return nil
            }
        case .meta(let key, _):
            switch MetaKey(rawValue: key) {
            case .l4proto?: return (.metaL4proto, 1)
            case .nfproto?: return (.metaNfproto, 1)
            case .priority?: return (.metaPriority, 4)
            case .iifname?: return (.iifname, 16)
            case .oifname?: return (.oifname, 16)
            default: return nil
            }
        case .ct(let key, _):
            return key == CtKey.state.rawValue ? (.ctState, 4) : nil
        default:
            return nil
        }
    }

    static func dependency(_ load: KernelExpression, _ cmp: KernelExpression) -> Dependency? {
        guard case .meta(let key, 1) = load, case .cmp(1, NFT.cmpEq, let data) = cmp else { return nil }
        switch MetaKey(rawValue: key) {
        case .nfproto? where data.count == 1: return .nfproto(data[0])
        case .l4proto? where data.count == 1: return .l4proto(data[0])
        case .protocol? where data.count == 2: return .etherType(UInt16(data[0]) << 8 | UInt16(data[1]))
        default: return nil
        }
    }

    func statements(_ exprs: [KernelExpression]) -> [Statement]? {
        var out: [Statement] = []
        var pending: [(Dependency, Statement?)] = []
        var context: Set<Dependency> = []
        var i = 0

        func flushPending(consumedBy fields: [Field]) -> Bool {
            var needed = Set(fields.flatMap { $0.dependencies(in: family) })
            for (dep, explicit) in pending {
                if needed.contains(dep) {
                    needed.remove(dep)
                } else if let explicit {
                    out.append(explicit)
                } else {
                    return false // an ethertype check we cannot express on its own
                }
            }
            pending.removeAll()
            return true
        }

        while i < exprs.count {
            let e = exprs[i]
            // A protocol check: a dependency of the next match, or an explicit match.
            if i + 1 < exprs.count, let dep = Self.dependency(e, exprs[i + 1]) {
                let explicit: Statement?
                switch dep {
                case .nfproto(let p): explicit = .match(Match(.metaNfproto, .value(.nfProto(p))))
                case .l4proto(let p): explicit = .match(Match(.metaL4proto, .value(.proto(p))))
                case .etherType: explicit = nil
                }
                // Only a check that is followed by something needing it can be implicit; keep it
                // pending until we see what comes next.
                pending.append((dep, explicit))
                context.insert(dep)
                i += 2
                continue
            }
            switch e {
            case .payload, .meta, .ct:
                // One or more loads, then what consumes them.
                var loads: [(Field, UInt32, KernelExpression)] = []
                var j = i
                // The first load goes to NFT_REG_1; a concatenation continues while each next load
                // targets the register right after the previous field.
                while j < exprs.count, let (f, len) = field(for: exprs[j], context: context) {
                    let want = Linearizer.registers(for: loads.map(\.0) + [f]).last!
                    guard dreg(of: exprs[j]) == want, loads.isEmpty || want != 1 else { break }
                    loads.append((f, len, exprs[j]))
                    j += 1
                }
                guard !loads.isEmpty, j < exprs.count else { return nil }
                let fields = loads.map(\.0)
                guard Linearizer.registers(for: fields) == loads.map({ dreg(of: $0.2) }) else { return nil }
                guard flushPending(consumedBy: fields) else { return nil }
                for f in fields { context.formUnion(f.dependencies(in: family)) }
                let consumer = exprs[j]
                if case .lookup(let set, _, 1, let dreg, let flags) = consumer {
                    let negated = flags & NFT.lookupInvert != 0
                    let anon = anonymousSets[set]
                    if dreg == KernelExpression.verdictRegister {
                        guard !negated else { return nil }
                        out.append(.vmap(fields: fields, map: anon.map { .anonymous($0.elements) } ?? .named(set)))
                    } else if dreg == nil {
                        out.append(.match(Match(fields, negated: negated, anon.map { .anonymousSet($0.elements) } ?? .set(set))))
                    } else if dreg == 1, !negated, anon == nil, j + 1 < exprs.count,
                              case .metaSet(let key, 1) = exprs[j + 1], key == MetaKey.priority.rawValue {
                        // `meta priority set FIELDS map @m`: the only data-map lookup we emit.
                        out.append(.setFromMap(target: .metaPriority, fields: fields, map: set))
                        i = j + 2
                        continue
                    } else {
                        return nil // other data maps into registers: not something Bulkhead emits
                    }
                    i = j + 1
                    continue
                }
                guard fields.count == 1 else { return nil }
                let f = fields[0]
                let loadLength = loads[0].1
                switch consumer {
                case .cmp(1, let op, let data) where op == NFT.cmpEq || op == NFT.cmpNeq:
                    let negated = op == NFT.cmpNeq
                    // The kernel accepts a compare of any length up to the register size after a
                    // load of any other length (a 2-byte load compared against 8 bytes): such a rule
                    // is not ours. Only an interface-name wildcard compares fewer bytes than it loads.
                    let isWildcard = (f == .iifname || f == .oifname) && data.count < 16
                    guard data.count == Int(loadLength) || isWildcard else { return nil }
                    if f == .ctState {
                        guard negated, let v = ElementEncoding.value(data[...], as: .ctState) else { return nil }
                        out.append(.match(Match(f, negated: true, .value(v))))
                    } else if isWildcard {
                        out.append(.match(Match(f, negated: negated, .value(.ifname(String(decoding: data, as: UTF8.self) + "*")))))
                    } else if data.count < f.dataType.byteLength {
                        // A byte-aligned prefix: only the prefix bytes were loaded.
                        let padded = data + [UInt8](repeating: 0, count: f.dataType.byteLength - data.count)
                        guard let v = ElementEncoding.value(padded[...], as: f.dataType) else { return nil }
                        out.append(.match(Match(f, negated: negated, .prefix(v, UInt8(data.count * 8)))))
                    } else {
                        guard let v = ElementEncoding.value(data[...], as: f.dataType) else { return nil }
                        out.append(.match(Match(f, negated: negated, .value(v))))
                        if !negated {
                            if case .proto(let p) = v, f == .metaL4proto { context.insert(.l4proto(p)) }
                            if case .nfProto(let p) = v, f == .metaNfproto { context.insert(.nfproto(p)) }
                        }
                    }
                    i = j + 1
                case .bitwise(1, 1, let length, let mask, let xor) where xor.allSatisfy({ $0 == 0 }):
                    // Every length must agree (load, bitwise, mask, xor, compare): the kernel checks
                    // each against the register file, not against one another.
                    guard j + 1 < exprs.count, case .cmp(1, let op, let data) = exprs[j + 1],
                          op == NFT.cmpEq || op == NFT.cmpNeq,
                          Int(length) == Int(loadLength), mask.count == Int(loadLength), xor.count == mask.count,
                          data.count == mask.count else { return nil }
                    if f == .ctState {
                        guard data.allSatisfy({ $0 == 0 }), let v = ElementEncoding.value(mask[...], as: .ctState) else { return nil }
                        // `ct state X`: bits & X != 0. (`& X == 0` is the negated form.)
                        out.append(.match(Match(f, negated: op == NFT.cmpEq, .value(v))))
                    } else {
                        let bits = mask.reduce(0) { $0 + $1.nonzeroBitCount }
                        guard bits <= f.dataType.byteLength * 8,
                              let v = ElementEncoding.value(data[...], as: f.dataType) else { return nil }
                        out.append(.match(Match(f, negated: op == NFT.cmpNeq, .prefix(v, UInt8(bits)))))
                    }
                    i = j + 2
                case .range(1, let op, let from, let to):
                    guard from.count == Int(loadLength), to.count == from.count,
                          let a = ElementEncoding.value(from[...], as: f.dataType),
                          let b = ElementEncoding.value(to[...], as: f.dataType) else { return nil }
                    out.append(.match(Match(f, negated: op == NFT.rangeNeq, .range(a, b))))
                    i = j + 1
                default:
                    return nil
                }
            case .counter(let p, let b):
                guard flushPending(consumedBy: []) else { return nil }
                out.append(.counter(packets: p, bytes: b))
                i += 1
            case .log(let prefix, let group, let level):
                guard flushPending(consumedBy: []) else { return nil }
                let lv = level.flatMap { Int($0) < LogLevel.allCases.count ? LogLevel.allCases[Int($0)] : nil }
                if level != nil && lv == nil { return nil }
                out.append(.log(Log(prefix: prefix, group: group, level: lv)))
                i += 1
            case .limit(let rate, let unit, let burst, let type, let flags):
                guard flushPending(consumedBy: []) else { return nil }
                let units: [TimeUnit] = [.second, .minute, .hour, .day, .week]
                guard let u = units.first(where: { $0.seconds == unit }), type <= 1, flags <= 1 else { return nil }
                out.append(.limit(Limit(rate: rate, per: u, burst: burst, bytes: type == NFT.limitBytes, over: flags == NFT.limitInvert)))
                i += 1
            case .reject(let type, let code):
                let reject: Reject
                switch (type, family) {
                case (NFT.rejectICMPX, .inet), (NFT.rejectICMPX, .bridge):
                    reject = code == 1 ? .default : .icmpx(code)
                case (NFT.rejectICMPX, _): reject = .icmpx(code)
                case (NFT.rejectTCPReset, _): reject = .tcpReset
                case (NFT.rejectICMP, .ip): reject = code == 3 ? .default : .icmp(code)
                case (NFT.rejectICMP, .ip6): reject = code == 4 ? .default : .icmpv6(code)
                case (NFT.rejectICMP, _):
                    if context.contains(.nfproto(NFProto.ipv6)) || context.contains(.etherType(0x86dd)) { reject = .icmpv6(code) } else { reject = .icmp(code) }
                default: return nil
                }
                // The family check before an ICMP reject in inet/bridge is nft's dependency.
                var consumed: [Dependency] = []
                if case .icmp = reject { consumed = [.nfproto(NFProto.ipv4), .etherType(0x0800)] }
                if case .icmpv6 = reject { consumed = [.nfproto(NFProto.ipv6), .etherType(0x86dd)] }
                for (dep, explicit) in pending where !consumed.contains(dep) {
                    guard let explicit else { return nil }
                    out.append(explicit)
                }
                pending.removeAll()
                out.append(.reject(reject))
                i += 1
            case .verdict(let code, let chain):
                guard flushPending(consumedBy: []) else { return nil }
                let v: Verdict
                switch code {
                case 1: v = .accept
                case 0: v = .drop
                case -1: v = .continue
                case -5: v = .return
                case -3: guard let chain else { return nil }; v = .jump(chain)
                case -4: guard let chain else { return nil }; v = .goto(chain)
                default: return nil
                }
                out.append(.verdict(v))
                i += 1
            default:
                return nil
            }
        }
        guard flushPending(consumedBy: []) else { return nil }
        return out
    }

    private func dreg(of e: KernelExpression) -> UInt32 {
        switch e {
        case .payload(_, _, _, let r), .meta(_, let r), .ct(_, let r): return r
        default: return .max
        }
    }
}
