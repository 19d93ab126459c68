import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadYAML
import Testing

/// `validate` runs the checks `apply` makes (issue 8, item 4): what validates, applies.
@Suite struct PreflightChecks {
    static let yaml = """
    segment: s
    networks: [n]
    services:
      web:
        labels: {role: web}
      admin:
        labels: {team: ops}
    flows:
      - from: world
        to: web
        ports: [tcp/80]

    """

    static let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.76.0.0/24")!])],
        containers: [Container(name: "both", labels: ["role": "web", "team": "ops"], networks: ["n": Attachment(ipv4: IPAddress("10.76.0.2"))])])

    @Test func cleanPoliciesPass() {
        let loaded = PolicyLoader.load(sources: [("t.yaml", Array(Self.yaml.utf8))])
        #expect(Preflight.check(loaded.policies, inventory: Self.inventory).isEmpty)
        #expect(Preflight.check(loaded.policies, inventory: nil).isEmpty)
    }

    /// An identity that would not fit is a `not-programmable` error at its first service.
    @Test func identityThatDoesNotFitIsAnError() {
        let loaded = PolicyLoader.load(sources: [("t.yaml", Array(Self.yaml.utf8))])
        var options = Compiler.Options()
        options.limits.objectName = 16
        let d = Preflight.check(loaded.policies, inventory: Self.inventory, options: options)
        #expect(d.count == 1 && d.first?.code == .notProgrammable && d.first?.severity == .error, "\(d.map(\.formatted))")
        #expect(d.first?.file == "t.yaml" && d.first?.line == 6, "at service admin: \(d.map(\.formatted))")
        #expect(d.first?.message.contains("in_s_admin__s_web") == true)
    }
}
