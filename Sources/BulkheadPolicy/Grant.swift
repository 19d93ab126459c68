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

    /// `grants.sorted()`, with each endpoint's text (what `Endpoint` orders by) made once per
    /// grant instead of once per comparison: at 30,000 grants the plain sort was a fifth of `plan`.
    public static func sorted<S: Sequence>(_ grants: S) -> [Grant] where S.Element == Grant {
        var texts: [Endpoint: String] = [:]
        func text(_ e: Endpoint) -> String {
            if let t = texts[e] { return t }
            let t = e.description
            texts[e] = t
            return t
        }
        return grants.map { (to: text($0.to), from: text($0.from), grant: $0) }
            .sorted { a, b in
                if a.to != b.to { return a.to < b.to }
                if a.from != b.from { return a.from < b.from }
                return a.grant.port < b.grant.port
            }
            .map(\.grant)
    }
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
        return Grant.sorted(out)
    }
}
