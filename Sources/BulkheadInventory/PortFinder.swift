/// Finds the bridge ports (host-side veths) of containers: the side effect behind port binding.
///
/// The real one reads rtnetlink (`NetlinkPortFinder` in BulkheadNetfilter); tests may fake it.
public protocol PortFinder: Sendable {
    /// Every bridge of the host namespace with its ports: bridge name → port names, sorted.
    func bridgePorts() throws -> [String: [String]]
    /// A container's interfaces by MAC (lower case) → the host-side peer's name, read from the
    /// container's network namespace (a path such as Docker's `SandboxKey` or `/proc/PID/ns/net`).
    func hostPorts(containerNamespace: String) throws -> [String: String]
    /// Every container interface found in the runtime's namespace directory (Docker's
    /// `/var/run/docker/netns`), by MAC → host-side port; nil when there is no such directory.
    /// A MAC seen in two namespaces is left out (a container that changed its MAC to another's).
    /// `wanted` are the MACs the runtime reports for its containers: a namespace read earlier is
    /// read again unless every MAC it had is wanted (Docker moves a veth into the container's
    /// namespace first and sets its MAC there afterwards, so an early read can see a random one).
    func sandboxPorts(wanted: Set<String>) throws -> [String: String]?
}
