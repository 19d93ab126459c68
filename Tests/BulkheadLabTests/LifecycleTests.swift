import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite(.enabled(if: LabSupport.enabled, "needs root (or CI=true, where it must fail instead of skip)"))
struct LifecycleTests {
    @Test func destroyLeavesNoNamespace() throws {
        let lab = try Lab(inventory: LabSupport.exampleInventory())
        defer { lab.destroy() }
        let before = try LabSupport.namespaces().filter { $0.hasPrefix(lab.name + "-") }
        #expect(before.count == 11)
        #expect(before.contains(lab.hostNamespace) && before.contains(lab.worldNamespace))
        #expect(before.contains(lab.namespace(ofContainer: "shop-api-1")!))
        // Servers hold sockets in the namespaces; destroy still removes every name.
        let runner = ProbeRunner(lab: lab)
        try runner.startServers(tcp: [80], on: [.host, .world, .container("shop-api-1")])
        #expect(lab.destroy().isEmpty)
        #expect(try LabSupport.namespaces().filter { $0.hasPrefix(lab.name + "-") } == [])
        #expect(lab.destroy().isEmpty, "destroy is idempotent")
        #expect(throws: LabError.destroyed(lab.name)) { try lab.removeContainer(named: "shop-api-1") }
        #expect(throws: LabError.foreignNamespace("bh-other", lab: lab.name)) { try lab.run(in: "bh-other", ["true"]) }
    }

    @Test func deinitDestroys() throws {
        var name = ""
        do {
            let lab = try Lab(inventory: Inventory(networks: [Network(name: "n", subnets: [IPNetwork("10.7.0.0/24")!])]))
            name = lab.name
            #expect(try LabSupport.namespaces().contains(lab.hostNamespace))
        }
        #expect(try LabSupport.namespaces().filter { $0.hasPrefix(name + "-") } == [])
    }

    @Test func cleanupStaleRemovesOnlyLabsOfDeadProcesses() throws {
        let prefix = "bhlabstale\(UInt32.random(in: 0..<1_000_000))"
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let deadName = "\(prefix)-\(dead.processIdentifier)-1-host"
        let liveName = "\(prefix)-\(getpid())-1-host"
        let ip = SystemCommandRunner()
        _ = try ip.run(["ip", "netns", "add", deadName], purpose: "test")
        _ = try ip.run(["ip", "netns", "add", liveName], purpose: "test")
        defer {
            _ = try? ip.run(["ip", "netns", "del", deadName], purpose: "test")
            _ = try? ip.run(["ip", "netns", "del", liveName], purpose: "test")
        }
        #expect(try Lab.cleanupStale(prefix: prefix) == [deadName])
        #expect(try LabSupport.namespaces().filter { $0.hasPrefix(prefix) } == [liveName])
        #expect(try Lab.cleanupStale(prefix: prefix, includingLiveOwners: true) == [liveName])
    }

    @Test func containersComeAndGo() throws {
        try LabSupport.withLab(LabSupport.exampleInventory()) { lab, runner in
            let extra = Container(name: "shop-extra-1", labels: ["com.docker.compose.service": "extra"],
                                  networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.50"), ipv6: IPAddress("fd00:20::50"))])
            try lab.addContainer(extra)
            #expect(lab.containers.contains("shop-extra-1"))
            // The lab reports it as Docker would: with the MAC and host-side port of its veth.
            let reported = try #require(lab.inventory.containers.first { $0.name == "shop-extra-1" })
            #expect(reported.addresses == extra.addresses && reported.labels == extra.labels)
            let node = try #require(lab.layout.node("shop-extra-1"))
            #expect(reported.networks["shop_default"]?.port == node.links.first?.hostInterface)
            #expect(reported.networks["shop_default"]?.mac == "02:42:ac:14:00:32")
            let probes = [IPAddress("172.20.0.50")!, IPAddress("fd00:20::50")!].flatMap { to in
                [Probe(from: .container("shop-frontend-1"), to: to, traffic: .tcp(9000)),
                 Probe(from: .world, to: to, traffic: .udp(9000)),
                 Probe(from: .host, to: to, traffic: .icmp)]
            }
            try runner.startServers(for: probes)
            LabSupport.report(try runner.run(probes), expecting: .answered)
            let back = try runner.run(Probe(from: .container("shop-extra-1"), to: IPAddress("172.20.0.2")!, traffic: .icmp))
            #expect(back.outcome == .answered)

            let ns = try #require(lab.namespace(ofContainer: "shop-extra-1"))
            // Servers left running on purpose: removal must cut the container off even while a socket
            // keeps its namespace alive.
            try lab.removeContainer(named: "shop-extra-1")
            #expect(try !LabSupport.namespaces().contains(ns))
            LabSupport.report(try runner.run(probes.filter { $0.from != .host }), expecting: .timedOut)
            #expect(throws: ProbeError.unknownParty(.container("shop-extra-1"))) {
                try runner.run(Probe(from: .container("shop-extra-1"), to: IPAddress("172.20.0.2")!, traffic: .icmp))
            }
            #expect(throws: LabError.unknownContainer("shop-extra-1")) { try lab.removeContainer(named: "shop-extra-1") }
            #expect(throws: LabError.duplicateContainer("shop-db-1")) {
                try lab.addContainer(Container(name: "shop-db-1", labels: [:], networks: [:]))
            }

            // The same name again gets a fresh namespace and fresh servers.
            try lab.addContainer(extra)
            try runner.startServers(for: probes)
            LabSupport.report(try runner.run(probes), expecting: .answered)
        }
    }

    @Test func unsupportedTrafficIsAnError() throws {
        try LabSupport.withLab(Inventory()) { lab, runner in
            let gre = Probe(from: .world, to: lab.addresses(of: .host)[0], traffic: .other(47))
            #expect(throws: ProbeError.unsupportedTraffic(gre)) { try runner.run(gre) }
        }
    }
}
