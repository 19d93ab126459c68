import BulkheadCompiler
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset
import Foundation
import BulkheadTestSupport
import Testing

/// Names past kernel limits (issue 8, item 4): whatever the policies and labels, every object
/// name, comment and log prefix fits, stays printable and stays distinct.
@Suite struct NameLimits {
    static let long63 = String(repeating: "a", count: 62) + "z"

    /// `count` segments of 63-character names, each with a 63-character service selected by one
    /// shared label, so one container carrying that label is in all of them.
    static func overlappingPolicies(segments count: Int, mode: String = "enforce", file: String = "p.yaml") -> PolicySet {
        var sources: [(String, [UInt8])] = []
        for i in 0..<count {
            let seg = String(repeating: "s", count: 61) + "-\(i)"
            let svc = String(repeating: "v", count: 61) + "-\(i)"
            let yaml = """
            segment: \(seg)
            mode: \(mode)
            networks: [n]
            services:
              \(svc):
                labels: {role: shared}
              peer:
                labels: {role: peer\(i)}
            flows:
              - from: peer
                to: \(svc)
                ports: [tcp/80]
              - from: \(svc)
                to: world
                ports: [tcp/443]

            """
            sources.append(("\(i)-" + file, Array(yaml.utf8)))
        }
        let loaded = PolicyLoader.load(sources: sources)
        #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
        return loaded.policies
    }

    static let network = Network(name: "n", subnets: [IPNetwork("10.70.0.0/24")!], gateways: [IPAddress("10.70.0.1")!])

    static func container(_ name: String, _ labels: [String: String], _ last: UInt32) -> Container {
        Container(name: name, labels: labels, networks: ["n": Attachment(ipv4: .v4(0x0A46_0000 + last))])
    }

    static func expectBounded(_ table: Table, sourceLocation: SourceLocation = #_sourceLocation) {
        let limits = KernelLimits.kernel
        for name in table.chains.map(\.name) + table.sets.map(\.name) {
            #expect(limits.problem(objectName: name) == nil, "\(name.utf8.count) bytes: \(name)", sourceLocation: sourceLocation)
        }
        for rule in table.rules {
            #expect(limits.problem(in: rule) == nil, "\(rule)", sourceLocation: sourceLocation)
        }
    }

    /// Fails on the old code: the identity of four 63/63 services made a 514-byte chain name and a
    /// 515-byte denial comment, and the transaction was refused whole.
    @Test func fourOverlappingServicesOnOneContainerApply() throws {
        let policies = Self.overlappingPolicies(segments: 4)
        let inventory = Inventory(networks: [Self.network], containers: [Self.container("multi", ["role": "shared"], 2)]
            + (0..<4).map { Self.container("peer\($0)", ["role": "peer\($0)"], 10 + UInt32($0)) })
        let out = Compiler.compile(policies, inventory)
        #expect(out.failures.isEmpty, "\(out.failures)")
        let id = try #require(out.identities.first { $0.services.count == 4 })
        let chain = ChainName.identity(.ingress, id).name
        #expect(chain.utf8.count == 255 && chain.contains("."), "shortened with a digest: \(chain)")
        #expect(ChainName(parsing: chain) == .shortened(chain), "a shortened name reads back as shortened, not as another identity")
        #expect(out.table.chain(named: chain) != nil)
        Self.expectBounded(out.table)
        let fake = FakeNetfilter()
        try fake.apply(try Diff.between(desired: out.table, live: nil), expectedGeneration: nil)
    }

    /// One 63-character segment with a 63-character service: the denial comment was 134 bytes.
    @Test func longestSegmentAndServiceNamesFit() throws {
        let policies = Self.overlappingPolicies(segments: 1)
        let out = Compiler.compile(policies, Inventory(networks: [Self.network]))
        #expect(out.failures.isEmpty, "\(out.failures)")
        Self.expectBounded(out.table)
        let denial = try #require(out.table.rules.first { $0.comment?.hasSuffix(" denies") == true && $0.comment?.contains("vvvv") == true })
        let comment = try #require(denial.comment)
        #expect(comment.contains("~"), "shortened with a digest: \(comment)")
        guard case .deny(.unreadable(let who))? = RuleRole(parsing: comment) else { Issue.record("not a shortened denial: \(comment)"); return }
        #expect(who.hasPrefix(String(repeating: "s", count: 61)))
        try FakeNetfilter().apply(try Diff.between(desired: out.table, live: nil), expectedGeneration: nil)
    }

