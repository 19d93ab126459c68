import BulkheadInventory

/// The one answer to "is A → B on this port allowed, and by which policy line?".
///
/// `validate`, `plan`, `explain`, the agent and the probe tests all ask this type, and the compiler
/// builds its ruleset from the same classification (`identify`), so they cannot disagree.
///
/// Semantics (policy format v1):
/// - a container is *managed* when some service's labels match it; it belongs to every such service;
/// - an address is *governed* when it belongs to a managed container or lies in a subnet of a network
///   some segment lists; the host's own addresses (network gateways and `Inventory.hostAddresses`)
///   are `host`; everything else is `world`;
/// - A → B is allowed when B is governed and a flow has one of B's services in `to` and A in `from`;
///   or B is not governed, A is, and a flow has one of A's services in `from` and B in `to`;
///   traffic with neither side governed is not Bulkhead's;
/// - a governed address of no managed container is denied both ways;
/// - a would-be denial is only logged when every service that decides it is in an `audit` segment.
public struct Evaluator: Sendable {
    public let policies: PolicySet
    public let inventory: Inventory

    /// Container name → the services it belongs to, sorted.
    public let membership: [String: [ServiceRef]]
    private let owners: [IPAddress: Container]
    private let hostAddresses: Set<IPAddress>
    /// Subnets of the networks some segment governs (those the inventory knows).
    public let governedSubnets: [IPNetwork]
    private let flows: [Flow]
    private let modes: [String: Segment.Mode]

    public init(policies: PolicySet, inventory: Inventory) {
        self.policies = policies
        self.inventory = inventory
        // Index services by one of their labels, so classifying 10,000 containers against 1,000
        // services looks at a handful of candidates each instead of every service.
        var byLabel: [String: [Service]] = [:]
        for service in policies.services {
            guard let key = service.labels.keys.min() else { continue }
            byLabel["\(key)=\(service.labels[key]!)", default: []].append(service)
        }
        var membership: [String: [ServiceRef]] = [:]
        var owners: [IPAddress: Container] = [:]
        for c in inventory.containers {
            var refs: [ServiceRef] = []
            for (key, value) in c.labels {
                for service in byLabel["\(key)=\(value)"] ?? [] where service.matches(c) { refs.append(service.ref) }
            }
            membership[c.name] = refs.sorted()
            for a in c.addresses { owners[a] = c }
        }
        self.membership = membership
        self.owners = owners
        let governed = policies.governedNetworks
        governedSubnets = inventory.networks.filter { governed.contains($0.name) }.flatMap(\.subnets).sorted()
        hostAddresses = Set(inventory.networks.flatMap(\.gateways) + inventory.hostAddresses)
        flows = policies.flows
        modes = Dictionary(uniqueKeysWithValues: policies.segments.map { ($0.name, $0.mode) })
    }

    /// Who a party is, as far as policy is concerned.
    public enum Identity: Sendable, Hashable, CustomStringConvertible {
        /// A managed container and the services it belongs to.
        case managed(container: String, services: [ServiceRef])
        /// A governed address that belongs to no managed container: denied both ways.
        case unclassified(IPAddress, container: String?)
        case host
        case world(IPAddress)

        public var isGoverned: Bool {
            switch self {
            case .managed, .unclassified: return true
            case .host, .world: return false
            }
        }

        public var description: String {
            switch self {
            case .managed(let c, let s): return "container \(c) (\(s.map(\.description).joined(separator: ", ")))"
            case .unclassified(let a, let c): return c.map { "container \($0) (\(a), matches no service)" } ?? "\(a) (governed subnet, no managed container)"
            case .host: return "the host"
            case .world(let a): return "\(a) (world)"
            }
        }
    }

    /// One side of a connection.
    public enum Party: Sendable, Hashable, CustomStringConvertible {
        case address(IPAddress)
        case host

        public var description: String {
            switch self {
            case .address(let a): return a.description
            case .host: return "host"
            }
        }
    }

