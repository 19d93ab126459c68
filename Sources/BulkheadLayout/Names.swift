import BulkheadPolicy
import BulkheadRuleset

/// The layout of Bulkhead's two tables, both ways: every table, set, map and chain name is built
/// here from a typed value (`.name`) and read back into one (`init?(parsing:)`), so the compiler,
/// the decompiler, the incremental planner and the agent's metrics cannot disagree on a spelling.
///
/// Every name is bounded for any input (`KernelLimits.objectName`, 255 bytes): the readable form
/// when it fits, else its first bytes, `.` and 16 hex digits of the SHA-256 of the whole readable
/// form (`BoundedText.fitting`). Readable forms are built from DNS labels (no `.`), so a shortened
/// name never equals a readable one. A shortened name cannot be read back into whose it is: it
/// parses as `.shortened`. Only names of several services can be that long; the decompiler reads
/// single-service chains, which always fit.
public enum TableLayout {
    /// The name of both tables.
    public static let tableName = "bulkhead"
    /// `inet bulkhead`: identities, flows, fail-closed drops.
    public static let inet = TableID(family: .inet, name: tableName)
    /// `bridge bulkhead`: port binding (see `PortBinding` in the compiler).
    public static let bridge = TableID(family: .bridge, name: tableName)

    /// `readable` when it fits the kernel's limit, else a prefix of it and a digest of all of it.
    public static func bounded(_ readable: String) -> String {
        BoundedText.fitting(readable, limit: KernelLimits.kernel.objectName, separator: ".")
    }

    /// True for the output of `bounded` on a text that did not fit: exactly the limit long, ending
    /// in `.` and 16 hex digits.
    static func isShortened(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard bytes.count == KernelLimits.kernel.objectName else { return false }
        let tail = bytes.suffix(17)
        return tail.first == UInt8(ascii: ".") && tail.dropFirst().allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}

/// An address family: every address structure has a v4 and a v6 twin.
public enum AddressFamily: String, CaseIterable, Sendable, Hashable {
    case v4, v6
}

/// A transport protocol whose destination ports a flow names.
public enum TransportProtocol: String, CaseIterable, Sendable, Hashable {
    case tcp, udp
}

/// The four kinds of identity chain, and the dispatch map that leads to each.
public enum IdentityChainKind: CaseIterable, Sendable, Hashable {
    /// New connections to the identity from containers and the world (forward hook): `in_<identity>`.
    case ingress
    /// New connections from the identity to ungoverned addresses (forward hook): `out_<identity>`.
    case egress
    /// New connections from the host to the identity (output hook): `from_host_<identity>`.
    case fromHost
    /// New connections from the identity to the host (input hook): `to_host_<identity>`.
    case toHost

    var chainPrefix: String {
        switch self {
        case .ingress: return "in_"
        case .egress: return "out_"
        case .fromHost: return "from_host_"
        case .toHost: return "to_host_"
        }
    }

    var mapStem: String {
        switch self {
        case .ingress: return "ingress"
        case .egress: return "egress"
        case .fromHost: return "from_host"
        case .toHost: return "to_host"
        }
    }
}

/// A set or map of either table.
public enum SetName: Hashable, Sendable, CustomStringConvertible {
    /// `governed_v4`: interval set of the subnets of governed networks.
    case governed(AddressFamily)
    /// `managed_v4`: addresses of every managed container.
    case managed(AddressFamily)
    /// `svc_<segment>_<name>_v4`: addresses of the containers of one service.
    case service(ServiceRef, AddressFamily)
    /// `from_<seg>_<svc>__<seg>_<svc>…_v4`: addresses of several services that a flow names
    /// together as its sources (one rule then covers them all). The compiler uses a group only when
    /// its readable name fits (`fitsUnshortened`), so a group's name always reads back.
    case sourceGroup(Identity, AddressFamily)
    /// `identity_v4`: data map, managed address → its identity's number (a `classid`, which the
    /// dispatch rule writes to `meta priority`). Churn changes only these elements: no verdicts,
    /// so the kernel does not re-validate the table when a container comes (see the compiler).
    case identityNumbers(AddressFamily)
    /// `dispatch_ingress`, `dispatch_egress`, `dispatch_from_host`, `dispatch_to_host`: verdict
    /// maps, identity number → jump to the identity's chain of that kind. One element per identity,
    /// for both families: they change only when an identity's chains do.
    case dispatch(IdentityChainKind)
    /// `tcp_80_443_8000-8099`: the destination ports of flow rules that name several ports or
    /// ranges of one protocol (sorted, disjoint, not adjacent), one set for every rule with the
    /// same list. Its name follows from its elements, so a set never changes while it exists.
    case destinationPorts(TransportProtocol, [ClosedRange<UInt16>])
    /// Port binding (`bridge bulkhead`): `ports`, `bind_ether`, `bind_v4`, `bind_v6`, `bind_arp`.
    case ports, bindEther, bindV4, bindV6, bindARP
    /// A name too long for the kernel, shortened with a digest: not readable back.
    case shortened(String)

    /// The readable form, before bounding.
    var readable: String {
        switch self {
        case .governed(let f): return "governed_\(f.rawValue)"
        case .managed(let f): return "managed_\(f.rawValue)"
        case .service(let r, let f): return "svc_\(r.segment)_\(r.name)_\(f.rawValue)"
        case .sourceGroup(let g, let f): return "from_\(g.chainSuffix)_\(f.rawValue)"
        case .identityNumbers(let f): return "identity_\(f.rawValue)"
        case .dispatch(let k): return "dispatch_\(k.mapStem)"
        case .destinationPorts(let p, let ranges):
            return p.rawValue + ranges.map { r in r.lowerBound == r.upperBound ? "_\(r.lowerBound)" : "_\(r.lowerBound)-\(r.upperBound)" }.joined()
        case .ports: return "ports"
        case .bindEther: return "bind_ether"
        case .bindV4: return "bind_v4"
        case .bindV6: return "bind_v6"
        case .bindARP: return "bind_arp"
        case .shortened(let name): return name
        }
    }

