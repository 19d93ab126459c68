import BulkheadConntrack
import BulkheadEngine
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadTestSupport
import Testing

/// Item 9 of issue 10, proved by traffic: established connections on a flow that closes stop at
/// once (their conntrack entries are cut in the same apply), those on flows still allowed keep
/// exchanging. "Stopped" means the next exchange got no answer before its hang guard (1 s);
/// nothing else about time is asserted.
@Suite(.serialized) struct RevocationLabTests {
    static let yaml = """
    segment: s
    networks: [n]
    services:
      web:
        labels: {role: web}
      client:
        labels: {role: client}
      logs:
        labels: {role: logs}
    flows:
      - from: client
        to: web
        ports: [tcp/8080, udp/5000]
      - from: client
        to: logs
        ports: [tcp/9514]

    """
    static let closedFlow = "  - from: client\n    to: web\n    ports: [tcp/8080, udp/5000]\n"

    static let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.72.0.0/24")!], gateways: [IPAddress("10.72.0.1")!])],
        containers: [
            Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.72.0.2"))]),
            Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.72.0.3"))]),
            Container(name: "logs", labels: ["role": "logs"], networks: ["n": Attachment(ipv4: IPAddress("10.72.0.4"))]),
        ])

    /// The hang guard of an exchange expected to stop: the issue's "within 1 s of the change".
    static let stopGuard: Duration = .seconds(1)
    /// The hang guard of an exchange expected to be answered (generous: a loaded machine).
    static let answerGuard: Duration = .seconds(5)

    struct Connections {
        let tcp: LongLivedExchange
        let udp: LongLivedExchange
        let kept: LongLivedExchange
    }

    func open(_ env: Enforced) throws -> Connections {
        let lab = env.lab
        let client = try #require(lab.namespace(ofContainer: "client"))
        let web = try #require(lab.namespace(ofContainer: "web"))
        let logs = try #require(lab.namespace(ofContainer: "logs"))
        return Connections(
            tcp: try LongLivedExchange(.tcp, from: client, to: web, address: IPAddress("10.72.0.2")!, port: 8080, guardTimeout: Self.answerGuard),
            udp: try LongLivedExchange(.udp, from: client, to: web, address: IPAddress("10.72.0.2")!, port: 5000, guardTimeout: Self.answerGuard),
            kept: try LongLivedExchange(.tcp, from: client, to: logs, address: IPAddress("10.72.0.4")!, port: 9514, guardTimeout: Self.answerGuard))
    }

    /// Policy edit: the flow client → web is removed. Before the cut the established TCP
    /// connection and the UDP exchange still pass (the rules accept `ct state established`
    /// first: this is what the cut is for); `plan` counts exactly those two; after the apply's
    /// cut both stop, and the connection to logs keeps exchanging.
    @Test func policyEditCutsTheClosedFlowOnly() throws {
        var env = try Enforced(policies: try policies(Self.yaml), inventory: Self.inventory)
        defer { env.destroy() }
        let c = try open(env)
        let tracking = try NetlinkConntrack(namespace: env.lab.hostNamespace)

        env.policies = try policies(Self.yaml.replacingOccurrences(of: Self.closedFlow, with: ""))
        #expect(!env.policies.flows.isEmpty && env.policies.flows.count == 1)
        let evaluator = Evaluator(policies: env.policies, inventory: env.inventory)
        guard case .wouldCut(let wouldCut, let tracked) = Revocation.census(tracking, evaluator: evaluator) else {
            Issue.record("conntrack of the lab host could not be read")
            return
        }
        #expect(Set(wouldCut.map(\.traffic)) == [.tcp(8080), .udp(5000)], "\(wouldCut)")
        #expect(wouldCut.count == 2 && tracked >= 3, "\(wouldCut), \(tracked) tracked")

        // The rules change, nothing is cut yet: established traffic still passes.
        try env.apply()
        #expect(c.tcp.exchange(guardTimeout: Self.answerGuard) == .answered, "an established connection outlives a rule change by itself")
        #expect(c.udp.exchange(guardTimeout: Self.answerGuard) == .answered)

        let report = Revocation.revoke(tracking, evaluator: evaluator)
        #expect(report.problem == nil, "\(report.problem ?? "")")
        #expect(Set(report.cut.map(\.traffic)) == [.tcp(8080), .udp(5000)], "\(report.cut)")
        #expect(report.cut.count == 2)

        #expect(c.tcp.exchange(guardTimeout: Self.stopGuard) == .noAnswer, "the established TCP connection must stop before the guard")
        #expect(c.udp.exchange(guardTimeout: Self.stopGuard) == .noAnswer, "the UDP exchange must stop before the guard")
        for i in 1...3 {
            #expect(c.kept.exchange(guardTimeout: Self.answerGuard) == .answered, "exchange \(i) on the flow still allowed")
        }
        // And it stays stopped: a second try is dropped too (no entry came back for it).
        #expect(c.tcp.exchange(guardTimeout: Self.stopGuard) == .noAnswer)
        #expect(try Revocation.select(tracking.entries(), evaluator: evaluator).filter { $0.traffic == .tcp(8080) }.isEmpty)
    }

    /// A container changing service (relabelled to match none: on a governed network it is
    /// isolated): every connection of it is cut in the same reconcile.
    @Test func containerLeavingItsServiceLosesItsConnections() throws {
        var env = try Enforced(policies: try policies(Self.yaml), inventory: Self.inventory)
        defer { env.destroy() }
        let c = try open(env)
        let tracking = try NetlinkConntrack(namespace: env.lab.hostNamespace)
        let index = try #require(env.inventory.containers.firstIndex { $0.name == "client" })
        env.inventory.containers[index].labels = ["role": "retired"]
        try env.apply()
        let report = Revocation.revoke(tracking, evaluator: Evaluator(policies: env.policies, inventory: env.inventory))
        #expect(Set(report.cut.map(\.traffic)) == [.tcp(8080), .udp(5000), .tcp(9514)], "\(report.cut)")
        #expect(c.tcp.exchange(guardTimeout: Self.stopGuard) == .noAnswer)
        #expect(c.udp.exchange(guardTimeout: Self.stopGuard) == .noAnswer)
        #expect(c.kept.exchange(guardTimeout: Self.stopGuard) == .noAnswer)
    }
}
