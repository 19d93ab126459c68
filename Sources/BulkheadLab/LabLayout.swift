import BulkheadInventory
import Foundation

/// What a lab is made of: its name, the world's addresses and the transit link between host and world.
public struct LabConfiguration: Sendable, Hashable {
    /// The first part of every namespace name; `cleanupStale(prefix:)` matches on it.
    public var namePrefix: String
    /// Addresses of the outside world, with the prefix length that is routed to it through the host.
    public var worldAddresses: [IPNetwork]
    /// The /30 between the host (`.1`) and the world (`.2`). RFC 2544 benchmarking space, so it never
    /// collides with Docker's 172.16/12 defaults nor with the documentation ranges used for the world.
    public var transitIPv4: IPNetwork
    /// Whether the lab turns bridge netfilter (`net.bridge.bridge-nf-call-iptables` and `-ip6tables`)
    /// on in its host namespace. Off, the lab turns both off, as on a host where nobody did: bridged
    /// traffic between two containers then bypasses the inet hooks until `apply` (through
    /// `BridgeNetfilter.ensureEnabled`) turns them on, which is the path a test of apply must run.
    public var bridgeNetfilter: Bool

    /// TEST-NET-1/2/3 and the IPv6 documentation prefix: never routed on the internet.
    public static let defaultWorldAddresses: [IPNetwork] = [
        "203.0.113.10/24", "198.51.100.10/24", "192.0.2.10/24", "2001:db8:ffff::10/64", "2001:db8::10/64",
    ].map { IPNetwork($0)! }

    public init(namePrefix: String = "bhlab",
                worldAddresses: [IPNetwork] = LabConfiguration.defaultWorldAddresses,
                transitIPv4: IPNetwork = IPNetwork("198.18.255.0/30")!,
                bridgeNetfilter: Bool = true) {
        self.namePrefix = namePrefix
        self.bridgeNetfilter = bridgeNetfilter
        self.worldAddresses = worldAddresses
        self.transitIPv4 = transitIPv4
    }
}

/// The parties a probe runs between.
public enum Party: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The Docker host: the namespace holding the bridges (and later Bulkhead's table).
    case host
    /// Everything outside the host, reached through the host's forward path.
    case world
    /// A container of the lab, by inventory name.
    case container(String)

    public var description: String {
        switch self {
        case .host: return "host"
        case .world: return "world"
        case .container(let name): return name
        }
    }

    private var sortKey: (Int, String) {
        switch self {
        case .host: return (0, "")
        case .world: return (1, "")
        case .container(let n): return (2, n)
        }
    }

    public static func < (a: Party, b: Party) -> Bool { a.sortKey < b.sortKey }
}

/// The deterministic plan of a lab: every namespace, interface, address and route it creates.
/// Pure data, computed from an inventory, so it is testable without root.
public struct LabLayout: Sendable, Hashable {
    /// A Linux bridge in the host namespace standing for one inventory network.
    public struct Bridge: Sendable, Hashable {
        public var network: String
        public var interface: String
        /// Gateway addresses with the subnet's prefix length.
        public var addresses: [IPNetwork]
        /// Fixed, so the bridge's link-local address does not follow whichever port joined first.
        public var macAddress: String = "02:b0:00:00:00:01"
    }

    /// One veth of a container: `containerInterface` in the container, `hostInterface` on the bridge.
    public struct Link: Sendable, Hashable {
        public var network: String
        public var bridge: String
        public var hostInterface: String
        public var containerInterface: String
        /// Derived from the address like Docker does (02:42 and the IPv4 address), so a container
        /// re-created with the same address keeps its MAC and stale neighbour entries stay right.
        public var macAddress: String?
        public var addresses: [IPNetwork]
    }

    public struct Node: Sendable, Hashable {
        public var container: String
        public var namespace: String
        /// Sorted by network name; `eth0` is the first.
        public var links: [Link]
        public var defaultGatewayV4: IPAddress?
        public var defaultGatewayV6: IPAddress?

        public var addresses: [IPAddress] { links.flatMap { $0.addresses.map(\.address) }.sorted() }
    }

    public struct World: Sendable, Hashable {
        public var hostInterface = "world0"
        public var worldInterface = "eth0"
        public var hostTransitV4: IPNetwork
        public var worldTransitV4: IPNetwork
        /// Link-local next hops, so the v6 transit needs no routable prefix at all.
        public var hostTransitV6 = IPNetwork("fe80::1/64")!
        public var worldTransitV6 = IPNetwork("fe80::2/64")!
        public var addresses: [IPNetwork]
        /// The world prefixes the host routes towards the world, normalized and sorted.
        public var routedPrefixes: [IPNetwork] { Array(Set(addresses.map(\.normalized))).sorted() }
    }

