import BulkheadInventory
@testable import BulkheadLab
import Testing

/// The plan of a lab, without root: names, addresses, routes, and the commands it would run.
struct LayoutTests {
    @Test func exampleInventoryLayout() throws {
        let layout = try LabLayout(name: "bhlab-1-1", inventory: LabSupport.exampleInventory())
        #expect(layout.bridges.map(\.interface) == ["br-infra", "br-monitoring", "br-shop_default"])
        #expect(layout.bridges.map { $0.addresses.map(\.description) } == [
            ["172.22.0.1/16", "fd00:22::1/64"], ["172.21.0.1/16", "fd00:21::1/64"], ["172.20.0.1/16", "fd00:20::1/64"],
        ])
        #expect(layout.nodes.count == 9)
        #expect(layout.nodes.map(\.container) == layout.nodes.map(\.container).sorted())
        let prometheus = try #require(layout.node("monitoring-prometheus-1"))
        #expect(prometheus.namespace == "bhlab-1-1-c-monitoring-prometheus-1")
        #expect(prometheus.links.map(\.network) == ["infra", "monitoring", "shop_default"])
        #expect(prometheus.links.map(\.containerInterface) == ["eth0", "eth1", "eth2"])
        // The first network by name carries the default routes.
        #expect(prometheus.defaultGatewayV4 == IPAddress("172.22.0.1"))
        #expect(prometheus.defaultGatewayV6 == IPAddress("fd00:22::1"))
        #expect(prometheus.links[2].addresses.map(\.description) == ["172.20.0.10/16", "fd00:20::10/64"])
        #expect(prometheus.links[2].macAddress == "02:42:ac:14:00:0a")
        let names = layout.bridges.map(\.interface) + layout.nodes.flatMap { $0.links.flatMap { [$0.hostInterface, $0.containerInterface] } }
        #expect(names.allSatisfy { $0.utf8.count <= 15 }, "interface names over 15 bytes: \(names.filter { $0.utf8.count > 15 })")
        let hostSide = layout.nodes.flatMap { $0.links.map(\.hostInterface) }
        #expect(Set(hostSide).count == hostSide.count)
        #expect(layout.owner(of: IPAddress("172.20.0.1")!) == .host)
        #expect(layout.owner(of: IPAddress("2001:db8::10")!) == .world)
        #expect(layout.owner(of: IPAddress("fd00:22::2")!) == .container("infra-resolver-1"))
        #expect(layout.owner(of: IPAddress("10.1.1.1")!) == nil)
        #expect(layout.world.routedPrefixes.map(\.description) == [
            "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/64", "2001:db8:ffff::/64",
        ])
    }

    @Test func missingGatewaysDefaultToTheFirstAddress() throws {
        let inventory = Inventory(
            networks: [Network(name: "n", subnets: [IPNetwork("10.5.0.0/24")!, IPNetwork("fd00:5::/64")!])],
            containers: [Container(name: "a", labels: [:], networks: ["n": Attachment(ipv4: IPAddress("10.5.0.7"), ipv6: IPAddress("fd00:5::7"))])])
        let layout = try LabLayout(name: "x", inventory: inventory)
        #expect(layout.bridges[0].addresses.map(\.description) == ["10.5.0.1/24", "fd00:5::1/64"])
        #expect(layout.nodes[0].defaultGatewayV4 == IPAddress("10.5.0.1"))
        #expect(layout.nodes[0].defaultGatewayV6 == IPAddress("fd00:5::1"))
    }

    @Test func inconsistentInventoriesAreRejectedWithTheReason() throws {
        let net = Network(name: "n", subnets: [IPNetwork("10.5.0.0/24")!])
        let unknownNetwork = Inventory(networks: [net], containers: [
            Container(name: "a", labels: [:], networks: ["elsewhere": Attachment(ipv4: IPAddress("10.5.0.2"))])])
        #expect(throws: LabError.invalidInventory("container 'a' is attached to network 'elsewhere', which the inventory does not list")) {
            try LabLayout(name: "x", inventory: unknownNetwork)
        }
        let outside = Inventory(networks: [net], containers: [
            Container(name: "a", labels: [:], networks: ["n": Attachment(ipv4: IPAddress("10.6.0.2"))])])
        #expect(throws: LabError.invalidInventory("address 10.6.0.2 of container 'a' is in no subnet of network 'n'")) {
            try LabLayout(name: "x", inventory: outside)
        }
        let overlapsWorld = Inventory(networks: [Network(name: "n", subnets: [IPNetwork("203.0.113.0/25")!])])
        #expect(throws: LabError.invalidInventory("world address 203.0.113.10/24 overlaps subnet 203.0.113.0/25 of network 'n': choose other world addresses")) {
            try LabLayout(name: "x", inventory: overlapsWorld)
        }
    }

    /// Every command targets a lab namespace: nothing is ever created in, or run in, the initial one.
    @Test func everyCommandTargetsALabNamespace() throws {
        let recorder = RecordingRunner()
        let lab = try Lab(inventory: LabSupport.exampleInventory(), runner: recorder)
        lab.destroy()
        let commands = recorder.commands
        #expect(commands.count > 50)
        for c in commands {
            #expect(c.first == "ip", "\(c)")
            let target: String? = switch (c[1], c.count > 2 ? c[2] : "") {
            case ("-n", _): c[2]
            case ("netns", "add"), ("netns", "exec"), ("netns", "del"): c[3]
            default: nil
            }
            #expect(target?.hasPrefix(lab.name + "-") == true, "command outside the lab: \(c.joined(separator: " "))")
            if c.contains("veth") {
                #expect(c[c.firstIndex(of: "peer")! ..< c.endIndex].contains("netns"), "veth peer would land in the initial namespace: \(c)")
            }
        }
        #expect(commands.contains(["ip", "netns", "exec", lab.hostNamespace, "sysctl", "-n", "net.ipv4.ip_forward",
                                   "net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]))
    }
}
