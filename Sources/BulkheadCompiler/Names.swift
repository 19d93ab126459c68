import BulkheadPolicy
import BulkheadRuleset

/// Names of everything Bulkhead puts in its table, in one place, so the compiler, the diff,
/// metrics and humans reading `nft list table inet bulkhead` agree.
///
/// Every name is bounded for any input (`KernelLimits.objectName`, 255 bytes): the readable form
/// when it fits, else its first bytes, `.` and 16 hex digits of the SHA-256 of the whole readable
/// form. Readable forms are built from DNS labels (no `.`), so a shortened name never equals a
/// readable one, and two long ones differ unless their digests collide. Only names of several
/// services can be long (one segment and one service name are 63 bytes each at most), and
/// nothing parses those back: the decompiler reads single-service chains, which always fit.
public enum Names {
    public static let table = "bulkhead"

    public enum Family: String, CaseIterable, Sendable {
        case v4, v6
    }

    /// Interval set of the subnets of governed networks.
    public static func governed(_ f: Family) -> String { "governed_\(f.rawValue)" }
    /// Addresses of every managed container.
    public static func managed(_ f: Family) -> String { "managed_\(f.rawValue)" }
    /// Addresses of the containers of one service.
    public static func service(_ segment: String, _ name: String, _ f: Family) -> String { bounded("svc_\(segment)_\(name)_\(f.rawValue)") }

    /// Addresses of several services that a flow names together as its sources: one rule then
    /// covers them all (the kernel's cost grows with rules, not with set elements).
    public static func sourceGroup(_ group: Identity, _ f: Family) -> String { "from_\(group.chainSuffix)_\(f.rawValue)" }

    /// Longest set name the kernel takes; longer groups fall back to a rule per service (so a
    /// group's name is always readable, and `parseSourceGroup` can read it back).
    public static let maximumNameLength = KernelLimits.kernel.objectName

    /// The service and family of a `svc_<segment>_<name>_<family>` set; nil for any other name.
    /// Segment and service names are DNS labels (no `_`), so the split is exact.
    public static func parseService(_ setName: String) -> (service: ServiceRef, family: Family)? {
        let parts = setName.split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "svc", let f = Family(rawValue: String(parts[3])), !parts[1].isEmpty, !parts[2].isEmpty else { return nil }
        return (ServiceRef(segment: String(parts[1]), name: String(parts[2])), f)
    }

    /// The members of a `from_<seg>_<svc>__<seg>_<svc>…_<family>` source-group set; nil for any
    /// other name (`from_host_v4`, a map, is not a group: `host` is no `<seg>_<svc>`).
    public static func parseSourceGroup(_ setName: String) -> (stem: String, members: [ServiceRef], family: Family)? {
        guard setName.hasPrefix("from_"), let f = Family.allCases.first(where: { setName.hasSuffix("_" + $0.rawValue) }) else { return nil }
        let stem = String(setName.dropFirst("from_".count).dropLast(f.rawValue.count + 1))
        var members: [ServiceRef] = []
        for member in stem.components(separatedBy: "__") {
            let parts = member.split(separator: "_", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
            members.append(ServiceRef(segment: String(parts[0]), name: String(parts[1])))
        }
        return members.count >= 2 ? (stem, members, f) : nil
    }

    /// Verdict maps: managed address → jump to its identity's chain of that kind.
    public static func ingressMap(_ f: Family) -> String { "ingress_\(f.rawValue)" }
    public static func egressMap(_ f: Family) -> String { "egress_\(f.rawValue)" }
    public static func fromHostMap(_ f: Family) -> String { "from_host_\(f.rawValue)" }
    public static func toHostMap(_ f: Family) -> String { "to_host_\(f.rawValue)" }

    /// New connections to the identity from containers and the world (forward hook).
    public static func ingressChain(_ id: Identity) -> String { bounded("in_" + id.chainSuffix) }
    /// New connections from the identity to ungoverned addresses (forward hook).
    public static func egressChain(_ id: Identity) -> String { bounded("out_" + id.chainSuffix) }
    /// New connections from the host to the identity (output hook).
    public static func fromHostChain(_ id: Identity) -> String { bounded("from_host_" + id.chainSuffix) }
    /// New connections from the identity to the host (input hook).
    public static func toHostChain(_ id: Identity) -> String { bounded("to_host_" + id.chainSuffix) }
    /// Where an audit identity's egress and host traffic goes when no flow allows any: one chain
    /// per set of segments (sorted, distinct).
    public static func auditChain(segments: [String]) -> String { bounded("audit_" + segments.joined(separator: "_")) }
    /// Where every map sends the addresses of an identity whose chains could not be built: drop.
    public static let quarantine = "quarantine"

    /// `readable` when it fits the kernel's limit, else a prefix of it and a digest of all of it.
    public static func bounded(_ readable: String) -> String {
        BoundedText.fitting(readable, limit: KernelLimits.kernel.objectName, separator: ".")
    }

    public static let forward = "forward"
    public static let input = "input"
    public static let output = "output"
}
