/// One thing a policy allows: new connections from `from` to `to` on `port`, by the flow at `reference`.
///
/// Grants are the unit `plan` reports in ("newly allowed", "newly denied"): the semantics of a
/// flow list, one (endpoint pair, port entry) at a time. The compiler's `Decompiler` reads the
/// same grants back out of a ruleset, so a plan can compare the policies against the kernel.
public struct Grant: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var from: Endpoint
    public var to: Endpoint
    public var port: PortSpec
    /// `file:line` of the flow; not part of equality, so moving a flow is not a change.
    public var reference: String

    public init(from: Endpoint, to: Endpoint, port: PortSpec, reference: String) {
        self.from = from
        self.to = to
        self.port = port
        self.reference = reference
    }

    /// What the grant allows, without where it was written.
    public struct Key: Sendable, Hashable, Comparable {
        public var from: Endpoint
        public var to: Endpoint
        public var port: PortSpec

        public static func < (a: Key, b: Key) -> Bool { (a.to, a.from, a.port) < (b.to, b.from, b.port) }
    }

    public var key: Key { Key(from: from, to: to, port: port) }

    public var description: String { "\(from) -> \(to) \(port)" }

    public static func == (a: Grant, b: Grant) -> Bool { a.key == b.key }
    public func hash(into h: inout Hasher) { h.combine(key) }
    public static func < (a: Grant, b: Grant) -> Bool { a.key < b.key }
}

extension PolicySet {
    /// Every grant of every flow: each (from, to) pair with a service on at least one side (the
    /// others are not Bulkhead's to govern), each port entry (overlapping entries merged). Sorted, one per key (first flow wins).
    public var grants: [Grant] {
        var seen = Set<Grant.Key>()
        var out: [Grant] = []
        for flow in flows {
            for a in flow.from {
                for b in flow.to where a.endpoint.serviceRef != nil || b.endpoint.serviceRef != nil {
                    for port in flow.portSet.specs {
                        let g = Grant(from: a.endpoint, to: b.endpoint, port: port, reference: flow.reference)
                        if seen.insert(g.key).inserted { out.append(g) }
                    }
                }
            }
        }
        return out.sorted()
    }
}
