import BulkheadConntrack
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import Testing

/// Which tracked connections a policy change cuts: the evaluator's answer on each entry's
/// effective tuple, against a fake conntrack table.
@Suite struct RevocationSelection {
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
        ports: [tcp/80, udp/5000]
      - from: client
        to: logs
        ports: [tcp/514]

    """
    static let audited = """
    segment: s
    mode: audit
    networks: [n]
    services:
      web:
        labels: {role: web}
      client:
        labels: {role: client}

    """

    static func policies(_ yaml: String) -> PolicySet {
        let loaded = PolicyLoader.load(sources: [("test.yaml", Array(yaml.utf8))])
        #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
        return loaded.policies
    }

    static let inventory = Inventory(
        networks: [Network(name: "n", subnets: [IPNetwork("10.70.0.0/24")!, IPNetwork("fd00:70::/64")!],
                           gateways: [IPAddress("10.70.0.1")!, IPAddress("fd00:70::1")!])],
        containers: [
            Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.70.0.2"), ipv6: IPAddress("fd00:70::2"))]),
            Container(name: "client", labels: ["role": "client"], networks: ["n": Attachment(ipv4: IPAddress("10.70.0.3"), ipv6: IPAddress("fd00:70::3"))]),
            Container(name: "logs", labels: ["role": "logs"], networks: ["n": Attachment(ipv4: IPAddress("10.70.0.4"))]),
        ])

    static func entry(_ proto: UInt8, _ from: String, _ sport: UInt16?, _ to: String, _ dport: UInt16?, zone: UInt16 = 0) -> ConntrackEntry {
        ConntrackEntry(original: ConntrackTuple(source: IPAddress(from)!, destination: IPAddress(to)!, proto: proto,
                                                sourcePort: sport, destinationPort: dport), zone: zone)
    }

    static let clientToWebTCP = entry(6, "10.70.0.3", 40000, "10.70.0.2", 80)
    static let clientToWebUDP = entry(17, "10.70.0.3", 40001, "10.70.0.2", 5000)
    static let clientToWebV6 = entry(6, "fd00:70::3", 40002, "fd00:70::2", 80)
    static let clientToLogs = entry(6, "10.70.0.3", 40003, "10.70.0.4", 514)
    static let clientToWebSSH = entry(6, "10.70.0.3", 40004, "10.70.0.2", 22)
    /// Neither side governed: never Bulkhead's to cut.
    static let ungoverned = entry(6, "127.0.0.1", 40005, "127.0.0.1", 80)
    static let worldToWorld = entry(17, "198.51.100.1", 53, "203.0.113.9", 53)

    /// The flow client → web is removed from the policies: its TCP, UDP and IPv6 connections are
    /// cut, client → logs (still allowed) and ungoverned traffic are kept.
    @Test func closedFlowIsCutOthersKept() throws {
        var edited = Self.yaml
        edited = edited.replacingOccurrences(of: "  - from: client\n    to: web\n    ports: [tcp/80, udp/5000]\n", with: "")
        #expect(edited != Self.yaml)
        let evaluator = Evaluator(policies: Self.policies(edited), inventory: Self.inventory)
        let table = FakeConntrack([Self.clientToWebTCP, Self.clientToWebUDP, Self.clientToWebV6, Self.clientToLogs, Self.ungoverned, Self.worldToWorld])
        let report = Revocation.revoke(table, evaluator: evaluator)
        #expect(report.cut.map(\.entry) == [Self.clientToWebTCP, Self.clientToWebUDP, Self.clientToWebV6].sorted())
        #expect(report.cut.map(\.traffic) == [.tcp(80), .udp(5000), .tcp(80)])
        #expect(report.tracked == 6)
        #expect(report.problem == nil)
        #expect(table.table == [Self.clientToLogs, Self.ungoverned, Self.worldToWorld])
        #expect(report.cut.allSatisfy { $0.reason.hasPrefix("no flow allows s/client to s/web on tcp/80") || $0.reason.hasPrefix("no flow allows s/client to s/web on udp/5000") },
                "\(report.cut.map(\.reason))")
    }

    /// Under unchanged policies nothing allowed is cut, but a connection the policies never
    /// allowed (tcp/22) is.
    /// `plan` and `apply` judge connections with the evaluator the table was compiled from
    /// (`Plan.evaluator`, from `Compiler.Output.evaluator`) instead of building a third one: it
    /// must classify and decide exactly as a fresh one.
    @Test func planJudgesConnectionsWithTheClassificationItCompiled() throws {
        let policies = Self.policies(Self.yaml)
        let plan = try Planner().plan(policies: policies, inventory: Self.inventory, live: nil, bridgeLive: nil,
                                      baseline: .empty(reason: "test"))
        let fresh = Evaluator(policies: policies, inventory: Self.inventory)
        #expect(plan.evaluator.membership == fresh.membership)
        #expect(plan.evaluator.membership.count == 3)
        #expect(plan.evaluator.rejectedAddresses == fresh.rejectedAddresses)
        let allowed = Self.entry(6, "10.70.0.3", 40005, "10.70.0.2", 80)
        let tracking = FakeConntrack([Self.clientToWebSSH, allowed])
        let census = Revocation.census(tracking, evaluator: plan.evaluator)
        #expect(census == Revocation.census(tracking, evaluator: fresh))
        #expect(census == .wouldCut(Revocation.select([Self.clientToWebSSH], evaluator: fresh), tracked: 2))
        guard case .wouldCut(let cuts, _) = census else { Issue.record("census unavailable"); return }
        #expect(cuts.map(\.entry) == [Self.clientToWebSSH])
    }

    @Test func unchangedPoliciesCutOnlyTheDenied() {
        let evaluator = Evaluator(policies: Self.policies(Self.yaml), inventory: Self.inventory)
        let cuts = Revocation.select([Self.clientToWebTCP, Self.clientToWebUDP, Self.clientToLogs, Self.clientToWebSSH, Self.ungoverned], evaluator: evaluator)
        #expect(cuts.map(\.entry) == [Self.clientToWebSSH])
    }

    /// A container that leaves its service (relabelled): its connections become unclassified and are cut.
    @Test func containerLeavingItsServiceIsCut() {
        var inventory = Self.inventory
        inventory.containers[1].labels = ["role": "nothing"]
        let evaluator = Evaluator(policies: Self.policies(Self.yaml), inventory: inventory)
        let cuts = Revocation.select([Self.clientToWebTCP, Self.clientToLogs, Self.ungoverned], evaluator: evaluator)
        #expect(cuts.map(\.entry) == [Self.clientToWebTCP, Self.clientToLogs])
    }

    /// Audit mode only logs would-be denials: nothing is cut.
    @Test func auditModeCutsNothing() {
        let evaluator = Evaluator(policies: Self.policies(Self.audited), inventory: Self.inventory)
        let cuts = Revocation.select([Self.clientToWebTCP, Self.clientToWebUDP], evaluator: evaluator)
        #expect(cuts.isEmpty)
        // The same entries are denied (and cut) once the segment enforces.
        let enforced = Evaluator(policies: Self.policies(Self.audited.replacingOccurrences(of: "mode: audit\n", with: "")), inventory: Self.inventory)
        #expect(Revocation.select([Self.clientToWebTCP, Self.clientToWebUDP], evaluator: enforced).count == 2)
    }

    /// A port published by destination NAT is judged as the container's port, like the
    /// forward hook judged it: the reply tuple's source is the real destination.
    @Test func natIsJudgedAfterTranslation() {
        let evaluator = Evaluator(policies: Self.policies(Self.yaml), inventory: Self.inventory)
        func published(_ port: UInt16) -> ConntrackEntry {
            ConntrackEntry(original: ConntrackTuple(source: IPAddress("10.70.0.3")!, destination: IPAddress("192.0.2.1")!, proto: 6, sourcePort: 41000, destinationPort: 8080),
                           reply: ConntrackTuple(source: IPAddress("10.70.0.2")!, destination: IPAddress("10.70.0.3")!, proto: 6, sourcePort: port, destinationPort: 41000))
        }
        let cuts = Revocation.select([published(80), published(22)], evaluator: evaluator)
        #expect(cuts.map(\.entry) == [published(22)])
        #expect(cuts.first?.traffic == .tcp(22))
    }

    /// Hostile or unusual entries: other protocols are judged as `proto N` (only `any` allows
    /// them), ICMP as icmp, TCP without ports and mixed families are left alone (cannot be judged).
    @Test func unusualEntriesDoNotCrashAndAreJudgedConservatively() {
        let evaluator = Evaluator(policies: Self.policies(Self.yaml), inventory: Self.inventory)
        let sctp = Self.entry(132, "10.70.0.3", 1, "10.70.0.2", 80)
        let gre = Self.entry(47, "10.70.0.3", nil, "10.70.0.2", nil)
        let icmp = Self.entry(1, "10.70.0.3", nil, "10.70.0.2", nil)
        let icmpv6 = Self.entry(58, "fd00:70::3", nil, "fd00:70::2", nil)
        let portless = Self.entry(6, "10.70.0.3", nil, "10.70.0.2", nil)
        let mixed = Self.entry(6, "10.70.0.3", 1, "fd00:70::2", 80)
        let icmpOverV6Number = Self.entry(1, "fd00:70::3", nil, "fd00:70::2", nil)
        #expect(Revocation.traffic(of: sctp.original) == .other(132))
        #expect(Revocation.traffic(of: icmp.original) == .icmp)
        #expect(Revocation.traffic(of: icmpv6.original) == .icmp)
        #expect(Revocation.traffic(of: icmpOverV6Number.original) == .other(1))
        #expect(Revocation.traffic(of: portless.original) == nil)
        #expect(Revocation.traffic(of: mixed.original) == nil)
        let cuts = Revocation.select([sctp, gre, icmp, icmpv6, portless, mixed, icmpOverV6Number], evaluator: evaluator)
        #expect(Set(cuts.map(\.entry)) == [sctp, gre, icmp, icmpv6, icmpOverV6Number])
        // Random entries: whatever the addresses and protocol, selection terminates and only
        // ever cuts entries with a governed side.
        var rng = SystemRandomNumberGenerator()
        let pool = ["10.70.0.2", "10.70.0.3", "10.70.0.4", "10.70.0.9", "10.70.0.1", "8.8.8.8", "127.0.0.1", "fd00:70::2", "fd00:70::77", "::1"].map { IPAddress($0)! }
        var entries: [ConntrackEntry] = []
        for _ in 0..<2000 {
            let t = ConntrackTuple(source: pool.randomElement(using: &rng)!, destination: pool.randomElement(using: &rng)!,
                                   proto: UInt8.random(in: 0...255, using: &rng),
                                   sourcePort: Bool.random(using: &rng) ? UInt16.random(in: 0...65535, using: &rng) : nil,
                                   destinationPort: Bool.random(using: &rng) ? UInt16.random(in: 0...65535, using: &rng) : nil)
            entries.append(ConntrackEntry(original: t, zone: UInt16.random(in: 0...3, using: &rng)))
        }
        let randomCuts = Revocation.select(entries, evaluator: evaluator)
        #expect(!randomCuts.isEmpty)
        let governed = Set(["10.70.0.2", "10.70.0.3", "10.70.0.4", "10.70.0.9", "fd00:70::2", "fd00:70::77"].map { IPAddress($0)! })
        #expect(randomCuts.allSatisfy { governed.contains($0.entry.original.source) || governed.contains($0.entry.original.destination) })
    }

    /// A dump failure cuts nothing and says the rules stand; a refused delete is reported, the
    /// other cuts still happen; an entry gone since the dump is not an error.
    @Test func failuresAreReportedNotThrown() throws {
        let evaluator = Evaluator(policies: Self.policies(Self.yaml), inventory: Self.inventory)
        let broken = FakeConntrack([Self.clientToWebSSH])
        broken.dumpError = .permissionDenied(operation: "dumping connection tracking")
        let failed = Revocation.revoke(broken, evaluator: evaluator)
        #expect(failed.cut.isEmpty && failed.dumpError == .permissionDenied(operation: "dumping connection tracking"))
        #expect(failed.problem?.hasPrefix("the rules were committed, but established connections they now deny were not cut: dumping connection tracking: permission denied") == true,
                "\(failed.problem ?? "nil")")
        #expect(failed.problem?.contains("run apply again") == true)

        let other = Self.entry(6, "10.70.0.4", 40010, "10.70.0.2", 22)
        let partial = FakeConntrack([Self.clientToWebSSH, other])
        partial.deleteErrors[Self.clientToWebSSH.original] = .failed(operation: "deleting", errno: EBUSY_, detail: "busy")
        let report = Revocation.revoke(partial, evaluator: evaluator)
        #expect(report.cut.map(\.entry) == [other])
        #expect(report.failures.map(\.cut.entry) == [Self.clientToWebSSH])
        #expect(report.problem?.hasPrefix("the rules were committed, but 1 of 2 denied connections could not be cut") == true, "\(report.problem ?? "nil")")

        // Gone between the dump and the delete: the fake's delete of an id it does not hold.
        let stale = FakeConntrack([Self.clientToWebSSH])
        let census = Revocation.census(stale, evaluator: evaluator)
        #expect(census == .wouldCut(Revocation.select([Self.clientToWebSSH], evaluator: evaluator), tracked: 1))
        var renamed = Self.clientToWebSSH
        renamed.id = 99
        #expect(try stale.delete(renamed) == false)
        #expect(stale.table == [Self.clientToWebSSH])
    }

    /// Zones are part of the key: a delete removes the entry of its own zone only.
    @Test func zonesAreKeptApart() throws {
        let evaluator = Evaluator(policies: Self.policies(Self.yaml), inventory: Self.inventory)
        let zone0 = Self.clientToWebSSH
        let zone7 = Self.entry(6, "10.70.0.3", 40004, "10.70.0.2", 22, zone: 7)
        let table = FakeConntrack([zone0, zone7])
        let report = Revocation.revoke(table, evaluator: evaluator)
        #expect(report.cut.map(\.entry) == [zone0, zone7])
        #expect(table.table.isEmpty)
        #expect(table.deleted == [zone0, zone7])
    }
}

private let EBUSY_: Int32 = 16