    /// Audit mode in several long segments: the log prefix was over 127 bytes.
    @Test func auditLogPrefixOfManySegmentsFits() throws {
        let policies = Self.overlappingPolicies(segments: 3, mode: "audit")
        let inventory = Inventory(networks: [Self.network], containers: [Self.container("multi", ["role": "shared"], 2)])
        let out = Compiler.compile(policies, inventory)
        #expect(out.failures.isEmpty, "\(out.failures)")
        Self.expectBounded(out.table)
        let prefixes = out.table.rules.flatMap { $0.statements.compactMap { s -> String? in if case .log(let l) = s { return l.prefix } else { return nil } } }
        #expect(prefixes.contains { $0.contains("~") && $0.utf8.count == 127 }, "\(prefixes)")
        #expect(LogPrefix(parsing: LogPrefix.audit(segments: ["a", "b"]).text) == .audit(segments: ["a", "b"]))
        for p in prefixes where p.contains("~") { #expect(LogPrefix(parsing: p) == .unreadableAudit(String(p.dropFirst(15).dropLast(2)))) }
        try FakeNetfilter().apply(try Diff.between(desired: out.table, live: nil), expectedGeneration: nil)
    }

    /// A policy path of 300 bytes with CR-LF, a terminal escape and quotes: the comment keeps the
    /// tail of the path and the line, holds only printable ASCII, and still maps to its flow.
    @Test func longHostilePolicyPathBecomesABoundedPrintableComment() throws {
        let dir = String(repeating: "deep/", count: 50) + "evil\r\n::error::x\u{1B}[31m\"q\"\\"
        let policies = Self.overlappingPolicies(segments: 1, file: dir + "/shop.yaml")
        let out = Compiler.compile(policies, Inventory(networks: [Self.network]))
        #expect(out.failures.isEmpty, "\(out.failures)")
        Self.expectBounded(out.table)
        let allows = out.table.rules.filter { $0.statements.last == .verdict(.accept) && $0.comment != nil }
        #expect(!allows.isEmpty)
        for rule in allows {
            let comment = try #require(rule.comment)
            #expect(comment.utf8.count <= 128 && comment.hasPrefix("#") && comment.contains("..."), "\(comment)")
            #expect(comment.hasSuffix("/shop.yaml:10") || comment.hasSuffix("/shop.yaml:13"), "\(comment)")
            #expect(comment.contains("evil\\x0d\\x0a::error::x\\x1b[31m\\x22q\\x22\\x5c"), "\(comment)")
            #expect(!comment.unicodeScalars.contains { $0.value < 0x20 || $0.value >= 0x7F })
            guard case .allow(let reference)? = RuleRole(parsing: comment) else { Issue.record("not a flow: \(comment)"); continue }
            #expect(out.flowsByReference[reference] != nil)
        }
    }

    /// Two long paths with the same tail stay apart (the digest is of the whole path).
    @Test func longPathsWithTheSameTailDiffer() {
        let a = FlowReference(file: String(repeating: "a/", count: 100) + "same/tail.yaml", line: 3)
        let b = FlowReference(file: String(repeating: "b/", count: 100) + "same/tail.yaml", line: 3)
        #expect(a != b && a.text.utf8.count == 128 && b.text.utf8.count == 128)
    }

    /// Every form of comment reads back as itself.
    @Test(arguments: [
        RuleRole.allow(flow: FlowReference(file: "policies/shop.yaml", line: 14)),
        RuleRole.allow(flow: FlowReference(file: "a denies", line: 2)),
        RuleRole.allow(flow: FlowReference(file: "shared denies: x", line: 2)),
        RuleRole.allow(flow: FlowReference(file: "port binding: source MAC not the port's", line: 2)),
        RuleRole.allow(flow: FlowReference(file: String(repeating: "x", count: 500), line: 99_999)),
        RuleRole.deny(.identity(Identity([ServiceRef(segment: "shop", name: "extra"), ServiceRef(segment: "shop", name: "api")]))),
        RuleRole.audit(.segments(["infra", "shop"])),
        RuleRole.audit(.identity(Identity([ServiceRef(segment: "s", name: "v")]))),
        RuleRole.sharedDenial(.toHost),
        RuleRole.unclassified(.source),
        RuleRole.quarantine,
        RuleRole.routerAdvertisements,
        RuleRole.portBinding(.ipv4Source),
    ])
    func commentsRoundTrip(_ role: RuleRole) {
        #expect(RuleRole(parsing: role.comment) == role)
        #expect(role.comment.utf8.count <= 128 && BoundedText.printable(role.comment) == role.comment)
    }

    /// Issue 8, item 10 (the nft side): the same hostile strings through every comment and log
    /// prefix we write. Nothing outside printable ASCII, no `"`, and distinct inputs stay distinct.
    /// The table is the one every other output is tested with (`HostileStrings`), plus a few more.
    @Test(arguments: HostileStrings.all + ["a\r\nb", "q\"uote", "back\\slash", "nul\u{0}byte", "caf\u{E9}", "tab\there",
                                           String(repeating: "\u{1B}", count: 200)])
    func hostileTextNeverReachesTheKernelRaw(_ hostile: String) {
        let outputs = [
            RuleRole.allow(flow: FlowReference(file: hostile, line: 7)).comment,
            RuleRole.allow(flow: FlowReference(file: hostile + "/" + hostile + ".yaml", line: 7)).comment,
            RuleRole.deny(.segments([hostile])).comment,
            RuleRole.audit(.identity(Identity([ServiceRef(segment: hostile, name: hostile)]))).comment,
            LogPrefix.audit(segments: [hostile, "b"]).text,
        ]
        for (i, text) in outputs.enumerated() {
            #expect(BoundedText.isPrintable(text) && !text.contains("\""), "output \(i): \(text)")
            #expect(text.utf8.count <= (i == 4 ? 127 : 128))
            #expect(!text.unicodeScalars.contains { $0.value < 0x20 || $0.value > 0x7E })
        }
        #expect(FlowReference(file: hostile, line: 7) != FlowReference(file: hostile + "x", line: 7))
        // Whatever the input, the comment reads back as the role of the same kind with the same text.
        for role in [RuleRole.allow(flow: FlowReference(file: hostile, line: 7)), .deny(.segments([hostile]))] {
            let parsed = RuleRole(parsing: role.comment)
            #expect(parsed?.comment == role.comment, "\(role.comment)")
        }
    }

    /// The set names the decompiler and the incremental planner read back, both ways.
    @Test func setNamesRoundTrip() {
        let a = ServiceRef(segment: "shop", name: "api"), b = ServiceRef(segment: "shop-2", name: "db-1")
        for f in AddressFamily.allCases {
            #expect(SetName(parsing: SetName.service(a, f).name) == .service(a, f))
            #expect(SetName(parsing: SetName.sourceGroup(Identity([b, a]), f).name) == .sourceGroup(Identity([a, b]), f))
        }
        for kind in IdentityChainKind.allCases {
            #expect(SetName(parsing: SetName.dispatch(kind).name) == .dispatch(kind), "\(SetName.dispatch(kind).name)")
        }
        #expect(SetName.dispatch(.fromHost).name == "dispatch_from_host" && SetName.identityNumbers(.v6).name == "identity_v6")
        for f in AddressFamily.allCases { #expect(SetName(parsing: SetName.identityNumbers(f).name) == .identityNumbers(f)) }
        #expect(SetName(parsing: "dispatch_from_host_v4") == nil && SetName(parsing: "ingress_v4") == nil, "the per-address verdict maps are gone")
        #expect(SetName(parsing: "svc_a_b_c_v4") == nil && SetName(parsing: "from_a_b_v4") == nil, "a group has two members")
        #expect(SetName(parsing: "from_b_b__a_a_v4") == nil, "members out of order are no name of ours")
    }

    @Test func namesAreBoundedAndDistinct() {
        let a = TableLayout.bounded(String(repeating: "x", count: 300) + "a")
        let b = TableLayout.bounded(String(repeating: "x", count: 300) + "b")
        #expect(a.utf8.count == 255 && b.utf8.count == 255 && a != b)
        #expect(TableLayout.bounded("in_shop_api") == "in_shop_api")
    }

    @Test func sha256KnownAnswers() {
        func hex(_ s: String) -> String { SHA256.hash(Array(s.utf8)).map { String(format: "%02x", $0) }.joined() }
        #expect(hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    /// Should an identity still not fit (here: a kernel that took 40-byte names), it is
    /// quarantined — its containers' addresses jump to a drop chain and are in no service's set —
    /// and every other identity is compiled as usual.
    @Test func anIdentityThatDoesNotFitIsQuarantinedAndTheRestEnforced() throws {
        let yaml = """
        segment: s
        networks: [n]
        services:
          web:
            labels: {role: web}
          admin:
            labels: {team: ops}
          client:
            labels: {role: client}
        flows:
          - from: client
            to: web
            ports: [tcp/80]
          - from: web
            to: client
            ports: [tcp/81]

        """
        let policies = PolicyLoader.load(sources: [("t.yaml", Array(yaml.utf8))]).policies
        let inventory = Inventory(networks: [Self.network], containers: [
            Self.container("both", ["role": "web", "team": "ops"], 2),
            Self.container("client", ["role": "client"], 3),
            Self.container("web", ["role": "web"], 4),
        ])
        var options = Compiler.Options()
        options.limits.objectName = 16  // "in_s_admin__s_web" is 17 bytes
        let out = Compiler.compile(policies, inventory, options: options)
        #expect(out.failures.map(\.containers) == [["both"]])
        #expect(out.failures.first?.reason.contains("in_s_admin__s_web") == true)
        let table = out.table
        #expect(table.chain(named: ChainName.quarantine.name) != nil)
        // Its address has its identity's number, which every dispatch map sends to quarantine.
        let number = try #require(table.set(named: "identity_v4")?.elements.first { $0.key == [.value(.ipv4(IPv4Address("10.70.0.2")!))] }?.data)
        guard case .value(let n) = number else { Issue.record("\(number) is no number"); return }
        for kind in IdentityChainKind.allCases {
            let map = SetName.dispatch(kind).name
            #expect(table.set(named: map)?.elements.contains(SetElement(n, .verdict(.jump(ChainName.quarantine.name)))) == true, "\(map)")
        }
        #expect(table.set(named: "svc_s_web_v4")?.elements == [SetElement(.ipv4(IPv4Address("10.70.0.4")!))])
        #expect(table.set(named: "managed_v4")?.elements.contains(SetElement(.ipv4(IPv4Address("10.70.0.2")!))) == true)
        #expect(table.chain(named: "in_s_web") != nil && table.chain(named: "in_s_client") != nil)
        try FakeNetfilter().apply(try Diff.between(desired: table, live: nil), expectedGeneration: nil)
    }
}

/// Inventories that lie (issue 8, item 9): the compiler enrols none of the forged addresses.
@Suite struct LyingInventories {
    @Test func forgedAddressesAreInNoSetAndNoMap() throws {
        let yaml = """
        segment: s
        networks: [n]
        services:
          api:
            labels: {role: api}
          db:
            labels: {role: db}
          web:
            labels: {role: web}
        flows:
          - from: api
            to: db
            ports: [tcp/5432]
          - from: web
            to: world
            ports: [tcp/443]

        """
        let policies = PolicyLoader.load(sources: [("t.yaml", Array(yaml.utf8))]).policies
        let n = Network(name: "n", subnets: [IPNetwork("10.71.0.0/24")!], gateways: [IPAddress("10.71.0.1")!])
        let inventory = Inventory(networks: [n], containers: [
            Container(name: "api", labels: ["role": "api"], networks: ["n": Attachment(ipv4: IPAddress("10.71.0.2"))]),
            // db claims an extra address outside the subnet on a second attachment, and the gateway
            Container(name: "db", labels: ["role": "db"], networks: ["n": Attachment(ipv4: IPAddress("10.71.0.3"), ipv6: nil),
                                                                     "m": Attachment(ipv4: IPAddress("8.8.8.8"))]),
            Container(name: "gw", labels: ["role": "db"], networks: ["n": Attachment(ipv4: IPAddress("10.71.0.1"))]),
            // web claims api's address
            Container(name: "web", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.71.0.2"))]),
            Container(name: "web2", labels: ["role": "web"], networks: ["n": Attachment(ipv4: IPAddress("10.71.0.5"))]),
        ])
        let out = Compiler.compile(policies, inventory)
        let all = out.table.sets.flatMap { s in s.elements.compactMap { $0.key.first?.low } }
        for forged in ["8.8.8.8", "10.71.0.1", "10.71.0.2"] {
            #expect(!all.contains(.ipv4(IPv4Address(forged)!)), "\(forged) is enrolled somewhere")
        }
        #expect(out.table.set(named: "svc_s_db_v4")?.elements == [SetElement(.ipv4(IPv4Address("10.71.0.3")!))])
        #expect(out.table.set(named: "svc_s_web_v4")?.elements == [SetElement(.ipv4(IPv4Address("10.71.0.5")!))])
        #expect(Set(out.rejectedAddresses.map(\.container)) == ["api", "db", "gw", "web"])
        let e = Evaluator(policies: policies, inventory: inventory)
        let toForged = e.evaluate(from: .address(IPAddress("10.71.0.5")!), to: .address(IPAddress("8.8.8.8")!), .tcp(5432))
        #expect(toForged.verdict == .denied && toForged.reason.contains("8.8.8.8 is not enrolled: container db claims it on network m"), "\(toForged.reason)")
        let fromTwin = e.evaluate(from: .address(IPAddress("10.71.0.2")!), to: .address(IPAddress("10.71.0.3")!), .tcp(5432))
        #expect(fromTwin.verdict == .denied && fromTwin.reason.contains("containers api, web all claim it"), "\(fromTwin.reason)")
        #expect(e.identify(.address(IPAddress("10.71.0.1")!)) == .host)
    }
}
