import BulkheadInventory

/// A randomized segment and the inventory it governs, shared by the traffic test
/// (`EnforcementTests.randomPoliciesMatchEvaluator`) and the fake-versus-kernel differential
/// (`FakeVersusKernelTests.randomPoliciesAgree`), so one seed names one world in both: four
/// services, two to six random flows between them, the world, the host and CIDRs, six containers on
/// one dual-stack network (the last one unclassified). `bindPorts` gives each attachment a MAC and
/// a bridge port, so the bridge table binds them; it draws nothing from `rng`.
public func randomSegmentWorld(_ rng: inout SeededGenerator, bindPorts: Bool) -> (yaml: String, inventory: Inventory) {
    let services = ["a", "b", "c", "d"]
    let ports: [String] = ["tcp/80", "tcp/443", "udp/53", "icmp", "tcp/8000-8010"]
    var flows: [String] = []
    for _ in 0..<Int.random(in: 2...6, using: &rng) {
        let from = ["world", "host", "{cidr: 203.0.113.0/24}"] + services
        let to = ["world", "host", "{cidr: 198.51.100.0/24}"] + services
        var f = from.randomElement(using: &rng)!, t = to.randomElement(using: &rng)!
        if !services.contains(f) && !services.contains(t) { t = services.randomElement(using: &rng)! }
        if f == t, !services.contains(f) { f = services[0] }
        flows.append("  - from: \(f)\n    to: \(t)\n    ports: [\(ports.randomElement(using: &rng)!)]")
    }
    let yaml = "segment: r\nnetworks: [n]\nservices:\n" + services.map { "  \($0):\n    labels: {svc: \($0)}" }.joined(separator: "\n")
        + "\nflows:\n" + flows.joined(separator: "\n") + "\n"
    var containers: [Container] = []
    for i in 0..<6 {
        var labels = ["svc": services.randomElement(using: &rng)!]
        if i == 5 { labels = ["svc": "none"] }  // one unclassified container
        var attachment = Attachment(ipv4: .v4(0x0A3F_0002 + UInt32(i)), ipv6: IPAddress("fd00:63::\(i + 2)"))
        if bindPorts {
            attachment.mac = "02:42:0a:3f:00:0\(i + 2)"
            attachment.port = "vethr\(i)"
        }
        containers.append(Container(name: "r\(i)", labels: labels, networks: ["n": attachment]))
    }
    let inventory = Inventory(networks: [Network(name: "n", subnets: [IPNetwork("10.63.0.0/24")!, IPNetwork("fd00:63::/64")!],
                                                 gateways: [IPAddress("10.63.0.1")!, IPAddress("fd00:63::1")!])],
                              containers: containers)
    return (yaml, inventory)
}
