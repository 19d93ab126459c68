import BulkheadInventory

/// What the agent knows about the host's endpoints: the networks and host addresses of the last
/// snapshot, and every container by key, updated one container at a time from events.
///
/// The key is the container's id, or its name when the source gives no id (an inventory file
/// may leave ids out); `SourceEvent.containerID` carries the same key.
public struct EndpointIndex: Sendable, Hashable {
    public private(set) var networks: [Network]
    public var hostAddresses: [IPAddress]
    public private(set) var containers: [String: Container]
    private var networkNames: Set<String>

    public init(_ inventory: Inventory) {
        networks = inventory.networks
        hostAddresses = inventory.hostAddresses
        networkNames = Set(inventory.networks.map(\.name))
        containers = [:]
        for c in inventory.containers { containers[Self.key(of: c)] = c }
    }

    /// The key a source uses for `container` in its events.
    public static func key(of container: Container) -> String { container.id ?? container.name }

    /// Sets (or with nil, removes) the container under `key`. Returns whether anything changed.
    @discardableResult
    public mutating func update(_ key: String, to container: Container?) -> Bool {
        guard containers[key] != container else { return false }
        containers[key] = container
        // A port now tied to a container is no longer one that nobody could be tied to (the
        // snapshot listed it so while the container's veth was not found yet).
        let bound = Set(container?.networks.values.compactMap(\.port) ?? [])
        if !bound.isEmpty {
            for i in networks.indices where networks[i].unboundPorts.map({ !bound.isDisjoint(with: $0) }) ?? false {
                let left = networks[i].unboundPorts!.filter { !bound.contains($0) }
                networks[i].unboundPorts = left.isEmpty ? nil : left
            }
        }
        return true
    }

    /// The keys of the containers that differ between `earlier` and this index (added, removed or
    /// changed), or nil when the networks or host addresses differ: then more than containers
    /// changed, and the whole index must be compiled again. A resync that finds what the events
    /// already told gives an empty set, and costs no compile.
    public func changedKeys(since earlier: EndpointIndex) -> Set<String>? {
        guard networks == earlier.networks, hostAddresses == earlier.hostAddresses else { return nil }
        var changed: Set<String> = []
        for (key, container) in containers where earlier.containers[key] != container { changed.insert(key) }
        for key in earlier.containers.keys where containers[key] == nil { changed.insert(key) }
        return changed
    }

    /// Whether every network `container` is attached to is known. A container on a network the
    /// last snapshot did not list (created since) cannot be placed without that network's
    /// subnets: the caller takes a new snapshot.
    public func knowsNetworks(of container: Container) -> Bool {
        container.networks.keys.allSatisfy(networkNames.contains)
    }

    /// The index as an inventory, containers sorted by name then id (as sources list them), so the
    /// same index always compiles to the same table.
    public var inventory: Inventory {
        Inventory(networks: networks,
                  containers: containers.values.sorted { ($0.name, $0.id ?? "") < ($1.name, $1.id ?? "") },
                  hostAddresses: hostAddresses)
    }
}
