import BulkheadInventory
import BulkheadSource
import Foundation
import Logging
import Synchronization

/// Adds what only the host knows to every inventory a source reports (and to every container it
/// reads for an event):
/// - the host's own interface addresses, so traffic to the host's uplink addresses is judged as
///   `host` (as the kernel's input hook sees it), not `world`;
/// - with a `PortFinder`, each container's bridge port (the host side of its veth, found from its
///   network namespace: the container interface's peer ifindex), for port binding. A port on a
///   network's bridge that no container could be tied to is listed in `unboundPorts`, so the
///   dataplane drops its frames (fail closed); the reason is logged.
public struct HostAwareSource: ContainerSource {
    public let base: any ContainerSource
    let finder: (any PortFinder)?
    let logger: Logger
    /// Ports found per container id (a container keeps its veth for life): one namespace read per container.
    private let cache = PortCache()
    /// Network name → bridge, from the last snapshot: what a per-event read binds ports against.
    private let bridges = BridgeCache()

    public init(_ base: any ContainerSource, portFinder: (any PortFinder)? = nil,
                logger: Logger = Logger(label: "bulkhead.ports")) {
        self.base = base
        self.finder = portFinder
        self.logger = logger
    }

    public func snapshot() async throws -> Inventory {
        var inventory = try await base.snapshot()
        // Beside any the source names (an inventory file may list the host's addresses).
        inventory.hostAddresses = Array(Set(inventory.hostAddresses).union(LocalAddresses.read())).sorted()
        bridges.set(Self.bridged(inventory))
        if let finder { try await bindPorts(&inventory, finder) }
        return inventory
    }

    public func events() -> AsyncThrowingStream<SourceEvent, Error> {
        base.events()
    }

    /// The container with its bridge ports found (against the bridges of the last snapshot). A
    /// port not found yet stays unset: the agent reads the container again (`bindPendingPorts`).
    public func inspect(id: String) async throws -> Container? {
        guard var container = try await base.inspect(id: id) else { return nil }
        let bridged = bridges.get()
        guard let finder, !bridged.isEmpty, container.networks.keys.contains(where: { bridged[$0] != nil }) else { return container }
        let wanted = Set(container.networks.values.compactMap(\.mac))
        let (bridgePorts, sandboxes) = try await Self.onOwnThread { (try finder.bridgePorts(), try finder.sandboxPorts(wanted: wanted)) }
        _ = await bind(&container, bridged: bridged, bridgePorts: bridgePorts, sandboxes: sandboxes, finder: finder)
        return container
    }

    public func networkNamespace(ofContainer id: String) async throws -> String? {
        try await base.networkNamespace(ofContainer: id)
    }

    public func outageDescription(_ error: (any Error)?) -> String { base.outageDescription(error) }

    static func bridged(_ inventory: Inventory) -> [String: String] {
        Dictionary(inventory.networks.compactMap { n in n.bridge.map { (n.name, $0) } }, uniquingKeysWith: { a, _ in a })
    }

    func bindPorts(_ inventory: inout Inventory, _ finder: any PortFinder) async throws {
        let bridged = Self.bridged(inventory)
        guard !bridged.isEmpty else { return }
        // One host link dump, and every container namespace of the runtime not read before: no
        // Docker API call, so a reconcile stays as fast as it was.
        let wanted = Set(inventory.containers.flatMap { $0.networks.values.compactMap(\.mac) })
        let (bridgePorts, sandboxes) = try await Self.onOwnThread { (try finder.bridgePorts(), try finder.sandboxPorts(wanted: wanted)) }
        var attributed = Set<String>()
        let live = Set(inventory.containers.compactMap(\.id))
        cache.forget(except: live)
        for i in inventory.containers.indices {
            attributed.formUnion(await bind(&inventory.containers[i], bridged: bridged, bridgePorts: bridgePorts, sandboxes: sandboxes, finder: finder))
        }
        for i in inventory.networks.indices {
            guard let bridge = inventory.networks[i].bridge else { continue }
            let unbound = (bridgePorts[bridge] ?? []).filter { !attributed.contains($0) }
            if !unbound.isEmpty {
                logger.debug("ports of a bridge that no container could be tied to: closed", metadata: ["bridge": "\(bridge)", "ports": "\(unbound)"])
            }
            inventory.networks[i].unboundPorts = unbound.isEmpty ? nil : unbound
        }
    }

    /// Sets the port of each of `c`'s attachments to a bridged network; returns the ports bound.
    func bind(_ c: inout Container, bridged: [String: String], bridgePorts: [String: [String]], sandboxes: [String: String]?,
              finder: any PortFinder) async -> Set<String> {
        guard c.networks.keys.contains(where: { bridged[$0] != nil }) else { return [] }
        var attributed = Set<String>()
        var ports = sandboxes
        if ports == nil, let id = c.id {
            // No namespace directory (another runtime layout): ask Docker where the
            // container's namespace is, once per container.
            ports = cache.ports(of: id)
            if ports == nil {
                do {
                    if let ns = try await base.networkNamespace(ofContainer: id) {
                        let found = try await Self.onOwnThread { try finder.hostPorts(containerNamespace: ns) }
                        if !found.isEmpty { cache.set(found, for: id) }
                        ports = found
                    }
                } catch {
                    logger.warning("cannot read the container's network namespace; its bridge port stays unbound and its frames are dropped",
                                   metadata: ["container": "\(c.name)", "error": "\(error)"])
                }
            }
        }
        for (network, attachment) in c.networks {
            guard let bridge = bridged[network], let mac = attachment.mac else { continue }
            // Only a port that really is on this network's bridge.
            guard let port = ports?[mac], bridgePorts[bridge]?.contains(port) == true else {
                // A starting container's veth joins the bridge a moment after it exists: the
                // next read of it (Docker's `start` event, or `bindPendingPorts`) binds it.
                logger.debug("no port of the network's bridge has the container's MAC behind it (yet); left unbound",
                             metadata: ["container": "\(c.name)", "network": "\(network)", "bridge": "\(bridge)", "mac": "\(mac)"])
                continue
            }
            c.networks[network]?.port = port
            attributed.insert(port)
        }
        return attributed
    }

    /// Runs `body` on a thread of its own: entering a network namespace changes the calling
    /// thread, which must never be one of the cooperative pool's.
    static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = "bulkhead-netns"
            thread.start()
        }
    }
}

/// Container id → its interfaces' MACs → host-side port.
final class PortCache: Sendable {
    private let state = Mutex<[String: [String: String]]>([:])

    func ports(of id: String) -> [String: String]? { state.withLock { $0[id] } }
    func set(_ ports: [String: String], for id: String) { state.withLock { $0[id] = ports } }
    func forget(except live: Set<String>) { state.withLock { $0 = $0.filter { live.contains($0.key) } } }
}

/// Network name → bridge of the last snapshot.
final class BridgeCache: Sendable {
    private let state = Mutex<[String: String]>([:])

    func get() -> [String: String] { state.withLock { $0 } }
    func set(_ bridges: [String: String]) { state.withLock { $0 = bridges } }
}
