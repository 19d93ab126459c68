import BulkheadInventory
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Docker-like host built from an inventory in network namespaces, for enforcement tests, `demo` and `verify`.
///
/// - `NAME-host` plays the Docker host: one bridge per network carrying the gateway addresses, forwarding
///   on, and bridge netfilter calling the IPv4/IPv6 hooks, so traffic between two containers of one
///   network passes the inet `forward` hook of this namespace (where Bulkhead programs its table).
/// - `NAME-c-CONTAINER` per container: a veth per network, its addresses, default routes via the
///   gateway of its first network (by name).
/// - `NAME-world` stands for the internet, routed through the host's forward path.
///
/// Nothing is created in, or changed in, the initial network namespace: every veth is created with
/// both ends already in lab namespaces. Every lab has a unique name (`PREFIX-PID-N`) so labs can be
/// built in parallel, and `destroy()` (also run on deinit) removes every namespace it made.
///
/// ```swift
/// let lab = try Lab(inventory: inventory)
/// defer { lab.destroy() }
/// let runner = ProbeRunner(lab: lab)
/// try runner.startServers(for: probes)
/// let results = try runner.run(probes)
/// ```
public final class Lab: @unchecked Sendable {
    /// `PREFIX-PID-N`, the first part of every namespace name of this lab.
    public let name: String
    public let configuration: LabConfiguration
    private let runner: CommandRunning
    private let lock = NSLock()
    // Guarded by `lock`.
    private var _layout: LabLayout
    private var _inventory: Inventory
    private var created: [String] = []
    private var nextSequence: Int
    private var destroyed = false

    private static let counter = Counter()

    /// Builds the lab. On failure, whatever was already created is removed before the error is thrown.
    public init(inventory: Inventory, configuration: LabConfiguration = LabConfiguration(),
                runner: CommandRunning = SystemCommandRunner()) throws {
        name = "\(configuration.namePrefix)-\(getpid())-\(Self.counter.next())"
        self.configuration = configuration
        self.runner = runner
        _inventory = inventory
        _layout = try LabLayout(name: name, inventory: inventory, configuration: configuration)
        nextSequence = inventory.containers.count
        if runner is SystemCommandRunner, geteuid() != 0 { throw LabError.notRoot }
        do {
            try build()
        } catch {
            destroy()
            throw error
        }
    }

    deinit { destroy() }

    // MARK: Accessors

    /// The plan the lab was built from, including containers added since.
    public var layout: LabLayout { lock.withLock { _layout } }
    /// The inventory the lab currently mirrors (changed by `addContainer` / `removeContainer`),
    /// with bridges, MACs and host-side ports filled in from the layout (as the Docker source does).
    public var inventory: Inventory { lock.withLock { _layout.describing(_inventory) } }
    public var hostNamespace: String { layout.hostNamespace }
    public var worldNamespace: String { layout.worldNamespace }
    /// Container names, sorted.
    public var containers: [String] { layout.nodes.map(\.container) }

    /// The namespace of a container, or nil when the lab has no such container.
    public func namespace(ofContainer name: String) -> String? { layout.node(name)?.namespace }

    /// The namespace a party lives in.
    public func namespace(of party: Party) -> String? {
        switch party {
        case .host: return hostNamespace
        case .world: return worldNamespace
        case .container(let n): return namespace(ofContainer: n)
        }
    }

    /// The routable addresses of a party, sorted.
    public func addresses(of party: Party) -> [IPAddress] {
        let l = layout
        switch party {
        case .host: return l.hostAddresses
        case .world: return l.world.addresses.map(\.address).sorted()
        case .container(let n): return l.node(n)?.addresses ?? []
        }
    }

    /// The address of a container on one network, of one family.
    public func address(of container: String, on network: String, ipv6: Bool = false) -> IPAddress? {
        layout.node(container)?.links.first { $0.network == network }?.addresses.first { $0.isIPv4 != ipv6 }?.address
    }

    /// The bridge interface (in the host namespace) of an inventory network.
    public func bridge(ofNetwork network: String) -> String? { layout.bridges.first { $0.network == network }?.interface }

    /// Which party owns an address, if any.
    public func owner(of address: IPAddress) -> Party? { layout.owner(of: address) }

    /// Runs a command inside one of this lab's namespaces (`ip netns exec NS ...`), for tests and demos,
    /// for example `nft list ruleset` in the host namespace. Refuses namespaces the lab does not own,
    /// so it can never run anything in the initial namespace.
    @discardableResult
    public func run(in namespace: String, _ command: [String]) throws -> String {
        guard layout.namespaces.contains(namespace) else {
            throw LabError.foreignNamespace(namespace, lab: name)
        }
        return try runner.run(["ip", "netns", "exec", namespace] + command, purpose: "running a command in \(namespace)")
    }

    // MARK: Building

    private func ip(_ args: [String], _ purpose: String) throws {
        _ = try runner.run(["ip"] + args, purpose: purpose)
    }

