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

    /// Longest set name the kernel takes is 255 bytes; longer groups fall back to a rule per service.
    public static let maximumNameLength = 255

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
