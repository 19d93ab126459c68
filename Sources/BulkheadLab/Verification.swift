import BulkheadInventory
import BulkheadPolicy

extension ProbeRunner {
    /// Probes every party against every address of every other party for each kind of traffic, and
    /// compares what got through with the policy evaluator: the truth table of `bulkhead verify`
    /// and of the enforcement tests. A row matches when a probe was answered exactly when the
    /// evaluator says the connection passes (allowed, audited, or not governed).
    public func verify(_ evaluator: Evaluator, traffic: [Traffic], parties: [Party]? = nil) throws -> [TruthTableRow] {
        let probes = lab.probeMatrix(traffic: traffic, parties: parties)
        return try truthTable(probes) { probe, source in
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