    private func addNamespace(_ ns: String, forwarding: Bool) throws {
        try ip(["netns", "add", ns], "creating namespace \(ns)")
        lock.withLock { created.append(ns) }
        var settings = [
            // Tentative addresses are unusable for a second or more; the lab wants every address at once.
            "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
            // A container on two networks answers the world from its first network's route with the
            // second network's address (Docker does the same); strict reverse-path filtering would drop that.
            "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
            // Refused and unreachable results rely on ICMP errors; the per-peer rate limit (1/s after a
            // burst of 6) and the global one (1000/s, burst 50) would turn them into timeouts under load.
            "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=100000", "net.ipv4.icmp_msgs_burst=100000",
        ]
        if forwarding {
            settings += hostSysctls.map { "\($0.key)=\($0.value)" }
        }
        _ = try runner.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w"] + settings, purpose: "configuring sysctls in \(ns)")
        try ip(["-n", ns, "link", "set", "lo", "up"], "bringing up loopback in \(ns)")
    }

    /// Forwarding, and bridge netfilter: on this kernel `net.bridge.bridge-nf-call-*` are per network
    /// namespace (a new namespace starts at 1, and setting it here does not change the initial one).
    /// With `LabConfiguration.bridgeNetfilter` off, both are set to 0 instead.
    var hostSysctls: [(key: String, value: String)] {
        let bridge = configuration.bridgeNetfilter ? "1" : "0"
        return [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.bridge.bridge-nf-call-iptables", bridge),
            ("net.bridge.bridge-nf-call-ip6tables", bridge),
        ]
    }

    private func build() throws {
        let l = layout
        let host = l.hostNamespace
        try addNamespace(host, forwarding: true)
        // Read back: if bridge netfilter were not namespaced (or not built), bridged traffic would bypass
        // the forward hook and every enforcement test would pass for the wrong reason.
        let expectedSysctls = hostSysctls
        let keys = expectedSysctls.map(\.key)
        let values = try runner.run(["ip", "netns", "exec", host, "sysctl", "-n"] + keys, purpose: "reading sysctls in \(host)")
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        for (i, (key, expected)) in expectedSysctls.enumerated() {
            let actual = i < values.count ? values[i] : "(missing)"
            if actual != expected { throw LabError.sysctlMismatch(namespace: host, key: key, expected: expected, actual: actual) }
        }

        for bridge in l.bridges {
            let purpose = "creating bridge \(bridge.interface) for network \(bridge.network) in \(host)"
            // No STP (ports forward at once) and no multicast snooping: without a querier, snooping
            // can swallow the solicited-node multicast of IPv6 neighbour discovery.
            try ip(["-n", host, "link", "add", bridge.interface, "address", bridge.macAddress,
                    "type", "bridge", "stp_state", "0", "mcast_snooping", "0"], purpose)
            for a in bridge.addresses { try ip(["-n", host] + addressArgs(a, dev: bridge.interface), purpose) }
            try ip(["-n", host, "link", "set", bridge.interface, "up"], purpose)
        }

        let w = l.world, world = l.worldNamespace
        try addNamespace(world, forwarding: false)
        let wp = "linking the world namespace \(world) to \(host)"
        try ip(["-n", host, "link", "add", w.hostInterface, "type", "veth", "peer", "name", w.worldInterface, "netns", world], wp)
        try ip(["-n", host] + addressArgs(w.hostTransitV4, dev: w.hostInterface), wp)
        try ip(["-n", host] + addressArgs(w.hostTransitV6, dev: w.hostInterface), wp)
        try ip(["-n", host, "link", "set", w.hostInterface, "up"], wp)
        try ip(["-n", world] + addressArgs(w.worldTransitV4, dev: w.worldInterface), wp)
        try ip(["-n", world] + addressArgs(w.worldTransitV6, dev: w.worldInterface), wp)
        for a in w.addresses { try ip(["-n", world] + addressArgs(a, dev: w.worldInterface), "adding world address \(a)") }
        try ip(["-n", world, "link", "set", w.worldInterface, "up"], wp)
        try ip(["-n", world, "-4", "route", "add", "default", "via", "\(w.hostTransitV4.address)", "dev", w.worldInterface], wp)
        try ip(["-n", world, "-6", "route", "add", "default", "via", "\(w.hostTransitV6.address)", "dev", w.worldInterface], wp)
        for prefix in w.routedPrefixes {
            let via = prefix.isIPv4 ? w.worldTransitV4.address : w.worldTransitV6.address
            try ip(["-n", host, prefix.isIPv4 ? "-4" : "-6", "route", "add", "\(prefix)", "via", "\(via)", "dev", w.hostInterface],
                   "routing world prefix \(prefix) from \(host)")
        }

        for node in l.nodes { try build(node) }
    }

