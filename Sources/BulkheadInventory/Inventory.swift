import BulkheadYAML

/// What runs on a host: the container networks and the containers attached to them.
///
/// It comes from the Docker Engine API, or offline from a snapshot file (`InventoryLoader`).
public struct Inventory: Sendable, Hashable, Codable {
    public var networks: [Network]
    public var containers: [Container]
    /// The host's own addresses beyond the network gateways (its uplinks): traffic from or to
    /// them is `host`, which the kernel sees in the input and output hooks, not `world`.
    public var hostAddresses: [IPAddress]

    public init(networks: [Network] = [], containers: [Container] = [], hostAddresses: [IPAddress] = []) {
        self.networks = networks
        self.containers = containers
        self.hostAddresses = hostAddresses
    }

    public func network(named name: String) -> Network? { networks.first { $0.name == name } }
}

public struct Network: Sendable, Hashable, Codable {
    public var name: String
    public var subnets: [IPNetwork]
    /// Addresses of the host on this network (the bridge's gateway addresses): traffic from them is `host`.
    public var gateways: [IPAddress]
    /// The Linux bridge carrying the network on the host (`br-1a2b…`, `docker0`), when known.
    public var bridge: String?
    /// Ports of `bridge` that belong to no container the source could bind (its namespace was
    /// gone or unreadable): on a governed network every frame from them is dropped (fail closed).
    /// Filled by the Docker source at run time; not part of the snapshot format.
    public var unboundPorts: [String]?
    /// Where the network is defined in a snapshot file, for diagnostics.
    public var source: FilePosition?

    public init(name: String, subnets: [IPNetwork], gateways: [IPAddress] = [], bridge: String? = nil, source: FilePosition? = nil) {
        self.name = name
        self.subnets = subnets
        self.gateways = gateways
        self.bridge = bridge
        self.source = source
    }
}

public struct Container: Sendable, Hashable, Codable {
    public var name: String
    public var id: String?
    public var labels: [String: String]
    /// Network name → the container's addresses on it.
    public var networks: [String: Attachment]
    public var source: FilePosition?

    public init(name: String, id: String? = nil, labels: [String: String], networks: [String: Attachment], source: FilePosition? = nil) {
        self.name = name
        self.id = id
        self.labels = labels
        self.networks = networks
        self.source = source
    }

    /// Every address of the container, sorted.
    public var addresses: [IPAddress] {
        networks.values.flatMap { [$0.ipv4, $0.ipv6].compactMap { $0 } }.sorted()
    }
}

public struct Attachment: Sendable, Hashable, Codable {
    public var ipv4: IPAddress?
    public var ipv6: IPAddress?
    /// The container interface's MAC address (`02:42:ac:14:00:02`, lower case).
    public var mac: String?
    /// The host-side interface of the container's link: the bridge port (the host end of its veth).
    /// Frames from it may carry only this attachment's addresses (port binding).
    public var port: String?

    public init(ipv4: IPAddress? = nil, ipv6: IPAddress? = nil, mac: String? = nil, port: String? = nil) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.mac = mac
        self.port = port
    }

    /// True for `aa:bb:cc:dd:ee:ff` with hex digits: the only MAC form the inventory takes.
    public static func isValidMAC(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && $0.allSatisfy(\.isHexDigit) && $0.allSatisfy(\.isASCII) }
    }

    /// A Linux interface name: 1-15 bytes, no `/`, `:`, whitespace or NUL, not `.` or `..`.
    public static func isValidInterfaceName(_ text: String) -> Bool {
        let b = Array(text.utf8)
        return !b.isEmpty && b.count <= 15 && text != "." && text != ".."
            && !b.contains { $0 <= 0x20 || $0 == 0x2f || $0 == 0x3a || $0 >= 0x7f }
    }
}

/// A file position that survives into the model, so later checks can point back at the source.
public struct FilePosition: Sendable, Hashable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, mark: Mark) {
        self.file = file
        self.line = mark.line
        self.column = mark.column
    }

    public var mark: Mark { Mark(line: line, column: column) }
    public var description: String { "\(file):\(line)" }
}
