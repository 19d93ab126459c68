import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Foundation
import Testing

/// The example inventory as a lab with no nftables at all: everything that should connect does, and
/// the probe runner tells answered, refused, dropped and unreachable apart.
@Suite(.enabled(if: LabSupport.enabled, "needs root (or CI=true, where it must fail instead of skip)"))
struct ReachabilityTests {
    static let traffic: [Traffic] = [.tcp(8080), .udp(5353), .icmp]

    @Test func containersSharingANetworkReachEachOther() throws {
        let inventory = try LabSupport.exampleInventory()
        try LabSupport.withLab(inventory) { lab, runner in
            var probes: [Probe] = []
            for pair in LabSupport.sharedNetworkPairs(inventory) {
                for address in pair.addresses {
                    for t in Self.traffic { probes.append(Probe(from: .container(pair.from), to: address, traffic: t)) }
                }
            }
            #expect(probes.count == 74 * 2 * 3)
            try runner.startServers(for: probes)
            let start = ContinuousClock.now
            let results = try runner.run(probes)
            print("lab: \(probes.count) container ↔ container probes in \(ContinuousClock.now - start)")
            #expect(results.map(\.probe) == probes)
            LabSupport.report(results, expecting: .answered)
            #expect(Set(results.map { $0.probe.to.isIPv4 }) == [true, false])
        }
    }

    @Test func worldAndHostReachContainersAndBack() throws {
        let inventory = try LabSupport.exampleInventory()
        try LabSupport.withLab(inventory) { lab, runner in
            var probes: [Probe] = []
            for c in lab.containers {
                for address in lab.addresses(of: .container(c)) {
                    for t in Self.traffic {
                        probes.append(Probe(from: .world, to: address, traffic: t))
                        probes.append(Probe(from: .host, to: address, traffic: t))
                    }
                }
                for address in lab.addresses(of: .world) {
                    for t in Self.traffic { probes.append(Probe(from: .container(c), to: address, traffic: t)) }
                }
                // A container reaches the host on the gateway of each of its networks.
                for network in inventory.containers.first(where: { $0.name == c })!.networks.keys {
                    for gw in lab.layout.bridges.first(where: { $0.network == network })!.addresses {
                        probes.append(Probe(from: .container(c), to: gw.address, traffic: .tcp(8080)))
                    }
                }
            }
            for address in lab.addresses(of: .world) {
                probes.append(Probe(from: .host, to: address, traffic: .tcp(8080)))
            }
            try runner.startServers(for: probes)
            let results = try runner.run(probes)
            LabSupport.report(results, expecting: .answered)
            print("lab: \(probes.count) world/host ↔ container probes answered")
        }
    }

    @Test func closedPortsAreRefusedNotDropped() throws {
        try LabSupport.withLab(LabSupport.exampleInventory()) { lab, runner in
            let targets = [lab.address(of: "shop-db-1", on: "shop_default")!,
                           lab.address(of: "shop-db-1", on: "shop_default", ipv6: true)!]
            try runner.startServers(tcp: [80], udp: [53], on: [.container("shop-db-1")])
            var probes: [Probe] = []
            for to in targets {
                for from: Party in [.container("shop-api-1"), .world, .host] {
                    probes += [Probe(from: from, to: to, traffic: .tcp(81)), Probe(from: from, to: to, traffic: .udp(54))]
                }
            }
            let results = try runner.run(probes)
            LabSupport.report(results, expecting: .refused)
            // TCP is refused with a reset, UDP with ICMP port unreachable: each probe has its one answer.
            #expect(results.count == 12)
            for r in results {
                if case .tcp = r.probe.traffic {
                    #expect(r.detail?.hasPrefix("ECONNREFUSED") == true, "\(r)")
                } else {
                    #expect(r.detail?.contains("port unreachable") == true, "\(r)")
                }
            }
            // The listening ports, for contrast.
            let open = try runner.run(targets.flatMap { [Probe(from: .world, to: $0, traffic: .tcp(80)), Probe(from: .world, to: $0, traffic: .udp(53))] })
            LabSupport.report(open, expecting: .answered)
        }
    }

    @Test func missingAddressesTimeOutOrAreUnreachable() throws {
        try LabSupport.withLab(LabSupport.exampleInventory()) { lab, runner in
            let from = Party.container("shop-frontend-1")
            // On the frontend's own subnet: neighbour resolution never succeeds, nothing comes back in time.
            let onLink = [IPAddress("172.20.0.200")!, IPAddress("fd00:20::200")!]
            // Routed to the host, which has no route: it answers with ICMP network unreachable.
            let nowhere = [IPAddress("10.99.0.1")!, IPAddress("fd99::1")!]
            let probes = (onLink + nowhere).flatMap { to in Self.traffic.map { Probe(from: from, to: to, traffic: $0) } }
            let results = try runner.run(probes)
            for r in results {
                if onLink.contains(r.probe.to) {
                    #expect(r.outcome == .timedOut, "\(r)")
                } else {
                    #expect(r.outcome == .unreachable, "\(r)")
                }
            }
            print(results.map { "lab: \($0) in \($0.elapsed)" }.joined(separator: "\n"))
            _ = lab
        }
    }

