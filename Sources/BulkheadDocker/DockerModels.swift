import Foundation
import BulkheadInventory

/// Where dockerd listens: a unix socket path.
///
/// Accepts what `--docker` and `DOCKER_HOST` carry for a local daemon: `unix:///var/run/docker.sock`
/// or a bare path. TCP endpoints are refused on purpose: the agent must not reach for a remote
/// daemon whose containers are not on this host's bridges.
public struct DockerEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// Docker's own default.
    public static let defaultSocketPath = "/var/run/docker.sock"

    public var socketPath: String

    public init(socketPath: String = DockerEndpoint.defaultSocketPath) {
        self.socketPath = socketPath
    }

    /// Parses `unix:///path/to/socket` or `/path/to/socket`.
    public init(parsing text: String) throws(DockerClientError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var path = trimmed
        if trimmed.hasPrefix("unix://") {
            path = String(trimmed.dropFirst("unix://".count))
        } else if trimmed.contains("://") {
            throw .invalidEndpoint(text)
        }
        guard !path.isEmpty, path.hasPrefix("/") || path.hasPrefix(".") || !path.contains(":") else {
            throw .invalidEndpoint(text)
        }
        self.socketPath = path
    }

    public var description: String { "unix://\(socketPath)" }
}

/// A Docker network as the Engine API reports it, with what the inventory model leaves out.
public struct DockerNetwork: Sendable, Hashable {
    public var id: String
    public var name: String
    /// `bridge`, `host`, `null`, `macvlan`, …
    public var driver: String
    /// IPAM subnets, host bits cleared, IPv4 first, sorted.
    public var subnets: [IPNetwork]
    /// Gateways the IPAM configuration names. Often empty: see `DockerInventory` for how the
    /// inventory fills them in.
    public var gateways: [IPAddress]
    /// The Linux bridge behind a `bridge` network (`docker0`, `br-<first 12 of id>`); nil for others.
    public var bridgeInterface: String?
    public var enableIPv6: Bool
    public var isInternal: Bool
    public var labels: [String: String]

    public init(id: String, name: String, driver: String, subnets: [IPNetwork], gateways: [IPAddress] = [],
                bridgeInterface: String? = nil, enableIPv6: Bool = false, isInternal: Bool = false, labels: [String: String] = [:]) {
        self.id = id
        self.name = name
        self.driver = driver
        self.subnets = subnets
        self.gateways = gateways
        self.bridgeInterface = bridgeInterface
        self.enableIPv6 = enableIPv6
        self.isInternal = isInternal
        self.labels = labels
    }
}

/// A container as the Engine API lists it.
public struct DockerContainer: Sendable, Hashable {
    /// One network the container is attached to.
    public struct Endpoint: Sendable, Hashable {
        /// Empty until the container has started once: Docker allocates the endpoint then.
        public var networkID: String?
        public var ipv4: IPAddress?
        public var ipv6: IPAddress?
        /// The gateways Docker handed this endpoint (the bridge's addresses on `bridge` networks).
        public var gateways: [IPAddress]
        /// The container interface's MAC (lower case), when Docker reports one.
        public var mac: String?

        public init(networkID: String? = nil, ipv4: IPAddress? = nil, ipv6: IPAddress? = nil, gateways: [IPAddress] = [], mac: String? = nil) {
            self.networkID = networkID
            self.ipv4 = ipv4
            self.ipv6 = ipv6
            self.gateways = gateways
            self.mac = mac
        }
    }

    public var id: String
    /// Without Docker's leading `/`.
    public var name: String
    /// `created`, `running`, `paused`, `restarting`, …
    public var state: String
    public var labels: [String: String]
    /// Network name → endpoint.
    public var networks: [String: Endpoint]

    public init(id: String, name: String, state: String, labels: [String: String], networks: [String: Endpoint]) {
        self.id = id
        self.name = name
        self.state = state
        self.labels = labels
        self.networks = networks
    }
}