    public var name: String
    public var hostNamespace: String
    public var worldNamespace: String
    public var bridges: [Bridge]
    public var world: World
    public var nodes: [Node]

    /// Plans a lab named `name` (namespaces are `NAME-host`, `NAME-world`, `NAME-c-CONTAINER`).
    public init(name: String, inventory: Inventory, configuration: LabConfiguration = LabConfiguration()) throws(LabError) {
        self.name = name
        hostNamespace = "\(name)-host"
        worldNamespace = "\(name)-world"
        guard configuration.transitIPv4.isIPv4, configuration.transitIPv4.prefixLength <= 30,
              case .v4(let base) = configuration.transitIPv4.network else {
            throw .invalidInventory("the transit prefix \(configuration.transitIPv4) must be an IPv4 /30 or larger")
        }
        let len = configuration.transitIPv4.prefixLength
        world = World(hostTransitV4: IPNetwork(address: .v4(base + 1), prefixLength: len),
                      worldTransitV4: IPNetwork(address: .v4(base + 2), prefixLength: len),
                      addresses: configuration.worldAddresses)

        var bridges: [Bridge] = []
        var usedNames: Set<String> = ["lo", world.hostInterface]
        for (index, network) in inventory.networks.sorted(by: { $0.name < $1.name }).enumerated() {
            var addresses: [IPNetwork] = []
            for subnet in network.subnets.sorted() {
                let gateway = network.gateways.first { subnet.contains($0) } ?? Self.firstHost(of: subnet)
                addresses.append(IPNetwork(address: gateway, prefixLength: subnet.prefixLength))
            }
            for gateway in network.gateways where !network.subnets.contains(where: { $0.contains(gateway) }) {
                throw .invalidInventory("gateway \(gateway) of network '\(network.name)' is in none of its subnets")
            }
            var interface = "br-" + String(Self.sanitized(network.name).prefix(12))
            if usedNames.contains(interface) { interface = "br\(index)" }
            usedNames.insert(interface)
            bridges.append(Bridge(network: network.name, interface: interface, addresses: addresses,
                                  macAddress: String(format: "02:b0:00:00:%02x:%02x", (index >> 8) & 0xff, index & 0xff)))
        }
        self.bridges = bridges

        for w in configuration.worldAddresses {
            for network in inventory.networks {
                for subnet in network.subnets where subnet.overlaps(w.normalized) {
                    throw .invalidInventory("world address \(w) overlaps subnet \(subnet) of network '\(network.name)': choose other world addresses")
                }
            }
            if w.normalized.overlaps(configuration.transitIPv4.normalized) {
                throw .invalidInventory("world address \(w) overlaps the transit prefix \(configuration.transitIPv4)")
            }
        }

        nodes = []
        for (seq, container) in inventory.containers.sorted(by: { $0.name < $1.name }).enumerated() {
            try add(container: container, inventory: inventory, sequence: seq)
        }
    }

    /// Plans one more container (interface numbers come from `sequence`, unique in the lab's lifetime).
    mutating func add(container: Container, inventory: Inventory, sequence: Int) throws(LabError) {
        guard !nodes.contains(where: { $0.container == container.name }) else { throw .duplicateContainer(container.name) }
        var namespace = "\(name)-c-\(Self.sanitized(container.name))"
        if nodes.contains(where: { $0.namespace == namespace }) { namespace += "-\(sequence)" }
        var links: [Link] = []
        var gw4: IPAddress?, gw6: IPAddress?
        for (index, networkName) in container.networks.keys.sorted().enumerated() {
            guard let attachment = container.networks[networkName],
                  let network = inventory.network(named: networkName),
                  let bridge = bridges.first(where: { $0.network == networkName }) else {
                throw .invalidInventory("container '\(container.name)' is attached to network '\(networkName)', which the inventory does not list")
            }
            var addresses: [IPNetwork] = []
            for address in [attachment.ipv4, attachment.ipv6].compactMap({ $0 }) {
                guard let subnet = network.subnets.first(where: { $0.contains(address) }) else {
                    throw .invalidInventory("address \(address) of container '\(container.name)' is in no subnet of network '\(networkName)'")
                }
                addresses.append(IPNetwork(address: address, prefixLength: subnet.prefixLength))
                // The default route follows the first network (by name) that has this family, like
                // Docker's first attached network: the other networks are only reached on-link.
                let gateway = bridge.addresses.first { $0.isIPv4 == address.isIPv4 && $0.normalized.contains(address) }?.address
                if address.isIPv4, gw4 == nil { gw4 = gateway }
                if !address.isIPv4, gw6 == nil { gw6 = gateway }
            }
            // Interface names are at most 15 bytes (IFNAMSIZ - 1); the sequence keeps them unique in the host.
            links.append(Link(network: networkName, bridge: bridge.interface, hostInterface: "ve\(sequence)n\(index)",
                              containerInterface: "eth\(index)", macAddress: Self.macAddress(for: addresses.map(\.address)),
                              addresses: addresses))
        }
        nodes.append(Node(container: container.name, namespace: namespace, links: links, defaultGatewayV4: gw4, defaultGatewayV6: gw6))
        nodes.sort { $0.container < $1.container }
    }

