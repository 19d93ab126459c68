import BulkheadInventory
import BulkheadPolicy

extension ProbeRunner {
    /// Probes every party against every address of every other party for each kind of traffic, and
    /// compares what got through with the policy evaluator: the truth table of `bulkhead verify`
    /// and of the enforcement tests. A row matches when a probe was answered exactly when the
    /// evaluator says the connection passes (allowed, audited, or not governed).
    ///
    /// With `linkLocal`, the matrix also holds probes between the link-local addresses of every
    /// pair of parties on each network (TCP, UDP, ICMP). On a governed network they must be
    /// dropped: link-local addresses carry only neighbour discovery and MLD there (port binding).
    /// Elsewhere they are not Bulkhead's and must pass.
    public func verify(_ evaluator: Evaluator, traffic: [Traffic], parties: [Party]? = nil, linkLocal: Bool = false) throws -> [TruthTableRow] {
        var probes = lab.probeMatrix(traffic: traffic, parties: parties)
        if linkLocal {
            let linkTraffic = Array(Set(traffic.filter { if case .other = $0 { return false } else { return true } })
                                    .union([.icmp])).sorted { "\($0)" < "\($1)" }
            probes += lab.linkLocalProbeMatrix(traffic: linkTraffic).filter { p in
                parties.map { $0.contains(p.from) } ?? true
            }
        }
        let inventory = lab.inventory
        return try truthTable(probes) { probe, source in
            if let network = lab.network(ofLinkLocal: probe) {
                let subnets = inventory.network(named: network)?.subnets ?? []
                let governed = subnets.contains { evaluator.governedSubnets.contains($0) }
                return governed ? (false, "link-local on governed network \(network): only ND and MLD")
                                : (true, "link-local on ungoverned network \(network)")
            }
            let from: Evaluator.Party
            if case .host = probe.from {
                from = .host
            } else if let source {
                from = .address(source)
            } else {
                return (false, "no source address")
            }
            let decision = evaluator.evaluate(from: from, to: .address(probe.to), probe.traffic)
            return (decision.passes, "\(decision.verdict.rawValue): \(decision.reason)")
        }
    }
}

/// The traffic a policy set names, plus a port nobody allows, for probe matrices.
public func probeTraffic(for policies: PolicySet, extra: [Traffic] = [.tcp(22)]) -> [Traffic] {
    var out = Set(extra)
    for flow in policies.flows {
        for p in flow.ports {
            switch p {
            case .tcp(let r): out.insert(.tcp(r.lowerBound))
            case .udp(let r): out.insert(.udp(r.lowerBound))
            case .icmp: out.insert(.icmp)
            case .any: out.insert(.tcp(7)); out.insert(.udp(7)); out.insert(.icmp)
            }
        }
    }
    return out.sorted { $0.description < $1.description }
}