/// What `GET /version` reports.
public struct DockerVersion: Sendable, Hashable, Decodable, CustomStringConvertible {
    public var version: String
    public var apiVersion: String
    public var minAPIVersion: String?
    public var os: String?
    public var arch: String?
    public var kernelVersion: String?

    enum CodingKeys: String, CodingKey {
        case version = "Version", apiVersion = "ApiVersion", minAPIVersion = "MinAPIVersion"
        case os = "Os", arch = "Arch", kernelVersion = "KernelVersion"
    }

    public var description: String { "Docker \(version) (API \(apiVersion))" }
}

/// Turns what the Engine API lists into the `Inventory` model. Pure, so it is tested without dockerd.
public enum DockerInventory {
    /// Builds the inventory: every network, and every container in `containers` (the caller lists
    /// only live ones), both sorted by name.
    ///
    /// Gateways: dockerd 20.10 leaves `Gateway` out of a network's IPAM config whenever it chose
    /// the address itself (every network created without `--gateway`, `docker0` included), yet
    /// traffic from that address is the host's. So for `bridge` networks the inventory takes, per
    /// subnet, the IPAM gateway; else the gateway Docker handed to any attached container; else the
    /// first address of the subnet, which is what Docker's default IPAM gives the bridge. Other
    /// drivers' gateways are routers outside this host, so they are left out.
    ///
    /// `endpoints` (network name → container id → endpoint, from `DockerClient.endpoints(onNetwork:)`)
    /// supplies addresses the container list does not show yet; a listed address wins.
    public static func make(networks: [DockerNetwork], containers: [DockerContainer],
                            endpoints: [String: [String: DockerContainer.Endpoint]] = [:]) -> Inventory {
        let containers = containers.map { container in
            var container = container
            for (name, endpoint) in container.networks where endpoint.ipv4 == nil && endpoint.ipv6 == nil {
                if let known = endpoints[name]?[container.id] {
                    container.networks[name] = DockerContainer.Endpoint(
                        networkID: endpoint.networkID ?? known.networkID, ipv4: known.ipv4, ipv6: known.ipv6, gateways: endpoint.gateways,
                        mac: endpoint.mac ?? known.mac)
                }
            }
            return container
        }
        var reportedByEndpoints: [String: Set<IPAddress>] = [:]
        for container in containers {
            for (name, endpoint) in container.networks {
                reportedByEndpoints[name, default: []].formUnion(endpoint.gateways)
            }
        }
        let inventoryNetworks = networks.map { network -> Network in
            var gateways: [IPAddress] = []
            if network.driver == "bridge" {
                let candidates = Set(network.gateways).union(reportedByEndpoints[network.name] ?? [])
                for subnet in network.subnets {
                    let inSubnet = candidates.filter { subnet.contains($0) }.sorted()
                    if inSubnet.isEmpty {
                        gateways.append(firstHost(of: subnet))
                    } else {
                        gateways += inSubnet
                    }
                }
            }
            return Network(name: network.name, subnets: network.subnets, gateways: Array(Set(gateways)).sorted(),
                           bridge: network.driver == "bridge" ? network.bridgeInterface : nil)
        }
        let inventoryContainers = containers.map { container in
            Container(
                name: container.name, id: container.id, labels: container.labels,
                networks: container.networks.mapValues { Attachment(ipv4: $0.ipv4, ipv6: $0.ipv6, mac: $0.mac) }
            )
        }
        return Inventory(
            networks: inventoryNetworks.sorted { ($0.name, $0.subnets.description) < ($1.name, $1.subnets.description) },
            containers: inventoryContainers.sorted { ($0.name, $0.id ?? "") < ($1.name, $1.id ?? "") }
        )
    }

    static func firstHost(of subnet: IPNetwork) -> IPAddress {
        switch subnet.network {
        case .v4(let v): return subnet.prefixLength >= 31 ? .v4(v) : .v4(v + 1)
        case .v6(let v): return subnet.prefixLength >= 127 ? .v6(v) : .v6(v + 1)
        }
    }
}
