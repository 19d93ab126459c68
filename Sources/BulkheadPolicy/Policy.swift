import BulkheadInventory
import BulkheadYAML

/// Every segment read from the policy files, in file order.
public struct PolicySet: Sendable, Hashable {
    public var segments: [Segment]

    public init(segments: [Segment] = []) { self.segments = segments }

    public func segment(named name: String) -> Segment? { segments.first { $0.name == name } }

    public func service(_ ref: ServiceRef) -> Service? {
        segment(named: ref.segment)?.services.first { $0.name == ref.name }
    }

    /// Every service of every segment, sorted by reference.
    public var services: [Service] { segments.flatMap(\.services).sorted { $0.ref < $1.ref } }

    /// Every flow of every segment in file order (file relative to its policy root, then line):
    /// the order of the compiled rules, which must not depend on where the policies were read from.
    public var flows: [Flow] {
        segments.flatMap(\.flows).sorted {
            ($0.policyFile, $0.location.line, $0.location.column, $0.location.file) < ($1.policyFile, $1.location.line, $1.location.column, $1.location.file)
        }
    }

    /// Names of the Docker networks some segment governs.
    public var governedNetworks: Set<String> { Set(segments.flatMap { $0.networks.map(\.name) }) }
}

/// A named group of services and the flows allowed to and from them.
public struct Segment: Sendable, Hashable {
    public enum Mode: String, Sendable, Hashable, Codable, CaseIterable {
        /// Denied traffic is dropped.
        case enforce
        /// Would-be denials are logged (nflog) and counted, and let through.
        case audit
    }

    public struct NetworkName: Sendable, Hashable {
        public var name: String
        public var location: FilePosition

        public init(name: String, location: FilePosition) {
            self.name = name
            self.location = location
        }
    }

    public var name: String
    public var description: String?
    public var mode: Mode
    public var networks: [NetworkName]
    public var services: [Service]
    public var flows: [Flow]
    /// Where the `segment:` value is.
    public var location: FilePosition

    public init(name: String, description: String? = nil, mode: Mode = .enforce, networks: [NetworkName],
                services: [Service], flows: [Flow], location: FilePosition) {
        self.name = name
        self.description = description
        self.mode = mode
        self.networks = networks
        self.services = services
        self.flows = flows
        self.location = location
    }
}

/// `segment/name`: how a service is named across segments.
public struct ServiceRef: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var segment: String
    public var name: String

    public init(segment: String, name: String) {
        self.segment = segment
        self.name = name
    }

    public var description: String { "\(segment)/\(name)" }

    public static func < (a: ServiceRef, b: ServiceRef) -> Bool { (a.segment, a.name) < (b.segment, b.name) }
}

/// A service: the containers whose labels include all of `labels` (and, when `networks` is given,
/// that are attached to one of those networks).
public struct Service: Sendable, Hashable {
    public var ref: ServiceRef
    public var labels: [String: String]
    /// Networks a member must be attached to (any of them); empty: any network. Labels are chosen
    /// by whoever starts a container; networks narrow who can claim the service (see the README's
    /// security model).
    public var networks: [String]
    /// Where the service's key is.
    public var location: FilePosition
    /// Where its `labels:` value is.
    public var selectorLocation: FilePosition

    public init(ref: ServiceRef, labels: [String: String], networks: [String] = [], location: FilePosition, selectorLocation: FilePosition) {
        self.ref = ref
        self.labels = labels
        self.networks = networks
        self.location = location
        self.selectorLocation = selectorLocation
    }

    public var name: String { ref.name }

    /// True when every label of the selector is on the container with the same value, and the
    /// container is on one of `networks` (when given).
    public func matches(_ container: Container) -> Bool {
        !labels.isEmpty && labels.allSatisfy { container.labels[$0.key] == $0.value }
            && (networks.isEmpty || networks.contains { container.networks[$0] != nil })
    }
}

/// One side of a flow.
public enum Endpoint: Sendable, Hashable, Comparable, CustomStringConvertible {
    case service(ServiceRef)
    /// Every address that is neither governed nor the host's own.
    case world
    /// The host's own network stack.
    case host
    /// The ungoverned addresses inside a prefix.
    case cidr(IPNetwork)

    public var description: String {
        switch self {
        case .service(let r): return r.description
        case .world: return "world"
        case .host: return "host"
        case .cidr(let n): return n.description
        }
    }

    public var serviceRef: ServiceRef? {
        if case .service(let r) = self { return r }
        return nil
    }

    /// True when every party this endpoint names is also named by `other`.
    public func isCovered(by other: Endpoint) -> Bool {
        switch (self, other) {
        case let (a, b) where a == b: return true
        case (.cidr, .world): return true
        case (.cidr(let a), .cidr(let b)): return b.contains(a)
        default: return false
        }
    }

    public static func < (a: Endpoint, b: Endpoint) -> Bool { a.description < b.description }
}

/// An endpoint and where it was written.
public struct LocatedEndpoint: Sendable, Hashable {
    public var endpoint: Endpoint
    public var location: FilePosition

    public init(endpoint: Endpoint, location: FilePosition) {
        self.endpoint = endpoint
        self.location = location
    }
}

/// One allowed flow: new connections from any `from` to any `to` on any of `ports`.
public struct Flow: Sendable, Hashable {
    public var segment: String
    /// Position in its segment's `flows` list, from 0.
    public var index: Int
    public var from: [LocatedEndpoint]
    public var to: [LocatedEndpoint]
    public var ports: [PortSpec]
    public var description: String?
    /// Where the flow's list item starts: the "policy line" every verdict and counter names.
    public var location: FilePosition
    /// The flow's file named relative to the policy root it was read under (`shop.yaml` for
    /// `policies/shop.yaml` read from `policies`): what the kernel's rule comments and the flow
    /// metrics carry, so they do not depend on where the policies live. `location.file` (the path
    /// as given) until the loader sets it.
    public var policyFile: String

    public init(segment: String, index: Int, from: [LocatedEndpoint], to: [LocatedEndpoint], ports: [PortSpec],
                description: String? = nil, location: FilePosition) {
        self.segment = segment
        self.index = index
        self.from = from
        self.to = to
        self.ports = ports
        self.description = description
        self.location = location
        self.policyFile = location.file
    }

    /// `policies/shop.yaml:14`: the path as given, for people (`explain`, `plan`, logs).
    public var reference: String { "\(location.file):\(location.line)" }

    public var portSet: PortSet { PortSet(ports) }

    public func allows(from a: Endpoint, to b: Endpoint) -> Bool {
        from.contains { a.isCovered(by: $0.endpoint) } && to.contains { b.isCovered(by: $0.endpoint) }
    }

    public var summary: String {
        let f = from.map(\.endpoint.description).joined(separator: ", ")
        let t = to.map(\.endpoint.description).joined(separator: ", ")
        return "\(f) -> \(t) on \(ports.map(\.description).joined(separator: ", "))"
    }
}