    /// The name in the kernel.
    public var name: String { TableLayout.bounded(readable) }
    public var description: String { name }

    /// True when the readable name fits the kernel's limit (it is not shortened).
    public var fitsUnshortened: Bool { readable.utf8.count <= KernelLimits.kernel.objectName }

    /// The address family of the set, for the inet table's sets.
    public var family: AddressFamily? {
        switch self {
        case .governed(let f), .managed(let f), .service(_, let f), .sourceGroup(_, let f), .identityNumbers(let f): return f
        default: return nil
        }
    }

    /// The value whose `name` is `text`; nil for a name that is not ours.
    public init?(parsing text: String) {
        guard let candidate = Self.candidate(text), candidate.name == text else { return nil }
        self = candidate
    }

    private static func candidate(_ text: String) -> SetName? {
        if TableLayout.isShortened(text) { return .shortened(text) }
        switch text {
        case "ports": return .ports
        case "bind_ether": return .bindEther
        case "bind_v4": return .bindV4
        case "bind_v6": return .bindV6
        case "bind_arp": return .bindARP
        default: break
        }
        if text.hasPrefix("dispatch_"), let kind = IdentityChainKind.allCases.first(where: { text.dropFirst(9) == $0.mapStem }) {
            return .dispatch(kind)
        }
        if let p = TransportProtocol.allCases.first(where: { text.hasPrefix($0.rawValue + "_") }) {
            var ranges: [ClosedRange<UInt16>] = []
            for part in text.dropFirst(p.rawValue.count + 1).split(separator: "_", omittingEmptySubsequences: false) {
                let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
                guard (1...2).contains(bounds.count), let lo = UInt16(bounds[0]), let hi = UInt16(bounds[bounds.count - 1]), lo <= hi,
                      ranges.last.map({ Int($0.upperBound) + 1 < Int(lo) }) ?? true
                else { return nil }
                ranges.append(lo...hi)
            }
            return .destinationPorts(p, ranges)  // `init(parsing:)` keeps it only when spelled as we spell it
        }
        guard let f = AddressFamily.allCases.first(where: { text.hasSuffix("_" + $0.rawValue) }) else { return nil }
        let stem = text.dropLast(f.rawValue.count + 1)
        switch stem {
        case "governed": return .governed(f)
        case "managed": return .managed(f)
        case "identity": return .identityNumbers(f)
        default: break
        }
        if stem.hasPrefix("svc_") {
            let parts = stem.dropFirst(4).split(separator: "_", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
            return .service(ServiceRef(segment: String(parts[0]), name: String(parts[1])), f)
        }
        // `from_host_v4` (a map) is no group: `host` is no `<seg>_<svc>`, and a group has two members.
        if stem.hasPrefix("from_"), let group = Identity(chainSuffix: stem.dropFirst(5)), group.services.count >= 2 {
            return .sourceGroup(group, f)
        }
        return nil
    }
}

/// A chain of either table.
public enum ChainName: Hashable, Sendable, CustomStringConvertible {
    /// Base chains: `forward`, `input`, `output` of `inet bulkhead`; `prerouting` and `output` of
    /// `bridge bulkhead` (the same `output` name, in the other table).
    case forward, input, output, prerouting
    /// An identity's chain of one kind: `in_shop_api`, `out_shop_api__shop_extra`, …
    case identity(IdentityChainKind, Identity)
    /// `audit_<segment>_<segment>…`: where an audit identity's egress and host traffic goes when no
    /// flow allows any, one chain per set of segments (sorted, distinct).
    case audit(segments: [String])
    /// Where every map sends the addresses of an identity whose chains could not be built: drop.
    case quarantine
    /// A name too long for the kernel, shortened with a digest: not readable back.
    case shortened(String)

    var readable: String {
        switch self {
        case .forward: return "forward"
        case .input: return "input"
        case .output: return "output"
        case .prerouting: return "prerouting"
        case .identity(let kind, let id): return kind.chainPrefix + id.chainSuffix
        case .audit(let segments): return "audit_" + segments.joined(separator: "_")
        case .quarantine: return "quarantine"
        case .shortened(let name): return name
        }
    }

    /// The name in the kernel.
    public var name: String { TableLayout.bounded(readable) }
    public var description: String { name }

    /// The value whose `name` is `text`; nil for a name that is not ours.
    public init?(parsing text: String) {
        guard let candidate = Self.candidate(text), candidate.name == text else { return nil }
        self = candidate
    }

    private static func candidate(_ text: String) -> ChainName? {
        if TableLayout.isShortened(text) { return .shortened(text) }
        switch text {
        case "forward": return .forward
        case "input": return .input
        case "output": return .output
        case "prerouting": return .prerouting
        case "quarantine": return .quarantine
        default: break
        }
        if text.hasPrefix("audit_") {
            let segments = text.dropFirst(6).split(separator: "_", omittingEmptySubsequences: false).map(String.init)
            return segments.contains(where: \.isEmpty) ? nil : .audit(segments: segments)
        }
        // `from_host_` before any shorter prefix; the four prefixes are otherwise distinct.
        for kind in [IdentityChainKind.fromHost, .toHost, .ingress, .egress] where text.hasPrefix(kind.chainPrefix) {
            return Identity(chainSuffix: text.dropFirst(kind.chainPrefix.count)).map { .identity(kind, $0) }
        }
        return nil
    }
}
