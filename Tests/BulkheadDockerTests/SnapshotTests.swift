import BulkheadInventory
import Foundation
import Testing
@testable import BulkheadDocker

/// `InventorySnapshot.render` writes what `InventoryLoader` reads back, whatever the labels hold.
struct SnapshotTests {
    /// The loader records where each entry was in the file; the model from Docker has no file.
    static func withoutSources(_ inventory: Inventory) -> Inventory {
        var copy = inventory
        for i in copy.networks.indices { copy.networks[i].source = nil }
        for i in copy.containers.indices { copy.containers[i].source = nil }
        return copy
    }

    static let awkwardLabels: [String: String] = [
        "com.docker.compose.project": "shop",
        "com.docker.compose.service": "frontend",
        "empty": "",
        "null-word": "null",
        "tilde": "~",
        "yes": "yes",
        "octal": "0755",
        "version": "1.0",
        "date": "2024-01-01",
        "colon": "a: b",
        "hash": "x #y",
        "flow": "[1, {2}]",
        "quote": "say \"hi\" \\ back",
        "newline": "line1\nline2",
        "tab": "a\tb",
        "control": "bell\u{07}",
        "unicode": "café ☕︎ 日本",
        "leading-dash": "- item",
        "spaces": "  padded  ",
        "with space key": "v",
        "key:colon": "v",
        "url": "https://example.com/a?b=c&d",
    ]