    /// `inventory` with what the lab knows of the host added, as the Docker source reports it:
    /// each network's bridge, each attachment's MAC and host-side port.
    public func describing(_ inventory: Inventory) -> Inventory {
        var out = inventory
        for i in out.networks.indices {
            if let b = bridges.first(where: { $0.network == out.networks[i].name }) { out.networks[i].bridge = b.interface }
        }
        for i in out.containers.indices {
            guard let node = node(out.containers[i].name) else { continue }
            for link in node.links {
                guard var a = out.containers[i].networks[link.network] else { continue }
                a.port = link.hostInterface
                a.mac = link.macAddress
                out.containers[i].networks[link.network] = a
            }
        }
        return out
    }

    public var namespaces: [String] { [hostNamespace, worldNamespace] + nodes.map(\.namespace) }

    public func node(_ container: String) -> Node? { nodes.first { $0.container == container } }

    /// The addresses that belong to the host namespace: gateways and the transit address.
    public var hostAddresses: [IPAddress] {
        (bridges.flatMap { $0.addresses.map(\.address) } + [world.hostTransitV4.address]).sorted()
    }

    /// The EUI-64 link-local address the kernel gives an interface with this MAC.
    public static func linkLocal(mac: String) -> IPAddress? {
        let parts = mac.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard parts.count == 6 else { return nil }
        let b = [parts[0] ^ 0x02, parts[1], parts[2], 0xff, 0xfe, parts[3], parts[4], parts[5]]
        let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }
        return IPAddress("fe80::" + groups.joined(separator: ":"))
    }

    /// Link-local addresses on each network: party → (address, the party's interface there).
    public func linkLocalAddresses(on network: String) -> [(party: Party, address: IPAddress, interface: String)] {
        var out: [(Party, IPAddress, String)] = []
        guard let bridge = bridges.first(where: { $0.network == network }) else { return [] }
        if let a = Self.linkLocal(mac: bridge.macAddress) { out.append((.host, a, bridge.interface)) }
        for node in nodes {
            for link in node.links where link.network == network {
                if let mac = link.macAddress, let a = Self.linkLocal(mac: mac) { out.append((.container(node.container), a, link.containerInterface)) }
            }
        }
        return out
    }

    /// Which party owns `address`, if any.
    public func owner(of address: IPAddress) -> Party? {
        if hostAddresses.contains(address) { return .host }
        for bridge in bridges {
            if let hit = linkLocalAddresses(on: bridge.network).first(where: { $0.address == address }) { return hit.party }
        }
        if world.addresses.contains(where: { $0.address == address }) || world.worldTransitV4.address == address { return .world }
        return nodes.first { $0.addresses.contains(address) }.map { .container($0.container) }
    }

    static func macAddress(for addresses: [IPAddress]) -> String? {
        guard let a = addresses.first(where: \.isIPv4) ?? addresses.first else { return nil }
        return ([0x02, 0x42] + a.bytes.suffix(4)).map { String(format: "%02x", $0) }.joined(separator: ":")
    }

    static func firstHost(of subnet: IPNetwork) -> IPAddress {
        switch subnet.network {
        case .v4(let v): return .v4(subnet.prefixLength >= 31 ? v : v + 1)
        case .v6(let v): return .v6(subnet.prefixLength >= 127 ? v : v + 1)
        }
    }

    /// Namespace and interface names keep to letters, digits, `_`, `.` and `-`.
    static func sanitized(_ name: String) -> String {
        String(name.map { c -> Character in
            c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "." || c == "-") ? c : "_"
        })
    }
}
