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
/// - a would-be denial is only logged when every service that decides it is in an `audit` segment;
/// - an inventory can lie (a Docker API, a snapshot file): an address of a container is *enrolled*
///   (counts as that container's) only when it lies in a subnet of the network it is attached on,
///   is not a host address (a network gateway or `Inventory.hostAddresses`), and no other container
///   claims it as well. A refused address is just not the container's: its other addresses stay
///   enrolled; the refused one is classified as if no container held it (host, unclassified on a
///   governed subnet, or world), so a forged claim never carries a service's permissions to it,
///   and an address two containers claim carries neither one's (`rejectedAddresses` says why).
public struct Evaluator: Sendable {
    public let policies: PolicySet
    public let inventory: Inventory

    /// Container name → the services it belongs to, sorted.
    public let membership: [String: [ServiceRef]]
    private let owners: [IPAddress: Container]
    /// Addresses of containers that are not enrolled, sorted by container, then address.
    public let rejectedAddresses: [RejectedAddress]
    private let rejectedByAddress: [IPAddress: [RejectedAddress]]
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
        // A pair, not an interpolated `key=value` string: no string is built per container label.
        struct Label: Hashable { var key: String, value: String }
        var byLabel: [Label: [Service]] = [:]
        for service in policies.services {
            guard let key = service.labels.keys.min() else { continue }
            byLabel[Label(key: key, value: service.labels[key]!), default: []].append(service)
        }
        var membership: [String: [ServiceRef]] = [:]
        membership.reserveCapacity(inventory.containers.count)
        for c in inventory.containers {
            var refs: [ServiceRef] = []
            for (key, value) in c.labels {
                for service in byLabel[Label(key: key, value: value)] ?? [] where service.matches(c) { refs.append(service.ref) }
            }
            membership[c.name] = refs.sorted()
        }
        self.membership = membership
        let enrolment = Enrolment(inventory)
        owners = enrolment.owners
        rejectedAddresses = enrolment.rejected
        rejectedByAddress = Dictionary(grouping: enrolment.rejected, by: \.address)
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

    /// The addresses of `container` that are enrolled (see the type's notes), sorted.
    public func enrolledAddresses(of container: Container) -> [IPAddress] {
        var seen = Set<IPAddress>()  // one address on two attachments is still one address
        return container.addresses.filter { owners[$0]?.name == container.name && seen.insert($0).inserted }
    }

    /// Decides a new connection from `source` to `destination`.
    public func evaluate(from source: Party, to destination: Party, _ traffic: Traffic) -> Decision {
        let a = identify(source), b = identify(destination)
        // Why an address that some container claims is not that container's, when it matters.
        let notes = [source, destination].compactMap { p -> String? in
            guard case .address(let x) = p, let why = rejectedByAddress[x]?.first else { return nil }
            return "\(x) is not enrolled: \(why.reasonText)"
        }
        let note = notes.isEmpty ? "" : " (" + notes.joined(separator: "; ") + ")"
        func decide(_ verdict: Decision.Verdict, _ flow: Flow?, _ reason: String) -> Decision {
            Decision(verdict: verdict, flow: flow, source: a, destination: b, reason: reason + note)
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

/// An address an inventory gives a container that is not enrolled as the container's.
public struct RejectedAddress: Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable {
        /// The address lies in no subnet of the network the container is attached on (or the
        /// inventory does not know that network).
        case outsideSubnets
        /// The address is the host's: a network's gateway or one of `Inventory.hostAddresses`.
        case hostAddress
        /// Other containers claim the same address (names sorted): it is enrolled for none of them.
        case claimedByOthers([String])
    }

    public var container: String
    public var network: String
    public var address: IPAddress
    public var reason: Reason

    public var reasonText: String {
        switch reason {
        case .outsideSubnets: return "container \(container) claims it on network \(network), whose subnets do not hold it"
        case .hostAddress: return "container \(container) claims it on network \(network), but it is the host's (a gateway or host address)"
        case .claimedByOthers(let others):
            return "containers \(([container] + others).sorted().joined(separator: ", ")) all claim it, so it is enrolled for none of them"
        }
    }

    public var description: String { "\(address) of \(container): \(reasonText)" }
}

/// Which container each address is enrolled for; the one implementation of the rule in
/// `Evaluator`'s notes, also used by the incremental planner for a single new container.
public struct Enrolment: Sendable {
    public let owners: [IPAddress: Container]
    public let rejected: [RejectedAddress]

    public init(_ inventory: Inventory) {
        var claims: [IPAddress: [(Container, String)]] = [:]
        var rejected: [RejectedAddress] = []
        let networks = Dictionary(inventory.networks.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let hostAddresses = Self.hostAddresses(of: inventory)
        for c in inventory.containers {
            for (name, attachment) in c.networks.sorted(by: { $0.key < $1.key }) {
                for a in [attachment.ipv4, attachment.ipv6].compactMap({ $0 }) {
                    if let reason = Self.problem(a, network: networks[name], hostAddresses: hostAddresses) {
                        rejected.append(RejectedAddress(container: c.name, network: name, address: a, reason: reason))
                    } else if !(claims[a]?.contains { $0.0.name == c.name } ?? false) {
                        claims[a, default: []].append((c, name))
                    }
                }
            }
        }
        var owners: [IPAddress: Container] = [:]
        for (a, holders) in claims {
            if holders.count == 1 {
                owners[a] = holders[0].0
                continue
            }
            let names = holders.map(\.0.name)
            for (c, network) in holders {
                rejected.append(RejectedAddress(container: c.name, network: network, address: a,
                                                reason: .claimedByOthers(names.filter { $0 != c.name }.sorted())))
            }
        }
        self.owners = owners
        self.rejected = rejected.sorted { ($0.container, $0.address, $0.network) < ($1.container, $1.address, $1.network) }
    }

    /// Addresses that are the host's: every network's gateways and the host's own addresses.
    public static func hostAddresses(of inventory: Inventory) -> Set<IPAddress> {
        Set(inventory.networks.flatMap(\.gateways) + inventory.hostAddresses)
    }

    /// Why `address` cannot be a container's on `network` whoever else claims it, or nil.
    public static func problem(_ address: IPAddress, network: Network?, hostAddresses: Set<IPAddress>) -> RejectedAddress.Reason? {
        if hostAddresses.contains(address) { return .hostAddress }
        guard let network, network.subnets.contains(where: { $0.contains(address) }) else { return .outsideSubnets }
        return nil
    }
}
