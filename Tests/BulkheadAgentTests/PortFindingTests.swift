import BulkheadAgent
import BulkheadDocker
import BulkheadInventory
import Testing

/// How the agent's source ties containers to bridge ports, with a fake host: only a port that is
/// on the network's bridge and has the container's MAC behind it binds; every other port of a
/// governed bridge is closed (`unboundPorts`), whatever the reason.
struct PortFindingTests {
    struct FakePorts: PortFinder {
        var bridges: [String: [String]]
        var sandboxes: [String: String]?
        var byNamespace: [String: [String: String]] = [:]
        func bridgePorts() throws -> [String: [String]] { bridges }
        func hostPorts(containerNamespace: String) throws -> [String: String] { byNamespace[containerNamespace] ?? [:] }
        func sandboxPorts(wanted: Set<String>) throws -> [String: String]? { sandboxes }
    }

    static func inventory() -> Inventory {
        Inventory(networks: [Network(name: "n", subnets: [IPNetwork("172.20.0.0/16")!], bridge: "br-n")],
                  containers: [
                      Container(name: "a", id: "ida", labels: [:], networks: ["n": Attachment(ipv4: IPAddress("172.20.0.2"), mac: "02:42:ac:14:00:02")]),
                      Container(name: "b", id: "idb", labels: [:], networks: ["n": Attachment(ipv4: IPAddress("172.20.0.3"), mac: "02:42:ac:14:00:03")]),
                      Container(name: "c", id: "idc", labels: [:], networks: ["n": Attachment(ipv4: IPAddress("172.20.0.4"), mac: "02:42:ac:14:00:04")]),
                  ])
    }

    @Test func portsAreBoundOnlyWhenOnTheBridgeAndTheRestAreClosed() async throws {
        let finder = FakePorts(
            bridges: ["br-n": ["veth-a", "veth-c", "veth-x"], "docker0": ["veth-b"]],
            // a: found and on br-n; b: its veth is on another bridge; c: no namespace entry (unreadable).
            sandboxes: ["02:42:ac:14:00:02": "veth-a", "02:42:ac:14:00:03": "veth-b"])
        let source = HostAwareSource(FakeContainerSource(inventory: Self.inventory()), portFinder: finder)
        let inventory = try await source.snapshot()
        let port = { (name: String) in inventory.containers.first { $0.name == name }?.networks["n"]?.port }
        #expect(port("a") == "veth-a")
        #expect(port("b") == nil, "a port of another bridge is never bound to this network")
        #expect(port("c") == nil)
        #expect(inventory.networks.first?.unboundPorts == ["veth-c", "veth-x"], "ports of the bridge nobody could be tied to are closed")
    }

    @Test func withoutTheNamespaceDirectoryTheContainersNamespaceIsAsked() async throws {
        // FakeContainerSource knows no namespaces: every port of the bridge stays closed.
        let finder = FakePorts(bridges: ["br-n": ["veth-a"]], sandboxes: nil, byNamespace: [:])
        let inventory = try await HostAwareSource(FakeContainerSource(inventory: Self.inventory()), portFinder: finder).snapshot()
        #expect(inventory.containers.allSatisfy { $0.networks["n"]?.port == nil })
        #expect(inventory.networks.first?.unboundPorts == ["veth-a"])
    }

    @Test func withoutAFinderNothingChanges() async throws {
        let inventory = try await HostAwareSource(FakeContainerSource(inventory: Self.inventory())).snapshot()
        #expect(inventory.containers.allSatisfy { $0.networks["n"]?.port == nil })
        #expect(inventory.networks.first?.unboundPorts == nil)
    }
}
