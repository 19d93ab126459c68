import BulkheadAgent
import BulkheadEngine
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadSource
import BulkheadTestSupport
import Foundation
import Testing

/// `bulkhead agent --inventory FILE` against the kernel of a lab host namespace, proved by
/// traffic: editing the file to add a container to a service opens the flow to it; removing it
/// from the file closes it again.
@Suite(.serialized, .enabled(if: TestSystem.isRoot || TestSystem.inCI, "needs root"))
struct FileSourceLabTests {
    static let policy = """
        segment: filelab
        networks: [n]
        services:
          client:
            labels: {role: client}
          server:
            labels: {role: server}
        flows:
          - from: client
            to: server
            ports: [tcp/8080]

        """

    @Test(.timeLimit(.minutes(2)))
    func editingTheInventoryFileOpensAndClosesAFlow() async throws {
        try TestSystem.requireRoot("the file source lab test")
        let newcomer = Container(name: "newcomer", labels: ["role": "server"], networks: ["n": Attachment(ipv4: IPAddress("10.78.0.4"))])
        var full = Inventory(
            networks: [Network(name: "n", subnets: [IPNetwork("10.78.0.0/24")!], gateways: [IPAddress("10.78.0.1")!])],
            containers: [
                Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.78.0.2"))]),
                Container(name: "server", labels: ["role": "server"], networks: ["n": Attachment(ipv4: IPAddress("10.78.0.3"))]),
                newcomer,
            ])
        // The lab runs all three hosts; the file lists the newcomer only while the test says so.
        let lab = try Lab(inventory: full)
        defer { _ = lab.destroy() }
        full.hostAddresses = lab.addresses(of: .host)
        var without = full
        without.containers.removeAll { $0.name == "newcomer" }
        let runner = ProbeRunner(lab: lab, options: .init(timeout: .milliseconds(150)))
        let toNewcomer = BulkheadLab.Probe(from: .container("client"), to: IPAddress("10.78.0.4")!, traffic: .tcp(8080))
        let control = BulkheadLab.Probe(from: .container("client"), to: IPAddress("10.78.0.3")!, traffic: .tcp(8080))
        try runner.startServers(for: [toNewcomer, control])
        defer { runner.stopServers() }
        _ = try BridgeNetfilter.ensureEnabled(namespace: lab.hostNamespace)

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-filelab-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/policies", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.policy.write(toFile: dir + "/policies/filelab.yaml", atomically: true, encoding: .utf8)
        let path = dir + "/inventory.yaml"
        try write(without, to: path)

        var config = AgentConfiguration(policyPaths: [dir + "/policies"])
        config.listenPort = 0
        config.resyncInterval = .seconds(3600)
        let backend = try NetlinkNetfilter(namespace: lab.hostNamespace)
        let agent = Agent(configuration: config, backend: backend, source: InventoryFileSource(path: path), logger: quietLogger())
        let policies = PolicyLoader.load(paths: [dir + "/policies"]).policies
        let reader = try NetlinkNetfilter(namespace: lab.hostNamespace, ownership: .disabled)
        func enforces(_ inventory: Inventory) -> Bool {
            guard let plan = try? Planner().plan(policies: policies, inventory: inventory, backend: reader) else { return false }
            return plan.live != nil && !plan.hasChanges
        }
        func probe() throws -> (newcomer: ProbeOutcome, control: ProbeOutcome) {
            let r = try runner.run([toNewcomer, control])
            return (r[0].outcome, r[1].outcome)
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await agent.run() }
            defer { group.cancelAll() }
            #expect(await eventually { agent.isReady && enforces(without) })
            // Not in the file: an address on a governed network that belongs to no service.
            let before = try probe()
            #expect(before.newcomer == .timedOut, "\(before)")
            #expect(before.control == .answered, "\(before)")

            try write(full, to: path)
            #expect(await eventually { enforces(full) }, "the edit adding the newcomer was enforced")
            let added = try probe()
            #expect(added.newcomer == .answered, "\(added)")
            #expect(added.control == .answered, "\(added)")

            try write(without, to: path)
            #expect(await eventually { enforces(without) }, "the edit removing the newcomer was enforced")
            let removed = try probe()
            #expect(removed.newcomer == .timedOut, "\(removed)")
            #expect(removed.control == .answered, "\(removed)")
            #expect(agent.metrics.value("bulkhead_source_reads_total", labels: ["kind": "snapshot"]) == 1,
                    "both edits were read per container, without a full snapshot")
        }
    }
}
