import BulkheadInventory
import BulkheadYAML

/// Warnings about policies that load but probably do not say what their author meant.
public enum PolicyLint {
    public static func run(_ policies: PolicySet) -> [Diagnostic] {
        unusedServices(policies) + ineffectiveFlows(policies) + redundantFlows(policies)
    }

    /// A service in no flow has all its traffic denied: usually a forgotten flow.
    static func unusedServices(_ policies: PolicySet) -> [Diagnostic] {
        let used = Set(policies.flows.flatMap { ($0.from + $0.to).compactMap(\.endpoint.serviceRef) })
        return policies.services.filter { !used.contains($0.ref) }.map { s in
            Diagnostic(.warning, .unusedService,
                       "service '\(s.ref)' appears in no flow: all traffic to and from it will be denied",
                       file: s.location.file, at: s.location.mark)
        }
    }

    /// Bulkhead governs only traffic with a managed container on one side; a flow between world,
    /// host and CIDRs alone never matches anything.
    static func ineffectiveFlows(_ policies: PolicySet) -> [Diagnostic] {
        policies.flows.compactMap { f in
            let pairs = f.from.flatMap { a in f.to.map { (a.endpoint, $0.endpoint) } }
            guard !pairs.isEmpty, pairs.allSatisfy({ $0.0.serviceRef == nil && $0.1.serviceRef == nil }) else { return nil }
            return Diagnostic(.warning, .ineffectiveFlow,
                              "flow \(f.summary) never applies: neither side is a service, and Bulkhead only governs traffic to or from managed containers",
                              file: f.location.file, at: f.location.mark)
        }
    }

    /// A flow is redundant when, for every (from, to) pair it names, the ports it allows are already
    /// allowed by other flows covering that pair. Flows are examined from last to first and a flow
    /// found redundant no longer counts as cover, so of two identical flows the later one is
    /// reported, and a flow is never reported redundant because of one that is itself reported.
    /// Cover by several CIDRs whose union contains a CIDR is not detected.
    static func redundantFlows(_ policies: PolicySet) -> [Diagnostic] {
        let flows = policies.flows.filter { f in
            f.from.contains { $0.endpoint.serviceRef != nil } || f.to.contains { $0.endpoint.serviceRef != nil }
        }
        var redundant = Set<Int>()
        var diagnostics: [Diagnostic] = []
        for i in flows.indices.reversed() {
            let f = flows[i]
            var coveringLines = Set<Flow>()
            var covered = true
            pairs: for a in f.from {
                for b in f.to {
                    var union = PortSet.empty
                    for (j, g) in flows.enumerated() where j != i && !redundant.contains(j) && g.allows(from: a.endpoint, to: b.endpoint) {
                        union = union.union(g.portSet)
                        coveringLines.insert(g)
                    }
                    if !f.portSet.isSubset(of: union) {
                        covered = false
                        break pairs
                    }
                }
            }
            guard covered else { continue }
            redundant.insert(i)
            let names = coveringLines.sorted { $0.location.line < $1.location.line }
                .map { $0.location.file == f.location.file ? "line \($0.location.line)" : $0.reference }
            diagnostics.append(Diagnostic(.warning, .redundantFlow,
                "flow \(f.summary) is redundant: everything it allows is already allowed by the flow at \(names.joined(separator: " and "))",
                file: f.location.file, at: f.location.mark))
        }
        return diagnostics
    }
}
