import BulkheadInventory
import BulkheadPolicy

extension Lab {
    /// The source address the kernel picks for a probe in this topology: the sender's address on a
    /// network whose subnet holds the destination, else its address on the network of its default
    /// route (the first by name with that family); for the world, the first world address of the
    /// family (the probe runner binds it); for the host, nil (the gateway towards the destination).
    /// This is the address an evaluator must judge the probe by.
    public func sourceAddress(for probe: Probe) -> IPAddress? {
        let l = layout
        if let interface = probe.interface {
            // Link-local: the sender's own link-local address on that interface.
            for bridge in l.bridges {
                if let hit = l.linkLocalAddresses(on: bridge.network).first(where: { $0.party == probe.from && $0.interface == interface }) {
                    return hit.address
                }
            }
            return nil
        }
        switch probe.from {
        case .host:
            return nil
        case .world:
            return l.world.addresses.first { $0.isIPv4 == probe.to.isIPv4 }?.address
        case .container(let name):
            guard let node = l.node(name) else { return nil }
            let family = node.links.flatMap(\.addresses).filter { $0.isIPv4 == probe.to.isIPv4 }
            if let onLink = family.first(where: { $0.normalized.contains(probe.to) }) { return onLink.address }
            return family.first?.address
        }
    }

    /// Every probe from each party to each address of every other party (and of itself when
    /// `includeSelf`), for each kind of traffic, sorted. Parties default to host, world and every container.
    /// A container with no address of a destination's family sends nothing there (its kernel has no
    /// route: the answer would say nothing about a policy).
    public func probeMatrix(traffic: [Traffic], parties: [Party]? = nil, includeSelf: Bool = false) -> [Probe] {
        let all = parties ?? ([.host, .world] + containers.map { Party.container($0) })
        var probes: [Probe] = []
        for from in all {
            for to in all where includeSelf || to != from {
                for address in addresses(of: to) {
                    if case .container = from, sourceAddress(for: Probe(from: from, to: address, traffic: .icmp)) == nil { continue }
                    for t in traffic { probes.append(Probe(from: from, to: address, traffic: t)) }
                }
            }
        }
        return probes.sorted()
    }

    /// Probes between link-local addresses: on each network, every pair of parties on it (host
    /// and containers), both ways, each bound to the sender's interface there. With `networks`,
    /// only those networks.
    public func linkLocalProbeMatrix(traffic: [Traffic], networks: Set<String>? = nil) -> [Probe] {
        let l = layout
        var probes: [Probe] = []
        for bridge in l.bridges where networks?.contains(bridge.network) ?? true {
            let members = l.linkLocalAddresses(on: bridge.network)
            for from in members {
                for to in members where to.party != from.party {
                    for t in traffic { probes.append(Probe(from: from.party, to: to.address, traffic: t, interface: from.interface)) }
                }
            }
        }
        return probes.sorted()
    }

    /// The network a link-local probe runs on (from its sender's interface), nil for other probes.
    public func network(ofLinkLocal probe: Probe) -> String? {
        guard let interface = probe.interface else { return nil }
        let l = layout
        return l.bridges.first { b in l.linkLocalAddresses(on: b.network).contains { $0.party == probe.from && $0.interface == interface } }?.network
    }
}

/// One row of a truth table: a probe, what the oracle expected, and what happened.
///
/// "Denied" means dropped: an expected-denied probe matches only when nothing came back (it timed
/// out) or the sender's own kernel dropped it on the way out (`blockedLocally`, a drop in the
/// output hook). A TCP reset, an ICMP port unreachable or any other ICMP error means the packet got
/// somewhere that answered: for a denied probe that is a mismatch, not a block.
public struct TruthTableRow: Sendable, Hashable, CustomStringConvertible {
    public var result: ProbeResult
    /// The address the oracle judged the probe's source by (see `Lab.sourceAddress(for:)`).
    public var source: IPAddress?
    /// Whether the oracle (usually the policy evaluator) says the traffic passes.
    public var expectedToPass: Bool
    /// Why the oracle decided so (for example the policy line), for reports.
    public var reason: String?
    /// How many times the probe was sent: an expected-allowed probe that did not answer is sent
    /// once more before it counts as a mismatch (a lost SYN under load is not a policy); an
    /// expected-denied probe is sent once.
    public var attempts: Int

    public init(result: ProbeResult, source: IPAddress?, expectedToPass: Bool, reason: String?, attempts: Int = 1) {
        self.result = result
        self.source = source
        self.expectedToPass = expectedToPass
        self.reason = reason
        self.attempts = attempts
    }

    /// With a server on every probed port, passing means answered.
    public var passed: Bool { result.outcome == .answered }
    /// Dropped on the way: timed out, or dropped by the sender's own output path.
    public var dropped: Bool { result.outcome == .timedOut || result.outcome == .blockedLocally }
    /// Allowed must be answered; denied must be dropped (a refusal or ICMP error is a mismatch).
    public var matches: Bool { expectedToPass ? passed : dropped }

    public var description: String {
        "\(matches ? "ok      " : "MISMATCH") \(result) — expected \(expectedToPass ? "answered" : "dropped")"
            + (attempts > 1 ? " (sent \(attempts) times)" : "")
            + (reason.map { ": \($0)" } ?? "")
    }
}

extension ProbeRunner {
    /// Starts servers on every probed port, runs the probes and compares each with the oracle.
    /// An expected-allowed probe that was not answered is run once more (in one batch with the other
    /// such probes) before it counts; an expected-denied probe runs once, so a drop costs one timeout.
    /// - Parameter oracle: given the probe and its source address, whether it should pass, and why.
    /// - Returns: one row per probe, in the order given.
    public func truthTable(_ probes: [Probe], oracle: (Probe, IPAddress?) -> (passes: Bool, reason: String?)) throws -> [TruthTableRow] {
        try startServers(for: probes)
        let results = try run(probes)
        var rows = results.map { r in
            let source = lab.sourceAddress(for: r.probe)
            let verdict = oracle(r.probe, source)
            return TruthTableRow(result: r, source: source, expectedToPass: verdict.passes, reason: verdict.reason)
        }
        let retry = rows.indices.filter { rows[$0].expectedToPass && !rows[$0].passed }
        if !retry.isEmpty {
            let again = try run(retry.map { rows[$0].result.probe })
            for (i, r) in zip(retry, again) {
                rows[i].result = r
                rows[i].attempts = 2
            }
        }
        return rows
    }
}
