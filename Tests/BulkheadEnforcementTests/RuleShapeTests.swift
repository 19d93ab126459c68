import BulkheadCompiler
import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import BulkheadTestSupport
import Foundation
import Testing

/// The shape of the rules (issue 10: cold apply in every shape): several ports and ranges of a flow
/// live in one named set per list, shared by every rule with that list, and a family without
/// addresses gets no kernel object at all. Both proved on an applied table, by traffic and by
/// what `nft` lists.
@Suite(.serialized) struct RuleShapeTests {
    static let yaml = """
    segment: s
    networks: [n]
    services:
      web:
        labels: {role: web}
      api:
        labels: {role: api}
      client:
        labels: {role: client}
    flows:
      - from: client
        to: web
        ports: [tcp/80, tcp/443, tcp/8000-8003, udp/53, udp/5000-5002]
      - from: client
        to: api
        ports: [tcp/80, tcp/443, tcp/8000-8003]

    """

    static func inventory(v4: Bool, v6: Bool, octet: Int) -> Inventory {
        let subnets = (v4 ? [IPNetwork("10.\(octet).0.0/24")!] : []) + (v6 ? [IPNetwork("fd00:\(octet)::/64")!] : [])
        let gateways = (v4 ? [IPAddress("10.\(octet).0.1")!] : []) + (v6 ? [IPAddress("fd00:\(octet)::1")!] : [])
        func att(_ i: Int) -> BulkheadInventory.Attachment {
            BulkheadInventory.Attachment(ipv4: v4 ? IPAddress("10.\(octet).0.\(i)") : nil, ipv6: v6 ? IPAddress("fd00:\(octet)::\(i)") : nil)
        }
        return Inventory(networks: [Network(name: "n", subnets: subnets, gateways: gateways)],
                         containers: [Container(name: "web", labels: ["role": "web"], networks: ["n": att(2)]),
                                      Container(name: "api", labels: ["role": "api"], networks: ["n": att(3)]),
                                      Container(name: "client", labels: ["role": "client"], networks: ["n": att(4)])])
    }

    /// `nft list table inet bulkhead` in the lab host.
    static func listing(_ env: Enforced) throws -> String {
        let out = try TestSystem.run(["ip", "netns", "exec", env.lab.hostNamespace, "nft", "list", "table", "inet", "bulkhead"])
        #expect(out.status == 0, "nft list: \(out.err)")
        return out.out
    }

    @Test func multiPortAndRangeFlowAllowsExactlyItsPorts() throws {
        let env = try Enforced(policies: try policies(Self.yaml), inventory: Self.inventory(v4: true, v6: true, octet: 71))
        defer { env.destroy() }
        // Inside, at the edges and just outside every port and range of the flows.
        let tcp: [UInt16] = [79, 80, 81, 442, 443, 444, 7999, 8000, 8002, 8003, 8004]
        let udp: [UInt16] = [52, 53, 54, 4999, 5000, 5002, 5003]
        let rows = try env.verify(tcp.map { .tcp($0) } + udp.map { .udp($0) },
                                  parties: [.container("client"), .container("web"), .container("api")])
        expectAllMatch(rows)
        expectNaiveAgrees(rows, lab: env.lab, naive: env.naive)
        let toWeb: Set<String> = ["tcp/80", "tcp/443", "tcp/8000", "tcp/8002", "tcp/8003", "udp/53", "udp/5000", "udp/5002"]
        let fromClient = rows.filter { $0.result.probe.from == .container("client") }
        let web = [IPAddress("10.71.0.2")!, IPAddress("fd00:71::2")!], api = [IPAddress("10.71.0.3")!, IPAddress("fd00:71::3")!]
        func passed(_ to: [IPAddress]) -> Set<String> {
            Set(fromClient.filter { to.contains($0.result.probe.to) && !$0.dropped }.map { "\($0.result.probe.traffic)" })
        }
        #expect(fromClient.filter { web.contains($0.result.probe.to) }.count == 2 * (tcp.count + udp.count))
        #expect(passed(web) == toWeb, "client -> web answered on exactly the flow's ports, both families")
        #expect(passed(api) == Set(toWeb.filter { $0.hasPrefix("tcp/") }))
        // The two flows' TCP lists are equal: one named set, looked up by both rules of each family.
        let listed = try Self.listing(env)
        #expect(listed.contains("set tcp_80_443_8000-8003 {"), "\(listed)")
        #expect(listed.contains("set udp_53_5000-5002 {"))
        #expect(listed.components(separatedBy: "tcp dport @tcp_80_443_8000-8003").count - 1 == 4)
        #expect(!listed.contains("dport {"), "no anonymous port set is left")
    }

    @Test(arguments: [(true, false), (false, true)])
    func aFamilyWithoutAddressesHasNoKernelObjects(v4: Bool, v6: Bool) throws {
        let env = try Enforced(policies: try policies(Self.yaml), inventory: Self.inventory(v4: v4, v6: v6, octet: v4 ? 72 : 73))
        defer { env.destroy() }
        let listed = try Self.listing(env)
        let (present, absent) = v4 ? ("_v4", "_v6") : ("_v6", "_v4")
        let (presentField, absentField) = v4 ? ("ip saddr", "ip6 ") : ("ip6 saddr", "ip saddr")
        #expect(listed.contains("set managed\(present)") && listed.contains(presentField), "\(listed)")
        #expect(!listed.contains(absent), "no set or map of the absent family: \(listed)")
        #expect(!listed.contains(absentField) && !listed.contains(absentField.replacingOccurrences(of: "saddr", with: "daddr")))
        if v4 { #expect(!listed.contains("nfproto ipv6") && !listed.contains("nd-neighbor-solicit")) }
        // Still enforced: the flows' ports pass, others do not.
        let rows = try env.verify([.tcp(80), .tcp(8001), .tcp(22), .udp(53)],
                                  parties: [.container("client"), .container("web"), .container("api")])
        expectAllMatch(rows)
        #expect(rows.contains { $0.result.probe.from == .container("client") && $0.result.probe.traffic == .tcp(8001) && !$0.dropped })
        #expect(rows.contains { $0.result.probe.from == .container("client") && $0.result.probe.traffic == .tcp(22) && $0.dropped })
    }
}
