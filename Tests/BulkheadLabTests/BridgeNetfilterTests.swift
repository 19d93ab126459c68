import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Foundation
import Testing

/// What the enforcement work relies on: in the lab's host namespace, traffic between two containers
/// of one bridge passes the inet `forward` hook, per address family, and only in that namespace.
@Suite(.enabled(if: LabSupport.enabled, "needs root (or CI=true, where it must fail instead of skip)"))
struct BridgeNetfilterTests {
    @Test func bridgedTrafficTraversesTheInetForwardHook() throws {
        let initial = try String(contentsOfFile: "/proc/sys/net/bridge/bridge-nf-call-iptables", encoding: .utf8)
        try LabSupport.withLab(LabSupport.exampleInventory()) { lab, runner in
            let host = lab.hostNamespace
            let sysctls = try lab.run(in: host, ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
                                                 "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"])
            #expect(sysctls == "1\n1\n1\n1\n")

            // nft runs only inside the lab's host namespace, never in the initial one.
            try lab.run(in: host, ["nft", "add table inet labtest; add chain inet labtest forward { type filter hook forward priority 0; policy accept; }; add rule inet labtest forward tcp dport 7001 counter drop"])
            let db = lab.addresses(of: .container("shop-db-1"))   // v4 and v6 on shop_default, the frontend's bridge
            let probes = db.flatMap { to in [7000, 7001].map { Probe(from: .container("shop-frontend-1"), to: to, traffic: .tcp(UInt16($0))) } }
            try runner.startServers(for: probes)
            let results = try runner.run(probes)
            #expect(results.map(\.outcome) == [.answered, .timedOut, .answered, .timedOut], "\(results)")
            let listed = try lab.run(in: host, ["nft", "list", "chain", "inet", "labtest", "forward"])
            #expect(listed.contains("counter packets 2"), "both families hit the rule once: \(listed)")

            // Turning the IPv4 call off in this namespace lets bridged IPv4 bypass the hook; IPv6 stays filtered.
            try lab.run(in: host, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"])
            let off = try runner.run(probes)
            #expect(off.map(\.outcome) == [.answered, .answered, .answered, .timedOut], "\(off)")
        }
        let after = try String(contentsOfFile: "/proc/sys/net/bridge/bridge-nf-call-iptables", encoding: .utf8)
        #expect(after == initial, "the initial namespace's setting must not change")
    }
}
