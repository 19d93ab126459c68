import BulkheadInventory
import BulkheadLab
import BulkheadTestSupport
import Foundation
import Testing

/// `bulkhead plan` and `apply --netns` as processes against a lab: after a policy edit, plan
/// counts the live connection the edit denies and apply cuts it, proved by traffic.
@Suite(.serialized, .enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct ApplyRevocationProcessTests {
    static let open = """
    segment: s
    networks: [n]
    services:
      web:
        labels: {role: web}
      client:
        labels: {role: client}
    flows:
      - from: client
        to: web
        ports: [tcp/8080, tcp/8081]

    """

    @Test func applyAfterAPolicyEditCutsAnEstablishedConnection() throws {
        try TestSystem.requireRoot("the apply revocation process test")
        let lab = try Lab(inventory: Inventory(
            networks: [Network(name: "n", subnets: [IPNetwork("10.73.0.0/24")!], gateways: [IPAddress("10.73.0.1")!])],
            containers: [
                Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.73.0.2"))]),
                Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.73.0.3"))]),
            ]))
        defer { _ = lab.destroy() }
        // The snapshot format, written out: the lab host's own addresses are `host`.
        let host = lab.addresses(of: .host).map { "\"\($0)\"" }.joined(separator: ", ")
        let json = """
            {"host": {"addresses": [\(host)]},
             "networks": [{"name": "n", "subnets": ["10.73.0.0/24"], "gateways": ["10.73.0.1"]}],
             "containers": [
               {"name": "web", "labels": {"role": "web"}, "networks": {"n": {"ipv4": "10.73.0.2"}}},
               {"name": "client", "labels": {"role": "client"}, "networks": {"n": {"ipv4": "10.73.0.3"}}}]}
            """
        try withFiles(["policies/s.yaml": Self.open, "inventory.json": json]) { dir in
            let inputs = ["--policies", dir + "/policies", "--inventory", dir + "/inventory.json", "--netns", lab.hostNamespace]
            let first = try cli(["apply"] + inputs)
            #expect(first.status == 0, "\(first.stderr)")
            #expect(first.stdout.contains("\nCut 0 connections the policies now deny (of "), "\(first.stdout)")
            let client = try #require(lab.namespace(ofContainer: "client")), web = try #require(lab.namespace(ofContainer: "web"))
            let closing = try LongLivedExchange(.tcp, from: client, to: web, address: IPAddress("10.73.0.2")!, port: 8080)
            let kept = try LongLivedExchange(.tcp, from: client, to: web, address: IPAddress("10.73.0.2")!, port: 8081)

            try Self.open.replacingOccurrences(of: "[tcp/8080, tcp/8081]", with: "[tcp/8081]")
                .write(toFile: dir + "/policies/s.yaml", atomically: true, encoding: .utf8)
            let plan = try cli(["plan"] + inputs)
            #expect(plan.status == 0, "\(plan.stderr)")
            #expect(plan.stdout.contains("\nConnections: 1 live connection would be cut (of "), "\(plan.stdout)")
            #expect(plan.stdout.contains("\n  x tcp 10.73.0.3:"), "\(plan.stdout)")
            #expect(plan.stdout.contains(" -> 10.73.0.2:8080: no flow allows s/client to s/web on tcp/8080"), "\(plan.stdout)")

            let apply = try cli(["apply"] + inputs)
            #expect(apply.status == 0, "\(apply.stderr)")
            #expect(apply.stdout.contains("\nCut 1 connection the policies now deny (of "), "\(apply.stdout)")
            #expect(apply.stderr.isEmpty, "\(apply.stderr)")
            #expect(closing.exchange(guardTimeout: .seconds(1)) == .noAnswer, "the established connection on tcp/8080 must stop before the guard")
            #expect(kept.exchange(guardTimeout: .seconds(5)) == .answered, "tcp/8081 is still allowed")

            // JSON: the same count under "revoked" (nothing left to cut now).
            let again = try cli(["apply", "--format", "json"] + inputs)
            #expect(again.status == 0)
            let doc = try #require(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
            #expect((doc["revoked"] as? [String: Any])?["cut"] as? Int == 0, "\(again.stdout)")
        }
    }
}
