import BulkheadAgent
import BulkheadCompiler
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

// Nested in AgentAgainstDocker (serialized): both use the host's one `inet bulkhead` table and
// remove it at the end, so they must never run at the same time.
extension AgentAgainstDocker {
/// Issue 8 items 1-3 against a real dockerd: the Docker source finds each container's host-side
/// veth (checked against the kernel's own `iflink`/`ifindex`), and while the agent runs, frames
/// sent from inside a container's network namespace (as a container with CAP_NET_RAW can) with
/// another container's source address, in a VLAN tag, or between link-local addresses never
/// reach their target. Does not restart dockerd.
@Suite(.serialized, .enabled(if: DockerE2E.enabled, "needs root and a reachable dockerd (with CI=true it runs, and fails instead)"))
struct PortBindingAgainstDocker {
    struct Host: Encodable {
        var mac: String
        var ipv4: String
        var ipv6: String
        var linklocal: String
    }

    struct Spec: Encodable {
        var sniff_ns: String
        var sniff_if = "eth0"
        var send_ns: String
        var send_if = "eth0"
        var attacker: Host
        var victim: Host
        var impersonated: Host
        var attacks: [String]
        var timeout = 20.0
        var port = 5432
    }

    struct Seen: Decodable {
        var seen: [String]
        var canary: Bool
    }

    @Test(.timeLimit(.minutes(5)))
    func spoofedTaggedAndLinkLocalFramesAreDroppedWhileTheAgentRuns() async throws {
        try await DockerE2E.require()
        let network = try await TestNetwork.make()
        defer { network.remove() }
        let policies = try PolicyDirectory(network: network)
        defer { policies.remove() }
        let kernel = KernelTable()
        defer { kernel.remove() }
        async let webRun = network.run("web-1", service: "web", fixedHost: AgentAgainstDocker.Host.web)
        async let apiRun = network.run("api-1", service: "api", fixedHost: AgentAgainstDocker.Host.api)
        async let dbRun = network.run("db-1", service: "db", fixedHost: AgentAgainstDocker.Host.db)
        let (web, api, db) = try await (webRun, apiRun, dbRun)
        let good = try policies.load()

        // The Docker source finds every container's host-side veth; the kernel agrees.
        let source = HostAwareSource(DockerClient(), portFinder: NetlinkPortFinder())
        let inventory = try await source.snapshot()
        let bridge = try #require(inventory.network(named: network.name)?.bridge)
        var hosts: [String: (Host, ns: String, port: String)] = [:]
        for name in [web, api, db] {
            let c = try #require(inventory.containers.first { $0.name == name })
            let a = try #require(c.networks[network.name])
            let port = try #require(a.port, "no port found for \(name)")
            let mac = try #require(a.mac, "no MAC reported for \(name)")
            let iflink = try await Command.check(["docker", "exec", name, "cat", "/sys/class/net/eth0/iflink"])
            let ifindex = try String(contentsOfFile: "/sys/class/net/\(port)/ifindex", encoding: .utf8)
            #expect(iflink.trimmingCharacters(in: .whitespacesAndNewlines) == ifindex.trimmingCharacters(in: .whitespacesAndNewlines),
                    "\(name): eth0's peer is not \(port)")
            let master = try FileManager.default.destinationOfSymbolicLink(atPath: "/sys/class/net/\(port)/master")
            #expect(master.hasSuffix("/" + bridge), "\(port) is a port of \(master), not of \(bridge)")
            let id = try #require(c.id)
            let ns = try #require(try await DockerClient().networkNamespace(ofContainer: id))
            let ll = try #require(LabLayoutLinkLocal.address(mac: mac))
            let v4 = try #require(a.ipv4), v6 = try #require(a.ipv6)
            hosts[name] = (Host(mac: mac, ipv4: "\(v4)", ipv6: "\(v6)", linklocal: ll), ns, port)
        }
        #expect(inventory.network(named: network.name)?.unboundPorts == nil, "every port of the test bridge belongs to a container")