    public func identify(_ party: Party) -> Identity {
        guard case .address(let a) = party else { return .host }
        if hostAddresses.contains(a) { return .host }
        if let c = owners[a] {
            let services = membership[c.name] ?? []
            if !services.isEmpty { return .managed(container: c.name, services: services) }
            if governedSubnets.contains(where: { $0.contains(a) }) { return .unclassified(a, container: c.name) }
            return .world(a)
        }
        if governedSubnets.contains(where: { $0.contains(a) }) { return .unclassified(a, container: nil) }
        return .world(a)
    }

    public struct Decision: Sendable, Hashable {
        public enum Verdict: String, Sendable, Hashable, Codable {
            case allowed
            case denied
            /// Denied by policy, but only logged because the deciding segment is in audit mode.
            case audited
            /// Neither side is governed: Bulkhead leaves the traffic alone.
            case ungoverned
        }

        public var verdict: Verdict
        /// The flow that allows it, for `allowed`.
        public var flow: Flow?
        public var source: Identity
        public var destination: Identity
        public var reason: String

        /// True when the packets pass (allowed, audited or not governed).
        public var passes: Bool { verdict != .denied }
    }

    /// Decides a new connection from `source` to `destination`.
    public func evaluate(from source: Party, to destination: Party, _ traffic: Traffic) -> Decision {
        let a = identify(source), b = identify(destination)
        func decide(_ verdict: Decision.Verdict, _ flow: Flow?, _ reason: String) -> Decision {
            Decision(verdict: verdict, flow: flow, source: a, destination: b, reason: reason)
        }
        func denied(_ deciding: [ServiceRef], _ reason: String) -> Decision {
            let audit = !deciding.isEmpty && deciding.allSatisfy { modes[$0.segment] == .audit }
            return decide(audit ? .audited : .denied, nil, audit ? reason + " (audit mode: logged, not dropped)" : reason)
        }
        switch (a, b) {
        case (_, .unclassified):
            return decide(.denied, nil, "\(b) is on a governed network but belongs to no service: it is isolated")
        case (.unclassified, _):
            return decide(.denied, nil, "\(a) is on a governed network but belongs to no service: it is isolated")
        case (_, .managed(_, let targets)):
            let sourceEndpoints = endpoints(of: a, party: source)
            if let f = flows.first(where: { f in
                f.portSet.contains(traffic)
                    && f.to.contains { e in targets.contains { e.endpoint == .service($0) } }
                    && f.from.contains { e in sourceEndpoints.contains { $0.isCovered(by: e.endpoint) } }
            }) {
                return decide(.allowed, f, "allowed by \(f.reference): \(f.summary)")
            }
            return denied(targets, "no flow allows \(describe(sourceEndpoints)) to \(targets.map(\.description).joined(separator: " or ")) on \(traffic)")
        case (.managed(_, let origins), _):
            let targetEndpoints = endpoints(of: b, party: destination)
            if let f = flows.first(where: { f in
                f.portSet.contains(traffic)
                    && f.from.contains { e in origins.contains { e.endpoint == .service($0) } }
                    && f.to.contains { e in targetEndpoints.contains { $0.isCovered(by: e.endpoint) } }
            }) {
                return decide(.allowed, f, "allowed by \(f.reference): \(f.summary)")
            }
            return denied(origins, "no flow allows \(origins.map(\.description).joined(separator: " or ")) to \(describe(targetEndpoints)) on \(traffic)")
        default:
            return decide(.ungoverned, nil, "neither side is governed: Bulkhead leaves this traffic alone")
        }
    }

    /// The endpoints an ungoverned or managed party is named by in a flow.
    private func endpoints(of identity: Identity, party: Party) -> [Endpoint] {
        switch identity {
        case .managed(_, let services): return services.map { .service($0) }
        case .host: return [.host]
        case .world(let a): return [.cidr(IPNetwork(address: a, prefixLength: a.bitWidth))]
        case .unclassified: return []
        }
    }

    private func describe(_ endpoints: [Endpoint]) -> String {
        endpoints.map { e in
            if case .cidr(let n) = e { return "\(n.address) (world)" }
            return e.description
        }.joined(separator: " or ")
    }
}
