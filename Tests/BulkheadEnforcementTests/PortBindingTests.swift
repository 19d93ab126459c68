import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

/// Issue 8 items 2 and 3, proved by traffic: with the example policies applied, hand-made frames
/// from shop-frontend-1 (a container with CAP_NET_RAW) claiming shop-api-1's addresses, or wrapped
/// in VLAN / QinQ / PPPoE headers, never reach shop-db-1 (a packet socket in db's namespace
/// watches), and are counted on the bridge table's drop rules. ARP and neighbour-advert poisoning
/// leave db's neighbour entries for api as they were.
@Suite(.serialized) struct PortBindingTests {
    struct Host: Encodable {
        var mac: String
        var ipv4: String
        var ipv6: String
        var linklocal: String
    }

    struct Spec: Encodable {
        var sniff_ns: String
        var sniff_if: String
        var send_ns: String
        var send_if: String
        var attacker: Host
        var victim: Host
        var impersonated: Host
        var attacks: [String]
        var timeout: Double
    }

    struct Seen: Decodable {
        var seen: [String]
        var canary: Bool
    }

    static let network = "shop_default"

    static func host(_ env: Enforced, _ name: String) throws -> (Host, ns: String, interface: String) {
        let node = try #require(env.lab.layout.node(name))
        let link = try #require(node.links.first { $0.network == network })
        let mac = try #require(link.macAddress)
        let v4 = try #require(link.addresses.first { $0.isIPv4 }?.address)
        let v6 = try #require(link.addresses.first { !$0.isIPv4 }?.address)
        let ll = try #require(LabLayout.linkLocal(mac: mac))
        return (Host(mac: mac, ipv4: "\(v4)", ipv6: "\(v6)", linklocal: "\(ll)"), node.namespace, link.containerInterface)
    }

    /// Sends `attacks` from frontend to db impersonating api; returns what db's interface saw.
    static func attack(_ env: Enforced, _ attacks: [String]) throws -> Seen {
        let (frontend, fns, fif) = try host(env, "shop-frontend-1")
        let (db, dns, dif) = try host(env, "shop-db-1")
        let (api, _, _) = try host(env, "shop-api-1")
        let spec = Spec(sniff_ns: dns, sniff_if: dif, send_ns: fns, send_if: fif, attacker: frontend, victim: db,
                        impersonated: api, attacks: attacks, timeout: 20)
        let input = String(decoding: try JSONEncoder().encode(spec), as: UTF8.self)
        let out = try TestSystem.run(["/usr/bin/python3", TestSystem.repositoryRoot + "/scripts/lab/rawframes.py"], stdin: input)
        guard out.status == 0 else {
            throw TestSystem.Failure("rawframes.py exited \(out.status) (python3-scapy installed? scripts/lib/common.sh installs it): \(out.err)")
        }
        let seen = try JSONDecoder().decode(Seen.self, from: Data(out.out.utf8))
        #expect(seen.canary, "the canary frame reached db, so every earlier frame has arrived or was dropped")
        return seen
    }

    /// Packets counted by the bridge table's rule with this comment.
    static func dropped(_ env: Enforced, _ comment: String) throws -> UInt64 {
        let table = try #require(try env.backend.dump(table: PortBinding.tableID))
        let rule = try #require(table.rules.first { $0.comment == "port binding: " + comment }, "no rule '\(comment)'")
        for case .counter(let packets, _) in rule.statements { return packets }
        return 0
    }

    /// Legitimate traffic is unchanged: api → db:5432 answered, frontend → db:5432 dropped.
    static func legitimateTrafficUnchanged(_ env: Enforced) throws {
        let db4 = try #require(env.lab.address(of: "shop-db-1", on: network))
        let db6 = try #require(env.lab.address(of: "shop-db-1", on: network, ipv6: true))
        let probes = [Probe(from: .container("shop-api-1"), to: db4, traffic: .tcp(5432)),
                      Probe(from: .container("shop-api-1"), to: db6, traffic: .tcp(5432)),
                      Probe(from: .container("shop-frontend-1"), to: db4, traffic: .tcp(5432))]
        try env.runner.startServers(for: probes)
        let results = try env.runner.run(probes)
        #expect(results.map(\.outcome) == [.answered, .answered, .timedOut], "\(results)")
    }