    private func build(_ node: LabLayout.Node) throws {
        let host = hostNamespace, ns = node.namespace
        try addNamespace(ns, forwarding: false)
        for link in node.links {
            let purpose = "attaching container \(node.container) to network \(link.network) (\(link.hostInterface) on \(link.bridge))"
            try ip(["-n", host, "link", "add", link.hostInterface, "type", "veth", "peer", "name", link.containerInterface]
                   + (link.macAddress.map { ["address", $0] } ?? []) + ["netns", ns], purpose)
            try ip(["-n", host, "link", "set", link.hostInterface, "master", link.bridge, "up"], purpose)
            for a in link.addresses { try ip(["-n", ns] + addressArgs(a, dev: link.containerInterface), purpose) }
            try ip(["-n", ns, "link", "set", link.containerInterface, "up"], purpose)
        }
        let purpose = "adding default routes of container \(node.container)"
        if let gw = node.defaultGatewayV4 { try ip(["-n", ns, "-4", "route", "add", "default", "via", "\(gw)"], purpose) }
        if let gw = node.defaultGatewayV6 { try ip(["-n", ns, "-6", "route", "add", "default", "via", "\(gw)"], purpose) }
        // A container re-created with an address the host already tried to reach (and marked
        // FAILED in its neighbour table) would stay unreachable over IPv6 for seconds: forget it.
        for link in node.links {
            for a in link.addresses {
                try? ip(["-n", host, a.isIPv4 ? "-4" : "-6", "neigh", "flush", "to", "\(a.address)"], "forgetting stale neighbour entries")
            }
        }
    }

    private func addressArgs(_ a: IPNetwork, dev: String) -> [String] {
        a.isIPv4 ? ["-4", "addr", "add", "\(a)", "dev", dev] : ["-6", "addr", "add", "\(a)", "dev", dev, "nodad"]
    }

    // MARK: Churn

    /// Adds a container (its networks must be in the lab's inventory), as `docker run` would.
    public func addContainer(_ container: Container) throws {
        let node: LabLayout.Node = try lock.withLock {
            if destroyed { throw LabError.destroyed(name) }
            var l = _layout
            try l.add(container: container, inventory: _inventory, sequence: nextSequence)
            nextSequence += 1
            _layout = l
            _inventory.containers.append(container)
            return l.node(container.name)!
        }
        do {
            try build(node)
        } catch {
            try? removeContainer(named: container.name)
            throw error
        }
    }

    /// Removes a container and its veths, as `docker rm -f` would.
    public func removeContainer(named containerName: String) throws {
        let node: LabLayout.Node = try lock.withLock {
            if destroyed { throw LabError.destroyed(name) }
            guard let node = _layout.node(containerName) else { throw LabError.unknownContainer(containerName) }
            _layout.nodes.removeAll { $0.container == containerName }
            _inventory.containers.removeAll { $0.name == containerName }
            return node
        }
        // Delete the host ends first: a socket still open in the container (a probe server) would keep
        // its namespace, and with it the veth pair, alive after `ip netns del`.
        for link in node.links {
            do {
                try ip(["-n", hostNamespace, "link", "del", link.hostInterface], "removing \(link.hostInterface) of \(containerName)")
            } catch LabError.commandFailed(_, _, let stderr, _) where stderr.contains("Cannot find device") {
                // Never created (a failed addContainer): nothing to remove.
            }
        }
        try deleteNamespace(node.namespace)
    }

    // MARK: Teardown

    private func deleteNamespace(_ ns: String) throws {
        lock.withLock { created.removeAll { $0 == ns } }
        guard FileManager.default.fileExists(atPath: "/var/run/netns/\(ns)") else { return }
        try ip(["netns", "del", ns], "deleting namespace \(ns)")
    }

    /// Removes every namespace the lab created (and with them its bridges and veths). Idempotent;
    /// failures are reported on standard error and returned, never thrown, so it fits in `defer`.
    @discardableResult
    public func destroy() -> [LabError] {
        let namespaces: [String] = lock.withLock {
            destroyed = true
            return created.reversed()
        }
        var errors: [LabError] = []
        for ns in namespaces {
            do {
                try deleteNamespace(ns)
            } catch let e as LabError {
                errors.append(e)
                FileHandle.standardError.write(Data("bulkhead lab: \(e)\n".utf8))
            } catch {}
        }
        return errors
    }

    /// Removes namespaces left by labs whose process is gone (a crashed or killed test run).
    /// Lab namespaces are named `PREFIX-PID-N-...`; those of a live process are kept unless
    /// `includingLiveOwners` is set (never set it while other labs may be running).
    /// - Returns: the namespaces removed, sorted.
    @discardableResult
    public static func cleanupStale(prefix: String = LabConfiguration().namePrefix, includingLiveOwners: Bool = false,
                                    runner: CommandRunning = SystemCommandRunner()) throws -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        var removed: [String] = []
        for ns in entries.sorted() where ns.hasPrefix(prefix + "-") {
            let rest = ns.dropFirst(prefix.count + 1).split(separator: "-", maxSplits: 2)
            guard rest.count == 3, let pid = Int32(rest[0]), Int(rest[1]) != nil else { continue }
            if !includingLiveOwners, kill(pid, 0) == 0 || errno == EPERM { continue }
            _ = try runner.run(["ip", "netns", "del", ns], purpose: "removing stale lab namespace \(ns)")
            removed.append(ns)
        }
        return removed
    }
}

/// A process-wide counter for unique lab names.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func next() -> Int { lock.withLock { value += 1; return value } }
}
