/// A rule: statements evaluated left to right, in a named chain.
public struct Rule: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The chain the rule belongs to.
    public var chain: String
    /// Kernel handle: set on rules read back from a backend, nil on rules we build.
    public var handle: UInt64?
    public private(set) var statements: [Statement]
    /// Attribution such as `policies/shop.yaml:14`; at most 128 bytes, no `"` (nft cannot quote it).
    public var comment: String?

    /// Builds a rule in canonical form: an explicit `meta l4proto X` or `meta nfproto X` match
    /// immediately followed by a match whose field implies it (`meta l4proto tcp tcp dport 22`)
    /// is dropped, because nft hides such a dependency when listing and the netlink encoder emits
    /// it implicitly anyway. Without this, the model and `nft list` would disagree.
    public init(chain: String, handle: UInt64? = nil, _ statements: [Statement], comment: String? = nil) {
        self.chain = chain
        self.handle = handle
        self.statements = Rule.canonical(statements)
        self.comment = comment
    }

    /// `NFTA_RULE_USERDATA` as nft writes it: TLV records of 1-byte type, 1-byte length, value;
    /// the comment is type 0 (`NFTNL_UDATA_RULE_COMMENT`), NUL terminated, length counting the NUL.
    /// Empty when there is no comment.
    public var userdata: [UInt8] {
        guard let comment else { return [] }
        let bytes = Array(comment.utf8) + [0]
        return [0, UInt8(truncatingIfNeeded: bytes.count)] + bytes
    }

    /// Parses `userdata` back into a comment (other TLV types are skipped).
    public static func comment(fromUserdata data: [UInt8]) -> String? {
        var i = 0
        while i + 2 <= data.count {
            let type = data[i], len = Int(data[i + 1])
            guard i + 2 + len <= data.count else { return nil }
            if type == 0 {
                var value = Array(data[(i + 2)..<(i + 2 + len)])
                if value.last == 0 { value.removeLast() }
                return String(decoding: value, as: UTF8.self)
            }
            i += 2 + len
        }
        return nil
    }

    /// Equality as the diff needs it: same chain, statements and comment, ignoring the handle and
    /// counter values (both are live state).
    public func sameContent(as other: Rule) -> Bool {
        // Statement by statement rather than `zeroed == zeroed`: no copies (a diff compares
        // every rule of the table).
        guard chain == other.chain, comment == other.comment, statements.count == other.statements.count else { return false }
        for (a, b) in zip(statements, other.statements) {
            if case .counter = a, case .counter = b { continue }
            if a != b { return false }
        }
        return true
    }

    var zeroed: Rule {
        if handle == nil && !statements.contains(where: { if case .counter(let p, let b) = $0 { p != 0 || b != 0 } else { false } }) {
            return self
        }
        var r = self
        r.handle = nil
        r.statements = statements.map {
            if case .counter = $0 { return .counter(packets: 0, bytes: 0) }
            return $0
        }
        return r
    }

    /// Start of the comment of a rule that a backend read from the kernel but could not decode
    /// (another program's expressions, or lengths Bulkhead never writes). Such a rule has no
    /// statements, so it equals no rule Bulkhead generates and the diff replaces it.
    public static let undecodedCommentPrefix = "bulkhead: unrecognised rule: "

    /// True for a rule read from the kernel that Bulkhead could not decode (a foreign rule).
    public var isUndecoded: Bool {
        statements.isEmpty && (comment?.hasPrefix(Rule.undecodedCommentPrefix) ?? false)
    }

    /// Sets and maps the rule looks up by name.
    public var referencedSets: [String] {
        statements.compactMap {
            switch $0 {
            case .match(let m): if case .set(let s) = m.operand { return s }
            case .vmap(_, .named(let s)): return s
            case .setFromMap(_, _, let s): return s
            default: break
            }
            return nil
        }
    }

    /// Chains the rule can jump or go to directly (verdicts and anonymous vmaps).
    public var jumpTargets: [String] {
        statements.flatMap { s -> [String] in
            switch s {
            case .verdict(let v): return v.targetChain.map { [$0] } ?? []
            case .vmap(_, .anonymous(let elements)):
                return elements.compactMap {
                    if case .verdict(let v) = $0.data { return v.targetChain }
                    return nil
                }
            default: return []
            }
        }
    }

    /// The rule as `nft list` prints it (without indentation).
    public var description: String { NFTText.rule(self) }

    static func canonical(_ statements: [Statement]) -> [Statement] {
        var out: [Statement] = []
        for (i, s) in statements.enumerated() {
            if case .match(let m) = s, !m.negated, m.fields.count == 1, i + 1 < statements.count,
               case .value(let v) = m.operand, case .match(let next) = statements[i + 1],
               let nextField = next.fields.first {
                let implied: Bool
                switch (m.fields[0], v) {
                case (.metaL4proto, .proto(let p)):
                    implied = nextField.dependencies(in: .inet).contains(.l4proto(p))
                case (.metaNfproto, .nfProto(let p)):
                    implied = nextField.dependencies(in: .inet).contains(.nfproto(p))
                default:
                    implied = false
                }
                if implied { continue }
            }
            out.append(sortedAnonymousSets(s))
        }
        return out
    }

    /// nft prints anonymous set entries sorted, so we store them that way.
    static func sortedAnonymousSets(_ s: Statement) -> Statement {
        switch s {
        case .match(var m):
            if case .anonymousSet(let els) = m.operand {
                m.operand = .anonymousSet(ElementOrder.sorted(els, key: KeyType(m.fields.map(\.dataType))))
                return .match(m)
            }
        case .vmap(let fields, .anonymous(let els)):
            return .vmap(fields: fields, map: .anonymous(ElementOrder.sorted(els, key: KeyType(fields.map(\.dataType)))))
        default:
            break
        }
        return s
    }
}