        try await RunningAgent.with(policies, kernel) { agent in
            try await waitInSync(agent.backend, good, "first reconcile")
            // The bindings are in the kernel (the agent's reconcile uses the same source).
            let wanted = Set([web, api, db].map { hosts[$0]!.port })
            let bound = try await eventually(15) {
                let ports = try agent.backend.dump(table: PortBinding.tableID)?.set(named: PortBinding.ports)?.elements ?? []
                return wanted.isSubset(of: Set(ports.compactMap { if case .value(.ifname(let n))? = $0.key.first { return n } else { return nil } }))
            }
            #expect(bound, "the agent bound every test container to its port")

            // Legitimate traffic: api → db is allowed and still answered.
            #expect(try await probeOnce(from: api, ProbeKind.db.command(network.address(AgentAgainstDocker.Host.db).v4)))

            // From web's namespace: api's source address to db:5432 (allowed for api), a VLAN 0
            // priority-tagged SYN, and TCP/UDP/ICMPv6 between link-local addresses.
            let (w, d, a) = (hosts[web]!, hosts[db]!, hosts[api]!)
            let attacks = ["spoof-tcp4", "spoof-tcp6", "vlan0-tcp4", "vlan0-tcp6", "ll-tcp6", "ll-udp6", "ll-icmp6"]
            let spec = Spec(sniff_ns: d.ns, send_ns: w.ns, attacker: w.0, victim: d.0, impersonated: a.0, attacks: attacks)
            let input = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
            let out = try TestSystem.run(["/usr/bin/python3", TestSystem.repositoryRoot + "/scripts/lab/rawframes.py"], stdin: input)
            guard out.status == 0 else { throw TestSystem.Failure("rawframes.py exited \(out.status): \(out.err)") }
            let seen = try JSONDecoder().decode(Seen.self, from: Data(out.out.utf8))
            #expect(seen.canary, "the canary reached db")
            #expect(seen.seen == [], "frames from web reached db: \(seen.seen)")
            let table = try #require(try agent.backend.dump(table: PortBinding.tableID))
            func count(_ comment: String) -> UInt64 {
                table.rules.first { $0.comment == "port binding: " + comment }.flatMap { r in
                    r.statements.lazy.compactMap { if case .counter(let p, _) = $0 { return p } else { return nil } }.first
                } ?? 0
            }
            #expect(count("IPv4 source not the port's") >= 1)
            #expect(count("ethertype other than IPv4, IPv6, ARP (VLAN, QinQ, PPPoE)") >= 2)
            // The agent reports them per reason. A scrape answers from the last reading of the
            // kernel's counters, refreshed at most once a second while scraped: scrape until the
            // reading holds the drops (10 s: a hang guard).
            var metrics = try await agent.get("/metrics")
            let reported = try await eventually(10, every: .milliseconds(200)) {
                metrics = try await agent.get("/metrics")
                return agent.metric("bulkhead_port_binding_dropped_packets_total", ["reason": "IPv4 source not the port's"]) >= 1
            }
            #expect(reported, "bulkhead_port_binding_dropped_packets_total{reason=\"IPv4 source not the port's\"} never reached 1: \(metrics.body)")
            #expect(metrics.body.contains("bulkhead_port_binding_dropped_packets_total{reason=\"IPv4 source not the port's\"}"), "\(metrics.body)")
        }
    }
}
}

/// The EUI-64 link-local address of a MAC (the kernel's default for a container's eth0).
enum LabLayoutLinkLocal {
    static func address(mac: String) -> String? {
        let parts = mac.split(separator: ":").compactMap { UInt8($0, radix: 16) }
        guard parts.count == 6 else { return nil }
        let b = [parts[0] ^ 0x02, parts[1], parts[2], 0xff, 0xfe, parts[3], parts[4], parts[5]]
        return "fe80::" + stride(from: 0, to: 8, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}

extension AgentAgainstDocker.PortBindingAgainstDocker {
    /// Sends `attacks` (names of scripts/lab/rawframes.py) from `attacker`'s network namespace to
    /// `victim`, with `impersonated`'s addresses where an attack spoofs; returns what arrived.
    /// The three are running containers of `network`.
    static func sendFrames(_ attacks: [String], from attacker: String, to victim: String, impersonating impersonated: String,
                           network: TestNetwork) async throws -> Seen {
        let inventory = try await HostAwareSource(DockerClient(), portFinder: NetlinkPortFinder()).snapshot()
        func host(_ name: String) async throws -> (host: Host, ns: String) {
            let c = try #require(inventory.containers.first { $0.name == name }, "\(name) is not in Docker's inventory")
            let a = try #require(c.networks[network.name], "\(name) is not on \(network.name)")
            let mac = try #require(a.mac), v4 = try #require(a.ipv4), v6 = try #require(a.ipv6)
            let id = try #require(c.id)
            let ns = try #require(try await DockerClient().networkNamespace(ofContainer: id))
            let ll = try #require(LabLayoutLinkLocal.address(mac: mac))
            return (Host(mac: mac, ipv4: "\(v4)", ipv6: "\(v6)", linklocal: ll), ns)
        }
        let (a, v, i) = (try await host(attacker), try await host(victim), try await host(impersonated))
        let spec = Spec(sniff_ns: v.ns, send_ns: a.ns, attacker: a.host, victim: v.host, impersonated: i.host, attacks: attacks)
        let input = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        let out = try TestSystem.run(["/usr/bin/python3", TestSystem.repositoryRoot + "/scripts/lab/rawframes.py"], stdin: input)
        guard out.status == 0 else { throw TestSystem.Failure("rawframes.py exited \(out.status): \(out.err)") }
        return try JSONDecoder().decode(Seen.self, from: Data(out.out.utf8))
    }
}