    @Test func spoofedSourcesNeverReachTheVictim() throws {
        let env = try Enforced(policies: try examplePolicies(), inventory: try exampleInventory())
        defer { env.destroy() }
        try Self.legitimateTrafficUnchanged(env)
        let attacks = ["spoof-tcp4", "spoof-udp4", "spoof-icmp4", "spoof-tcp6", "spoof-udp6", "spoof-icmp6",
                       "spoofmac-tcp4", "spoofmac-tcp6"]
        let seen = try Self.attack(env, attacks)
        #expect(seen.seen == [], "spoofed frames reached shop-db-1: \(seen.seen)")
        #expect(try Self.dropped(env, "IPv4 source not the port's") >= 3)
        #expect(try Self.dropped(env, "IPv6 source not the port's") >= 3)
        #expect(try Self.dropped(env, "source MAC not the port's") >= 2)
        try Self.legitimateTrafficUnchanged(env)
    }

    @Test func taggedFramesNeverReachTheVictim() throws {
        let env = try Enforced(policies: try examplePolicies(), inventory: try exampleInventory())
        defer { env.destroy() }
        let attacks = ["vlan0-tcp4", "vlan0-tcp6", "vlan5-tcp4", "vlan5-tcp6", "qinq-tcp4", "qinq-tcp6", "pppoe-tcp4", "pppoe-tcp6"]
        let seen = try Self.attack(env, attacks)
        #expect(seen.seen == [], "tagged frames reached shop-db-1: \(seen.seen)")
        #expect(try Self.dropped(env, "ethertype other than IPv4, IPv6, ARP (VLAN, QinQ, PPPoE)") >= UInt64(attacks.count))
        try Self.legitimateTrafficUnchanged(env)
    }

    @Test func arpAndNeighbourAdvertPoisoningLeaveDbsEntriesAlone() throws {
        let env = try Enforced(policies: try examplePolicies(), inventory: try exampleInventory())
        defer { env.destroy() }
        let (api, _, _) = try Self.host(env, "shop-api-1")
        let (_, dns, dif) = try Self.host(env, "shop-db-1")
        // db knows api (as after any exchange); the entry is stale, so the kernel would take an update.
        for a in [api.ipv4, api.ipv6] {
            try env.lab.run(in: dns, ["ip", "neigh", "replace", a, "lladdr", api.mac, "dev", dif, "nud", "stale"])
        }
        let seen = try Self.attack(env, ["arp-poison", "na-poison"])
        #expect(seen.seen == [], "poisoning frames reached shop-db-1: \(seen.seen)")
        for a in [api.ipv4, api.ipv6] {
            let entry = try env.lab.run(in: dns, ["ip", "neigh", "show", a, "dev", dif])
            #expect(entry.contains("lladdr \(api.mac)"), "db's entry for api (\(a)) changed: \(entry)")
        }
        #expect(try Self.dropped(env, "ARP sender not the port's") >= 1)
        #expect(try Self.dropped(env, "neighbour advert for an address not the port's") >= 1)
    }

    /// A port the inventory names without a MAC (the source could not read it) is closed:
    /// everything from it is dropped, and everything else keeps working.
    @Test func portWithoutMACIsClosed() throws {
        let env0 = try Enforced(policies: try examplePolicies(), inventory: try exampleInventory())
        defer { env0.destroy() }
        var env = env0
        let i = try #require(env.inventory.containers.firstIndex { $0.name == "shop-api-1" })
        env.inventory.containers[i].networks[Self.network]?.mac = nil
        try env.apply()
        let db4 = try #require(env.lab.address(of: "shop-db-1", on: Self.network))
        let probe = Probe(from: .container("shop-api-1"), to: db4, traffic: .tcp(5432))
        try env.runner.startServers(for: [probe])
        #expect(try env.runner.run([probe]).map(\.outcome) == [.timedOut])
        #expect(try Self.dropped(env, "source MAC not the port's") >= 1)
    }
}