    /// Without nftables, the timeout path is proved with a blackhole route (routed traffic) and a
    /// bridge port taken down (bridged traffic).
    @Test func droppedTrafficTimesOut() throws {
        try LabSupport.withLab(LabSupport.exampleInventory()) { lab, runner in
            let db4 = lab.address(of: "shop-db-1", on: "shop_default")!
            let db6 = lab.address(of: "shop-db-1", on: "shop_default", ipv6: true)!
            let probes = [db4, db6].flatMap { to in Self.traffic.flatMap { t in
                [Probe(from: .world, to: to, traffic: t), Probe(from: .container("shop-api-1"), to: to, traffic: t)]
            } }
            try runner.startServers(for: probes)
            LabSupport.report(try runner.run(probes), expecting: .answered)

            try lab.run(in: lab.hostNamespace, ["ip", "-4", "route", "add", "blackhole", "\(db4)/32"])
            try lab.run(in: lab.hostNamespace, ["ip", "-6", "route", "add", "blackhole", "\(db6)/128"])
            let routed = try runner.run(probes.filter { $0.from == .world })
            LabSupport.report(routed, expecting: .timedOut)
            // Bridged traffic between containers does not look at the host's routes.
            LabSupport.report(try runner.run(probes.filter { $0.from != .world }), expecting: .answered)

            let port = lab.layout.node("shop-db-1")!.links[0].hostInterface
            try lab.run(in: lab.hostNamespace, ["ip", "link", "set", port, "down"])
            LabSupport.report(try runner.run(probes.filter { $0.from != .world }), expecting: .timedOut)
        }
    }

    @Test func twoHundredProbesFinishInAFewSeconds() throws {
        let inventory = try LabSupport.exampleInventory()
        try LabSupport.withLab(inventory) { lab, runner in
            let pairs = LabSupport.sharedNetworkPairs(inventory)
            var answered: [Probe] = []
            var i = 0
            while answered.count < 200 {
                let pair = pairs[i % pairs.count]
                let t = Self.traffic[(i / pairs.count) % 3]
                answered.append(Probe(from: .container(pair.from), to: pair.addresses[i % pair.addresses.count], traffic: t))
                i += 1
            }
            try runner.startServers(for: answered)
            var start = ContinuousClock.now
            let results = try runner.run(answered)
            print("lab: 200 answered probes in \(ContinuousClock.now - start)")
            LabSupport.report(results, expecting: .answered)

            // Half of them dropped (port down), half answered: about one timeout in all.
            let port = lab.layout.node("shop-db-1")!.links[0].hostInterface
            try lab.run(in: lab.hostNamespace, ["ip", "link", "set", port, "down"])
            let db = lab.addresses(of: .container("shop-db-1"))
            let dropped = (0..<100).map { Probe(from: .container("shop-api-1"), to: db[$0 % 2], traffic: Self.traffic[$0 % 3]) }
            start = ContinuousClock.now
            let mixed = try runner.run(Array(answered.prefix(100)) + dropped)
            print("lab: 100 answered + 100 dropped probes in \(ContinuousClock.now - start)")
            let involvesDB = { (p: Probe) in db.contains(p.to) || p.from == .container("shop-db-1") }
            LabSupport.report(mixed.prefix(100).filter { !involvesDB($0.probe) }, expecting: .answered)
            LabSupport.report(Array(mixed.suffix(100)), expecting: .timedOut)
        }
    }
}

/// The whole matrix of the example lab, as `verify` will run it, against the oracle of a host with no
/// firewall: everything passes, including between networks (the lab routes between bridges and does
/// not emulate Docker's inter-network isolation).
@Suite(.enabled(if: LabSupport.enabled, "needs root (or CI=true, where it must fail instead of skip)"))
struct TruthTableTests {
    @Test func fullMatrixWithoutFirewallMatchesAnAllowAllOracle() throws {
        let inventory = try LabSupport.exampleInventory()
        let start = ContinuousClock.now
        try LabSupport.withLab(inventory) { lab, runner in
            print("lab: example lab built in \(ContinuousClock.now - start)")
            let probes = lab.probeMatrix(traffic: [.tcp(8080), .udp(5353), .icmp])
            #expect(probes == probes.sorted())
            let t0 = ContinuousClock.now
            let rows = try runner.truthTable(probes) { _, _ in (true, "no firewall") }
            print("lab: \(rows.count)-probe matrix in \(ContinuousClock.now - t0)")
            let mismatches = rows.filter { !$0.matches }
            #expect(mismatches.isEmpty, "\(mismatches.prefix(20).map(\.description).joined(separator: "\n"))")

            // Source addresses the evaluator should judge by.
            let prometheusToResolver = Probe(from: .container("monitoring-prometheus-1"), to: IPAddress("172.22.0.2")!, traffic: .icmp)
            #expect(lab.sourceAddress(for: prometheusToResolver) == IPAddress("172.22.0.10"))
            let viaDefault = Probe(from: .container("monitoring-prometheus-1"), to: IPAddress("203.0.113.10")!, traffic: .icmp)
            #expect(lab.sourceAddress(for: viaDefault) == IPAddress("172.22.0.10"), "default route is on infra, first by name")
            #expect(lab.sourceAddress(for: Probe(from: .world, to: IPAddress("fd00:20::2")!, traffic: .icmp)) == IPAddress("2001:db8:ffff::10"))
        }
    }
}
