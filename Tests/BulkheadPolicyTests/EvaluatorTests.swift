import BulkheadInventory
import BulkheadPolicy
import BulkheadYAML
import Foundation
import Testing

/// The semantics of policy format v1, case by case, on the example policies and inventory.
@Suite struct EvaluatorSemantics {
    let evaluator: Evaluator

    init() throws {
        let loaded = PolicyLoader.load(paths: [repositoryRoot + "/policies"])
        #expect(loaded.diagnostics.isEmpty, "\(loaded.diagnostics.map(\.formatted))")
        let (inventory, d) = InventoryLoader.load(path: repositoryRoot + "/policies/inventory.json")
        #expect(d.isEmpty)
        evaluator = Evaluator(policies: loaded.policies, inventory: try #require(inventory))
    }

    func check(_ from: String, _ to: String, _ traffic: String, _ verdict: Evaluator.Decision.Verdict,
               line: Int? = nil, sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        func party(_ s: String) -> Evaluator.Party { s == "host" ? .host : .address(IPAddress(s)!) }
        let d = evaluator.evaluate(from: party(from), to: party(to), Traffic(traffic)!)
        #expect(d.verdict == verdict, "\(from) -> \(to) \(traffic): \(d.reason)", sourceLocation: sourceLocation)
        if let line { #expect(d.flow?.location.line == line, "\(d.reason)", sourceLocation: sourceLocation) }
    }

    @Test func worldToManaged() {
        check("203.0.113.5", "172.20.0.2", "tcp/443", .allowed, line: 18)
        check("2001:db8:ffff::5", "fd00:20::2", "tcp/80", .allowed, line: 18)
        check("203.0.113.5", "172.20.0.2", "tcp/22", .denied)
        check("203.0.113.5", "172.20.0.3", "tcp/8080", .denied)
    }

    @Test func managedToManaged() {
        check("172.20.0.2", "172.20.0.3", "tcp/8080", .allowed, line: 26)
        check("fd00:20::2", "fd00:20::4", "tcp/8080", .allowed, line: 26)
        check("172.20.0.2", "172.20.0.6", "tcp/5432", .denied)
        check("172.20.0.3", "172.20.0.6", "tcp/5432", .allowed, line: 29)
        check("172.20.0.5", "172.20.0.7", "tcp/6379", .allowed, line: 32)
        check("172.20.0.3", "172.20.0.2", "tcp/80", .denied)
    }

    @Test func replicasAreIsolatedFromEachOther() {
        check("172.20.0.3", "172.20.0.4", "tcp/8080", .denied)
        check("fd00:20::3", "fd00:20::4", "icmp", .denied)
    }

    @Test func managedToWorldAndCIDR() {
        check("172.20.0.3", "192.0.2.10", "tcp/443", .allowed, line: 35)
        check("172.20.0.3", "198.51.100.1", "tcp/443", .denied)
        check("172.20.0.5", "192.0.2.10", "tcp/443", .denied)
        check("172.22.0.2", "198.51.100.1", "udp/53", .allowed)
        check("fd00:22::2", "2001:db8::53", "tcp/53", .allowed)
        check("172.22.0.2", "198.51.100.1", "tcp/80", .denied)
    }

    @Test func hostBothWays() {
        check("host", "172.20.0.2", "tcp/80", .allowed, line: 22)
        check("172.20.0.1", "172.20.0.2", "tcp/80", .allowed, line: 22)  // the gateway is the host
        check("host", "172.20.0.3", "tcp/8080", .denied)
        check("host", "fd00:22::2", "icmp", .allowed)
        check("172.20.0.2", "host", "tcp/22", .denied)
    }

    @Test func crossSegment() {
        check("172.20.0.10", "172.20.0.3", "tcp/9100", .allowed)
        check("172.20.0.3", "172.22.0.2", "udp/53", .allowed, line: 39)
        check("172.20.0.2", "172.22.0.2", "udp/53", .denied)
        check("fd00:21::3", "fd00:21::2", "tcp/9090", .allowed)
    }

    @Test func unclassifiedAddressesAreIsolated() {
        check("172.20.0.99", "172.20.0.2", "tcp/80", .denied)
        check("203.0.113.5", "172.20.0.99", "tcp/80", .denied)
        check("172.20.0.2", "fd00:20::99", "tcp/80", .denied)
    }

    @Test func ungovernedTrafficIsLeftAlone() {
        check("203.0.113.5", "198.51.100.1", "tcp/80", .ungoverned)
        check("host", "198.51.100.1", "tcp/80", .ungoverned)
    }

    @Test func auditMode() throws {
        var policies = evaluator.policies
        let i = try #require(policies.segments.firstIndex { $0.name == "dns" })
        policies.segments[i].mode = .audit
        let audit = Evaluator(policies: policies, inventory: evaluator.inventory)
        let d = audit.evaluate(from: .address(IPAddress("172.22.0.2")!), to: .address(IPAddress("198.51.100.1")!), .tcp(80))
        #expect(d.verdict == .audited)
        #expect(d.passes)
        // A denial decided by an enforce segment stays a denial.
        let e = audit.evaluate(from: .address(IPAddress("172.20.0.2")!), to: .address(IPAddress("172.20.0.6")!), .tcp(5432))
        #expect(e.verdict == .denied)
    }

    @Test func containerInTwoServicesGetsBoth() throws {
        var inventory = evaluator.inventory
        inventory.containers.append(Container(
            name: "hybrid", labels: ["com.docker.compose.project": "shop", "com.docker.compose.service": "api", "role": "x"],
            networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.50"))]))
        var policies = evaluator.policies
        let shop = try #require(policies.segments.firstIndex { $0.name == "shop" })
        policies.segments[shop].services.append(Service(
            ref: ServiceRef(segment: "shop", name: "extra"), labels: ["role": "x"],
            location: FilePosition(file: "x", mark: .start), selectorLocation: FilePosition(file: "x", mark: .start)))
        let e = Evaluator(policies: policies, inventory: inventory)
        #expect(e.membership["hybrid"] == [ServiceRef(segment: "shop", name: "api"), ServiceRef(segment: "shop", name: "extra")])
        let d = e.evaluate(from: .address(IPAddress("172.20.0.2")!), to: .address(IPAddress("172.20.0.50")!), .tcp(8080))
        #expect(d.verdict == .allowed)
    }
}

@Suite struct Formats {
    @Test func ipAddresses() {
        #expect(IPAddress("10.0.0.1") == .v4(0x0A00_0001))
        #expect(IPAddress("010.0.0.1") == nil)
        #expect(IPAddress("fd00:20::2")?.description == "fd00:20::2")
        #expect(IPNetwork("10.1.2.3/8")?.normalized.description == "10.0.0.0/8")
        #expect(IPNetwork("10.0.0.0/08") == nil)
        #expect(IPNetwork("fd00::/64")!.contains(IPAddress("fd00::1")!))
        #expect(!IPNetwork("fd00::/64")!.contains(IPAddress("10.0.0.1")!))
    }

    @Test func portSets() throws {
        let a = PortSet([try PortSpec.parse("tcp/1-100"), try PortSpec.parse("tcp/101-200")])
        #expect(a.tcp == [1...200])
        #expect(PortSet([.tcp(50...60)]).isSubset(of: a))
        #expect(!PortSet([.icmp]).isSubset(of: a))
        #expect(PortSet([.icmp, .udp(1...2)]).isSubset(of: PortSet([.any])))
    }

    @Test func didYouMean() {
        #expect(Spelling.closest(to: "flow", among: ["flows", "from"]) == "flows")
        #expect(Spelling.closest(to: "sevrices", among: ["services", "segment"]) == "services")
        #expect(Spelling.closest(to: "zzzz", among: ["services"]) == nil)
    }

    @Test func examplePoliciesValidateCleanly() {
        let r = Validation.run(paths: [repositoryRoot + "/policies"], inventoryPath: repositoryRoot + "/policies/inventory.json")
        #expect(r.diagnostics.isEmpty, "\(r.diagnostics.map(\.formatted))")
        #expect(r.files.count == 3)
        #expect(r.policies.segments.map(\.name) == ["dns", "monitoring", "shop"])
    }
}

/// Label selectors are identity; `networks:` on a service narrows who can claim it to containers
/// attached to those networks (README, security model).
@Suite struct ServiceNetworkSelectors {
    static let policy = """
        segment: shop
        networks: [shop_default]
        services:
          db:
            labels: {app: db}
            networks: [shop_default]
          api:
            labels: {app: api}
        flows:
          - from: api
            to: db
            ports: [tcp/5432]
        """

    @Test func aContainerWithTheLabelsOnAnotherNetworkIsNotAMember() throws {
        let loaded = load(Self.policy)
        #expect(loaded.diagnostics.isEmpty, "\(loaded.diagnostics.map(\.formatted))")
        let inventory = Inventory(
            networks: [Network(name: "shop_default", subnets: [IPNetwork("172.20.0.0/16")!]),
                       Network(name: "other", subnets: [IPNetwork("172.30.0.0/16")!])],
            containers: [
                Container(name: "db-1", labels: ["app": "db"], networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.6"))]),
                Container(name: "impostor", labels: ["app": "db"], networks: ["other": Attachment(ipv4: IPAddress("172.30.0.9"))]),
                Container(name: "api-1", labels: ["app": "api"], networks: ["other": Attachment(ipv4: IPAddress("172.30.0.3"))]),
            ])
        let evaluator = Evaluator(policies: loaded.policies, inventory: inventory)
        #expect(evaluator.membership["db-1"] == [ServiceRef(segment: "shop", name: "db")])
        #expect(evaluator.membership["impostor"] == [], "the labels alone do not make it shop/db")
        #expect(evaluator.membership["api-1"] == [ServiceRef(segment: "shop", name: "api")], "no networks: any network")
        let toImpostor = evaluator.evaluate(from: .address(IPAddress("172.30.0.3")!), to: .address(IPAddress("172.30.0.9")!), Traffic("tcp/5432")!)
        #expect(toImpostor.verdict != .allowed, "\(toImpostor.reason)")
        let toDB = evaluator.evaluate(from: .address(IPAddress("172.30.0.3")!), to: .address(IPAddress("172.20.0.6")!), Traffic("tcp/5432")!)
        #expect(toDB.verdict == .allowed, "\(toDB.reason)")
    }

    @Test func anEmptyNetworkListIsAnError() {
        let loaded = load("""
            segment: shop
            networks: [shop_default]
            services:
              db:
                labels: {app: db}
                networks: []
            """)
        let d = loaded.diagnostics.filter { $0.severity == .error }
        #expect(d.map(\.code) == [.emptyValue])
        #expect(d.first?.line == 6)
        #expect(d.first?.column == 15)
    }
}
