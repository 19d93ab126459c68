import BulkheadInventory
import BulkheadSource
import Testing

struct EndpointIndexTests {
    static let net = Network(name: "n", subnets: [IPNetwork("10.1.0.0/24")!], bridge: "br-n")

    static func container(_ name: String, id: String? = nil, _ ip: String, port: String? = nil, network: String = "n") -> Container {
        Container(name: name, id: id, labels: ["app": name], networks: [network: Attachment(ipv4: IPAddress(ip), mac: "02:00:00:00:00:01", port: port)])
    }

    @Test func keysAreIdsElseNames() {
        #expect(EndpointIndex.key(of: Self.container("a", id: "abc", "10.1.0.2")) == "abc")
        #expect(EndpointIndex.key(of: Self.container("a", "10.1.0.2")) == "a")
    }

    @Test func updatesOneContainerAndListsSorted() {
        var index = EndpointIndex(Inventory(networks: [Self.net], containers: [Self.container("b", id: "2", "10.1.0.3")], hostAddresses: [IPAddress("192.0.2.1")!]))
        let added = index.update("1", to: Self.container("a", id: "1", "10.1.0.2"))
        let again = index.update("1", to: Self.container("a", id: "1", "10.1.0.2"))
        #expect(added)
        #expect(!again, "the same container again changes nothing")
        #expect(index.inventory == Inventory(networks: [Self.net],
                                             containers: [Self.container("a", id: "1", "10.1.0.2"), Self.container("b", id: "2", "10.1.0.3")],
                                             hostAddresses: [IPAddress("192.0.2.1")!]))
        let removed = index.update("2", to: nil)
        let removedAgain = index.update("2", to: nil)
        #expect(removed)
        #expect(!removedAgain, "removing what is not there changes nothing")
        #expect(index.inventory.containers.map(\.name) == ["a"])
    }

    @Test func changedKeys() {
        let (a, b, c) = (Self.container("a", id: "1", "10.1.0.2"), Self.container("b", id: "2", "10.1.0.3"), Self.container("c", id: "3", "10.1.0.4"))
        let earlier = EndpointIndex(Inventory(networks: [Self.net], containers: [a, b], hostAddresses: [IPAddress("192.0.2.1")!]))
        #expect(earlier.changedKeys(since: earlier) == [], "the same snapshot again: nothing changed")
        var moved = b
        moved.networks["n"] = Attachment(ipv4: IPAddress("10.1.0.9"), mac: "02:00:00:00:00:01")
        let later = EndpointIndex(Inventory(networks: [Self.net], containers: [moved, c], hostAddresses: [IPAddress("192.0.2.1")!]))
        #expect(later.changedKeys(since: earlier) == ["1", "2", "3"], "a removed, b changed, c added")
        let otherHost = EndpointIndex(Inventory(networks: [Self.net], containers: [a, b], hostAddresses: [IPAddress("192.0.2.2")!]))
        #expect(otherHost.changedKeys(since: earlier) == nil, "host addresses changed: more than containers")
        var net = Self.net
        net.subnets.append(IPNetwork("10.2.0.0/24")!)
        let otherNetworks = EndpointIndex(Inventory(networks: [net], containers: [a, b], hostAddresses: [IPAddress("192.0.2.1")!]))
        #expect(otherNetworks.changedKeys(since: earlier) == nil, "networks changed: more than containers")
    }

    @Test func unknownNetworksAreNoticed() {
        let index = EndpointIndex(Inventory(networks: [Self.net]))
        #expect(index.knowsNetworks(of: Self.container("a", "10.1.0.2")))
        #expect(!index.knowsNetworks(of: Self.container("a", "10.2.0.2", network: "other")))
    }

    @Test func aBoundPortLeavesTheUnboundList() {
        var net = Self.net
        net.unboundPorts = ["veth1", "veth2"]
        var index = EndpointIndex(Inventory(networks: [net]))
        index.update("1", to: Self.container("a", id: "1", "10.1.0.2", port: "veth1"))
        #expect(index.networks[0].unboundPorts == ["veth2"])
        index.update("2", to: Self.container("b", id: "2", "10.1.0.3", port: "veth2"))
        #expect(index.networks[0].unboundPorts == nil)
    }
}
