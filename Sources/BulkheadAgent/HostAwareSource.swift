import BulkheadDocker
import BulkheadInventory
import Foundation
import Logging
import Synchronization

/// Adds what only the host knows to every inventory Docker reports:
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

    public init(_ base: any ContainerSource, portFinder: (any PortFinder)? = nil,
                logger: Logger = Logger(label: "bulkhead.ports")) {
        self.base = base
        self.finder = portFinder
        self.logger = logger
    }

    public func inventory() async throws -> Inventory {
        var inventory = try await base.inventory()
        inventory.hostAddresses = LocalAddresses.read()
        if let finder { try await bindPorts(&inventory, finder) }
        return inventory
    }

    public func events(since: Date?) -> AsyncThrowingStream<DockerEvent, Error> {
        base.events(since: since)
    }

    public func networkNamespace(ofContainer id: String) async throws -> String? {
        try await base.networkNamespace(ofContainer: id)
    }

    func bindPorts(_ inventory: inout Inventory, _ finder: any PortFinder) async throws {
        let bridged = Dictionary(inventory.networks.compactMap { n in n.bridge.map { (n.name, $0) } }, uniquingKeysWith: { a, _ in a })
        guard !bridged.isEmpty else { return }
        let bridgePorts = try await Self.onOwnThread { try finder.bridgePorts() }
        var attributed = Set<String>()
        let live = Set(inventory.containers.compactMap(\.id))
        cache.forget(except: live)
        for i in inventory.containers.indices {
            let c = inventory.containers[i]
            guard let id = c.id, c.networks.keys.contains(where: { bridged[$0] != nil }) else { continue }
            var ports = cache.ports(of: id)
            if ports == nil {
                do {
                    if let ns = try await base.networkNamespace(ofContainer: id) {
                        let found = try await Self.onOwnThread { try finder.hostPorts(containerNamespace: ns) }
                        // Nothing found yet (a container between create and start): ask again next time.
                        if !found.isEmpty { cache.set(found, for: id) }
                        ports = found
                    } else {
                        // Created, not started: no veth exists yet.
                        logger.debug("container has no network namespace yet", metadata: ["container": "\(c.name)"])
                    }
                } catch {
                    logger.warning("cannot read the container's network namespace; its bridge port stays unbound and its frames are dropped",
                                   metadata: ["container": "\(c.name)", "error": "\(error)"])
                }
            }
            for (network, attachment) in c.networks {
                guard let bridge = bridged[network], let ports else { continue }
                // The port is the peer of the container interface whose peer is on this network's
                // bridge (Docker's MAC, when it has reported one, must agree). The MAC is the
                // kernel's: Docker's list may not show it yet while the container starts.
                let onBridge = ports.filter { bridgePorts[bridge]?.contains($0.value) == true }
                let match = attachment.mac.flatMap { mac in onBridge[mac].map { (mac, $0) } }
                    ?? (onBridge.count == 1 && attachment.mac == nil ? onBridge.first.map { ($0.key, $0.value) } : nil)
                guard let (mac, port) = match else {
                    // A starting container's veth joins the bridge a moment after it exists: the
                    // next reconcile (Docker's `start` event) binds it.
                    logger.debug("no veth of the container is (yet) a port of its network's bridge; left unbound",
                                 metadata: ["container": "\(c.name)", "network": "\(network)", "bridge": "\(bridge)"])
                    continue
                }
                inventory.containers[i].networks[network]?.port = port
                inventory.containers[i].networks[network]?.mac = mac
                attributed.insert(port)
            }
        }
        for i in inventory.networks.indices {
            guard let bridge = inventory.networks[i].bridge else { continue }
            let unbound = (bridgePorts[bridge] ?? []).filter { !attributed.contains($0) }
            inventory.networks[i].unboundPorts = unbound.isEmpty ? nil : unbound
        }
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
