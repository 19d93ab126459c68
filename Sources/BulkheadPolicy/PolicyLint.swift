import BulkheadInventory
import BulkheadYAML

/// Warnings about policies that load but probably do not say what their author meant.
public enum PolicyLint {
    public static func run(_ policies: PolicySet) -> [Diagnostic] {
        let flows = policies.flows
        return unusedServices(policies, flows) + ineffectiveFlows(flows) + redundantFlows(flows)
    }

    /// A service in no flow has all its traffic denied: usually a forgotten flow.
    static func unusedServices(_ policies: PolicySet, _ flows: [Flow]) -> [Diagnostic] {
        let used = Set(flows.flatMap { ($0.from + $0.to).compactMap(\.endpoint.serviceRef) })
        return policies.services.filter { !used.contains($0.ref) }.map { s in
            Diagnostic(.warning, .unusedService,
                       "service '\(s.ref)' appears in no flow: all traffic to and from it will be denied",
                       file: s.location.file, at: s.location.mark)
        }
    }

    /// Bulkhead governs only traffic with a managed container on one side; a flow between world,
    /// host and CIDRs alone never matches anything.
    static func ineffectiveFlows(_ flows: [Flow]) -> [Diagnostic] {
        flows.compactMap { f in
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
    static func redundantFlows(_ allFlows: [Flow]) -> [Diagnostic] {
        let flows = allFlows.filter { f in
            f.from.contains { $0.endpoint.serviceRef != nil } || f.to.contains { $0.endpoint.serviceRef != nil }
        }
        // Index flows by the services they name, so each pair only looks at flows that can cover
        // it: with thousands of files, scanning every flow for every pair would be quadratic.
        var byTo: [ServiceRef: [Int]] = [:], byFrom: [ServiceRef: [Int]] = [:]
        for (j, g) in flows.enumerated() {
            for r in Set(g.to.compactMap(\.endpoint.serviceRef)) { byTo[r, default: []].append(j) }
            for r in Set(g.from.compactMap(\.endpoint.serviceRef)) { byFrom[r, default: []].append(j) }
        }
        func candidates(_ a: Endpoint, _ b: Endpoint) -> [Int]? {
            if let r = b.serviceRef { return byTo[r] ?? [] }
            if let r = a.serviceRef { return byFrom[r] ?? [] }
            return nil  // neither side is a service: the pair allows nothing, so it needs no cover
        }
        let portSets = flows.map(\.portSet)
        var redundant = Set<Int>()
        var diagnostics: [Diagnostic] = []
        for i in flows.indices.reversed() {
            let f = flows[i]
            var coveringLines = Set<Flow>()
            var covered = true
            pairs: for a in f.from {
                for b in f.to {
                    guard let candidates = candidates(a.endpoint, b.endpoint) else { continue }
                    var union = PortSet.empty
                    for j in candidates where j != i && !redundant.contains(j) {
                        let g = flows[j]
                        guard g.allows(from: a.endpoint, to: b.endpoint) else { continue }
                        union = union.union(portSets[j])
                        coveringLines.insert(g)
                    }
                    if !portSets[i].isSubset(of: union) {
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
