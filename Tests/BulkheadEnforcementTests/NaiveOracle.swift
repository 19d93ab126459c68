import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Testing

/// A second, deliberately naive reading of the policy semantics (README "Policy format"), written
/// without the product's classification: no `Evaluator`, `Enrolment`, `Service.matches`,
/// `Endpoint.isCovered`, `Flow.portSet` or anything of the compiler. It reads the parsed model
/// (segments, selectors, flow endpoints, port specs) and the inventory, and compares labels,
/// networks and addresses literally, by brute force.
///
/// The compiler builds its sets from `Evaluator.membership` and the traffic tests used to judge the
/// probes by that same evaluator, so a bug in selector matching changed both sides at once and no
/// probe disagreed. Judged by this oracle too (and by the hand-written tables below for the example
/// policies), such a bug shows up as probes answered that should have been dropped.
struct NaiveOracle {
    /// Container name → "segment/service" of every service whose selector it matches.
    let membership: [String: Set<String>]
    private let policies: PolicySet
    private let inventory: Inventory
    private let auditSegments: Set<String>
    private let governedNetworks: Set<String>

    init(policies: PolicySet, inventory: Inventory) {
        self.policies = policies
        self.inventory = inventory
        var membership: [String: Set<String>] = [:]
        for container in inventory.containers {
            var services: Set<String> = []
            for segment in policies.segments {
                for service in segment.services {
                    var every = !service.labels.isEmpty
                    for (key, value) in service.labels where container.labels[key] != value { every = false }
                    var onNetwork = service.networks.isEmpty
                    for network in service.networks where container.networks.keys.contains(network) { onNetwork = true }
                    if every && onNetwork { services.insert("\(segment.name)/\(service.ref.name)") }
                }
            }
            membership[container.name] = services
        }
        self.membership = membership
        auditSegments = Set(policies.segments.filter { $0.mode == .audit }.map(\.name))
        governedNetworks = Set(policies.segments.flatMap { $0.networks.map(\.name) })
    }

    /// Who a party is: the host, a container (with its services; none = isolated), a governed
    /// address no container holds (isolated), or the world.
    enum Who: Equatable {
        case host
        case container(String, Set<String>)
        case isolated
        case world(IPAddress)

        var governed: Bool {
            switch self {
            case .container, .isolated: return true
            case .host, .world: return false
            }
        }
    }

    private func who(_ address: IPAddress?) -> Who {
        guard let address else { return .host }
        for network in inventory.networks where network.gateways.contains(address) { return .host }
        if inventory.hostAddresses.contains(address) { return .host }
        // The containers that claim the address on a network whose subnets hold it; one claim counts.
        var holders: [String] = []
        for container in inventory.containers {
            for (name, attachment) in container.networks where attachment.ipv4 == address || attachment.ipv6 == address {
                let subnets = inventory.networks.first { $0.name == name }?.subnets ?? []
                if subnets.contains(where: { $0.contains(address) }) && !holders.contains(container.name) { holders.append(container.name) }
            }
        }
        let governed = inventory.networks.contains { governedNetworks.contains($0.name) && $0.subnets.contains { $0.contains(address) } }
        if holders.count == 1 {
            let services = membership[holders[0]] ?? []
            if !services.isEmpty { return .container(holders[0], services) }
            return governed ? .isolated : .world(address)
        }
        return governed ? .isolated : .world(address)
    }

    private func carries(_ ports: [PortSpec], _ traffic: Traffic) -> Bool {
        for spec in ports {
            switch (spec, traffic) {
            case (.any, _): return true
            case (.tcp(let r), .tcp(let p)) where r.lowerBound <= p && p <= r.upperBound: return true
            case (.udp(let r), .udp(let p)) where r.lowerBound <= p && p <= r.upperBound: return true
            case (.icmp, .icmp): return true
            default: continue
            }
        }
        return false
    }

    /// Whether a flow endpoint names the party.
    private func names(_ endpoint: Endpoint, _ party: Who) -> Bool {
        switch (endpoint, party) {
        case (.service(let ref), .container(_, let services)): return services.contains("\(ref.segment)/\(ref.name)")
        case (.host, .host): return true
        case (.world, .world): return true
        case (.cidr(let n), .world(let a)): return n.contains(a)
        default: return false
        }
    }

    /// Whether A → B passes, and why. `from` nil is the host's own stack.
    func passes(from: IPAddress?, to: IPAddress, _ traffic: Traffic) -> (passes: Bool, why: String) {
        let a = who(from), b = who(to)
        if a == .isolated || b == .isolated { return (false, "naive: an isolated address") }
        if !a.governed && !b.governed { return (true, "naive: neither side governed") }
        for segment in policies.segments {
            for flow in segment.flows where carries(flow.ports, traffic) {
                if flow.from.contains(where: { names($0.endpoint, a) }) && flow.to.contains(where: { names($0.endpoint, b) }) {
                    return (true, "naive: \(flow.location.file):\(flow.location.line)")
                }
            }
        }
        // Denied; audited (passes) when every service that decides is in an audit segment: the
        // destination's when it is a container, else the source's.
        var deciding: Set<String> = []
        if case .container(_, let s) = b { deciding = s } else if case .container(_, let s) = a { deciding = s }
        let audited = !deciding.isEmpty && deciding.allSatisfy { auditSegments.contains(String($0.split(separator: "/")[0])) }
        return (audited, audited ? "naive: audited" : "naive: no flow")
    }

    /// A link-local probe passes only on a network no segment lists.
    func passes(linkLocalOn network: String) -> Bool { !governedNetworks.contains(network) }
}

extension Enforced {
    var naive: NaiveOracle { NaiveOracle(policies: policies, inventory: inventory) }
}

/// Every row judged by the naive oracle too: the evaluator must agree with it, and so must the
/// traffic (answered when it says pass, dropped when it says deny). Returns how many rows it judged.
@discardableResult
func expectNaiveAgrees(_ rows: [TruthTableRow], lab: Lab, naive: NaiveOracle, sourceLocation: SourceLocation = #_sourceLocation) -> Int {
    var disagreements: [String] = []
    for row in rows {
        let probe = row.result.probe
        let verdict: (passes: Bool, why: String)
        if let network = lab.network(ofLinkLocal: probe) {
            let p = naive.passes(linkLocalOn: network)
            verdict = (p, "naive: link-local on \(network)")
        } else {
            verdict = naive.passes(from: probe.from == .host ? nil : row.source, to: probe.to, probe.traffic)
        }
        let observed = verdict.passes ? row.passed : row.dropped
        if verdict.passes != row.expectedToPass || !observed {
            disagreements.append("\(row.result) — naive oracle: \(verdict.passes ? "answered" : "dropped") (\(verdict.why)); evaluator: \(row.expectedToPass ? "answered" : "dropped") (\(row.reason ?? ""))")
        }
    }
    #expect(!rows.isEmpty, "the naive oracle judged no probe", sourceLocation: sourceLocation)
    #expect(disagreements.isEmpty, "\(disagreements.count) of \(rows.count) probes disagree with the naive oracle:\n\(disagreements.prefix(30).joined(separator: "\n"))", sourceLocation: sourceLocation)
    return rows.count
}