    static let sample = Inventory(
        networks: [
            Network(name: "shop_default", subnets: [IPNetwork("172.20.0.0/16")!, IPNetwork("fd00:20::/64")!],
                    gateways: [IPAddress("172.20.0.1")!, IPAddress("fd00:20::1")!]),
            Network(name: "bridge", subnets: [IPNetwork("172.17.0.0/16")!], gateways: [IPAddress("172.17.0.1")!]),
            Network(name: "host", subnets: []),
        ],
        containers: [
            Container(name: "shop-frontend-1", id: "4f2a9c", labels: awkwardLabels,
                      networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.2")!, ipv6: IPAddress("fd00:20::2")!)]),
            Container(name: "shop-api-1", id: nil, labels: [:], networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.3")!)]),
            Container(name: "pending", id: "0123", labels: ["a": "b"], networks: ["shop_default": Attachment()]),
            Container(name: "sidecar", id: "77", labels: [:], networks: [:]),
        ]
    )

    @Test func roundTripsThroughTheLoader() throws {
        let yaml = InventorySnapshot.render(Self.sample, header: "bulkhead inventory\nfrom a test")
        let (loaded, diagnostics) = InventoryLoader.load(Array(yaml.utf8), file: "snapshot.yaml")
        #expect(diagnostics.isEmpty, "\(diagnostics)\n\(yaml)")
        let inventory = try #require(loaded)
        #expect(Set(Self.withoutSources(inventory).containers) == Set(Self.sample.containers))
        #expect(Set(Self.withoutSources(inventory).networks) == Set(Self.sample.networks))
    }

    @Test func outputIsSortedAndStable() {
        var shuffled = Self.sample
        shuffled.networks.reverse()
        shuffled.containers.shuffle()
        #expect(InventorySnapshot.render(shuffled) == InventorySnapshot.render(Self.sample))
    }

    @Test func matchesTheDocumentedFormat() {
        let inventory = Inventory(
            networks: [Network(name: "shop_default", subnets: [IPNetwork("172.20.0.0/16")!, IPNetwork("fd00:20::/64")!])],
            containers: [Container(name: "shop-frontend-1", id: "4f2a9c",
                                   labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "frontend"],
                                   networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.2")!, ipv6: IPAddress("fd00:20::2")!)])]
        )
        #expect(InventorySnapshot.render(inventory) == """
            networks:
              - name: shop_default
                subnets: [172.20.0.0/16, "fd00:20::/64"]
            containers:
              - name: shop-frontend-1
                id: 4f2a9c
                labels:
                  com.docker.compose.project: shop
                  com.docker.compose.service: frontend
                networks:
                  shop_default: {ipv4: 172.20.0.2, ipv6: "fd00:20::2"}

            """)
        #expect(InventorySnapshot.render(Inventory()) == "networks: []\ncontainers: []\n")
    }

    @Test func scalarsArePlainOnlyWhenUnambiguous() {
        #expect(InventorySnapshot.scalar("shop_default") == "shop_default")
        #expect(InventorySnapshot.scalar("172.20.0.0/16") == "172.20.0.0/16")
        #expect(InventorySnapshot.scalar("fd00::1") == "\"fd00::1\"")
        #expect(InventorySnapshot.scalar("null") == "\"null\"")
        #expect(InventorySnapshot.scalar("0755") == "\"0755\"")
        #expect(InventorySnapshot.scalar("1.0") == "\"1.0\"")
        #expect(InventorySnapshot.scalar("") == "\"\"")
        #expect(InventorySnapshot.scalar("-x") == "\"-x\"")
        #expect(InventorySnapshot.scalar("a\u{07}\n") == "\"a\\u0007\\n\"")
    }
}

/// How Docker's listings become the inventory, without dockerd.
struct DockerInventoryTests {
    @Test func gatewaysComeFromIPAMThenEndpointsThenTheFirstAddress() {
        let networks = [
            DockerNetwork(id: "n1", name: "explicit", driver: "bridge", subnets: [IPNetwork("10.1.0.0/24")!], gateways: [IPAddress("10.1.0.254")!]),
            DockerNetwork(id: "n2", name: "seen", driver: "bridge", subnets: [IPNetwork("10.2.0.0/24")!, IPNetwork("fd00:2::/64")!]),
            DockerNetwork(id: "n3", name: "empty", driver: "bridge", subnets: [IPNetwork("10.3.0.0/24")!, IPNetwork("fd00:3::/64")!]),
            DockerNetwork(id: "n4", name: "lan", driver: "macvlan", subnets: [IPNetwork("192.168.1.0/24")!], gateways: [IPAddress("192.168.1.1")!]),
            DockerNetwork(id: "n5", name: "host", driver: "host", subnets: []),
        ]
        let containers = [
            DockerContainer(id: "c2", name: "b", state: "running", labels: [:], networks: [
                "seen": .init(networkID: "n2", ipv4: IPAddress("10.2.0.7"), ipv6: IPAddress("fd00:2::7"),
                              gateways: [IPAddress("10.2.0.9")!, IPAddress("fd00:2::9")!]),
            ]),
            DockerContainer(id: "c1", name: "a", state: "created", labels: ["x": "y"], networks: ["empty": .init()]),
        ]
        let inventory = DockerInventory.make(networks: networks, containers: containers)
        #expect(inventory.networks.map(\.name) == ["empty", "explicit", "host", "lan", "seen"])
        #expect(inventory.network(named: "explicit")?.gateways == [IPAddress("10.1.0.254")!])
        #expect(inventory.network(named: "seen")?.gateways == [IPAddress("10.2.0.9")!, IPAddress("fd00:2::9")!])
        #expect(inventory.network(named: "empty")?.gateways == [IPAddress("10.3.0.1")!, IPAddress("fd00:3::1")!])
        #expect(inventory.network(named: "lan")?.gateways == [])
        #expect(inventory.containers.map(\.name) == ["a", "b"])
        #expect(inventory.containers[0].networks == ["empty": Attachment()])
        #expect(inventory.containers[1].networks == ["seen": Attachment(ipv4: IPAddress("10.2.0.7"), ipv6: IPAddress("fd00:2::7"))])
    }

    /// Between `connect` and the end of `start` only the network inspect knows the addresses.
    @Test func addressesMissingFromTheListComeFromTheNetworkInspect() throws {
        let inspect = #"""
        {"Name":"bhexplore","Id":"35a2","Containers":{"c1":{"Name":"starting","EndpointID":"e","MacAddress":"m",
          "IPv4Address":"10.199.7.2/24","IPv6Address":"fd00:98::2/64"},"c9":{"Name":"other","IPv4Address":"10.199.7.9/24","IPv6Address":""}}}
        """#
        let decoded = try JSONDecoder().decode(WireNetworkInspect.self, from: Data(inspect.utf8))
        let endpoints = (decoded.containers ?? [:]).mapValues { $0.endpoint(networkID: decoded.id) }
        #expect(endpoints["c9"] == .init(networkID: "35a2", ipv4: IPAddress("10.199.7.9")))
        let containers = [
            DockerContainer(id: "c1", name: "starting", state: "created", labels: [:], networks: ["bhexplore": .init()]),
            DockerContainer(id: "c2", name: "never-started", state: "created", labels: [:], networks: ["bhexplore": .init()]),
            DockerContainer(id: "c9", name: "other", state: "running", labels: [:], networks: ["bhexplore": .init(ipv4: IPAddress("10.199.7.8"))]),
        ]
        let network = DockerNetwork(id: "35a2", name: "bhexplore", driver: "bridge", subnets: [IPNetwork("10.199.7.0/24")!])
        let inventory = DockerInventory.make(networks: [network], containers: containers, endpoints: ["bhexplore": endpoints])
        #expect(inventory.containers.map(\.name) == ["never-started", "other", "starting"])
        #expect(inventory.containers[0].networks["bhexplore"] == Attachment())
        #expect(inventory.containers[1].networks["bhexplore"] == Attachment(ipv4: IPAddress("10.199.7.8")))
        #expect(inventory.containers[2].networks["bhexplore"] == Attachment(ipv4: IPAddress("10.199.7.2"), ipv6: IPAddress("fd00:98::2")))
    }

    @Test func wireListingsDecode() throws {
        let networks = #"""
        [{"Name":"bhtest","Id":"35a210c2df0c0633aad592e381011b55589a0c5aadcf7e9fb57f4f3de1e1e7c5","Driver":"bridge","EnableIPv6":true,
          "IPAM":{"Driver":"default","Options":{},"Config":[{"Subnet":"10.199.7.0/24"},{"Subnet":"fd00:98::/64","Gateway":"fd00:98::1"}]},
          "Internal":false,"Options":{},"Labels":{}},
         {"Name":"bridge","Id":"a30620b7e227","Driver":"bridge","IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.17.0.0/16"}]},
          "Options":{"com.docker.network.bridge.name":"docker0"},"Labels":null},
         {"Name":"none","Id":"dad7","Driver":"null","IPAM":{"Driver":"default","Options":null,"Config":[]},"Options":{},"Labels":{}}]
        """#
        let decoded = try JSONDecoder().decode([WireNetwork].self, from: Data(networks.utf8)).map(\.model)
        #expect(decoded[0].subnets == [IPNetwork("10.199.7.0/24")!, IPNetwork("fd00:98::/64")!])
        #expect(decoded[0].gateways == [IPAddress("fd00:98::1")!])
        #expect(decoded[0].bridgeInterface == "br-35a210c2df0c")
        #expect(decoded[1].bridgeInterface == "docker0")
        #expect(decoded[2].bridgeInterface == nil && decoded[2].subnets.isEmpty)

        let containers = #"""
        [{"Id":"630c","Names":["/other/alias","/bhx2"],"Labels":{"app":"y"},"State":"running",
          "NetworkSettings":{"Networks":{"bhexplore":{"NetworkID":"35a2","Gateway":"10.199.7.1","IPAddress":"10.199.7.2","IPv6Gateway":"fd00:98::1","GlobalIPv6Address":"fd00:98::2"}}}},
         {"Id":"2daf","Names":["/bhx1"],"Labels":{"app":"x"},"State":"created",
          "NetworkSettings":{"Networks":{"bhexplore":{"NetworkID":"","Gateway":"","IPAddress":"","IPv6Gateway":"","GlobalIPv6Address":""}}}}]
        """#
        let listed = try JSONDecoder().decode([WireContainer].self, from: Data(containers.utf8)).map(\.model)
        #expect(listed[0].name == "bhx2")
        #expect(listed[0].networks["bhexplore"] == .init(networkID: "35a2", ipv4: IPAddress("10.199.7.2"), ipv6: IPAddress("fd00:98::2"),
                                                         gateways: [IPAddress("10.199.7.1")!, IPAddress("fd00:98::1")!]))
        #expect(listed[1].name == "bhx1")
        #expect(listed[1].networks["bhexplore"] == .init())
    }
}

/// Port binding fields: a network's bridge and an attachment's MAC and host-side port are read,
/// rendered and read back; malformed ones are errors that say what is wrong and where.
struct PortBindingFieldTests {
    static let inventory = """
    networks:
      - name: shop_default
        subnets: [172.20.0.0/16]
        bridge: br-1a2b3c4d5e6f
    containers:
      - name: shop-api-1
        networks:
          shop_default: {ipv4: 172.20.0.3, mac: "02:42:AC:14:00:03", port: veth1a2b3c4}
    """

    @Test func fieldsLoadRenderAndLoadAgain() throws {
        let (loaded, diagnostics) = InventoryLoader.load(Array(Self.inventory.utf8), file: "inv.yaml")
        #expect(diagnostics.isEmpty, "\(diagnostics.map(\.formatted))")
        let inventory = try #require(loaded)
        #expect(inventory.networks.first?.bridge == "br-1a2b3c4d5e6f")
        let a = try #require(inventory.containers.first?.networks["shop_default"])
        #expect(a.mac == "02:42:ac:14:00:03", "MACs are kept lower case")
        #expect(a.port == "veth1a2b3c4")
        let text = InventorySnapshot.render(inventory)
        #expect(text.contains(#"mac: "02:42:ac:14:00:03", port: veth1a2b3c4"#), "\(text)")
        let (again, _) = InventoryLoader.load(Array(text.utf8), file: "again.yaml")
        #expect(again.map(SnapshotTests.withoutSources) == SnapshotTests.withoutSources(inventory))
    }

    @Test(arguments: [
        ("mac: 02:42:ac:14:00", "'02:42:ac:14:00' is not a MAC address such as 02:42:ac:14:00:02"),
        ("mac: zz:42:ac:14:00:03", "'zz:42:ac:14:00:03' is not a MAC address such as 02:42:ac:14:00:02"),
        ("port: veth-name-far-too-long", "'veth-name-far-too-long' is not an interface name (1-15 bytes, no spaces, '/' or ':')"),
        ("port: a/b", "'a/b' is not an interface name (1-15 bytes, no spaces, '/' or ':')"),
    ])
    func malformedFieldsAreErrors(field: String, message: String) throws {
        let text = """
        networks: [{name: n, subnets: [172.20.0.0/16]}]
        containers:
          - name: c
            networks:
              n: {ipv4: 172.20.0.3, \(field)}
        """
        let (loaded, diagnostics) = InventoryLoader.load(Array(text.utf8), file: "inv.yaml")
        #expect(loaded == nil)
        #expect(diagnostics.map(\.message) == [message])
        #expect(diagnostics.first?.mark.line == 5)
    }
}
