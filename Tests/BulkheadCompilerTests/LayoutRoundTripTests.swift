import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

/// Issue 10, item 1: one table layout, typed both ways. Every name, comment and log prefix of a
/// compiled table reads back (`init?(parsing:)`) into the typed value that built it, and building
/// a generated value then parsing it gives the value back.
@Suite struct LayoutRoundTrip {
    // MARK: - Compiled tables

    /// What a compiled table must satisfy, checked name by name and rule by rule. Returns how many
    /// objects were checked (so a caller can require that the loop ran).
    @discardableResult
    static func expectEveryObjectReadsBack(_ out: Compiler.Output, _ policies: PolicySet, context: String) -> Int {
        var checked = 0
        let services = Set(policies.services.map(\.ref))
        let identities = Set(out.identities)
        // The typed value of every chain the compiler can build for these policies, by name.
        var built: [String: ChainName] = [:]
        for id in out.identities {
            for kind in IdentityChainKind.allCases { built[ChainName.identity(kind, id).name] = .identity(kind, id) }
            let segments = Array(Set(id.services.map(\.segment))).sorted()
            built[ChainName.audit(segments: segments).name] = .audit(segments: segments)
        }
        for table in [out.table, out.bridgeTable] {
            for set in table.sets {
                checked += 1
                guard let parsed = SetName(parsing: set.name) else { Issue.record("\(context): set \(set.name) is no name of ours"); continue }
                #expect(parsed.name == set.name, "\(context): \(set.name)")
                switch parsed {
                case .service(let ref, _): #expect(services.contains(ref), "\(context): \(set.name) names no service")
                case .sourceGroup(let group, _):
                    #expect(group.services.count >= 2 && group.services.allSatisfy(services.contains), "\(context): \(set.name)")
                case .shortened: Issue.record("\(context): set \(set.name) was shortened: no set name of ours may be")
                case .ports, .bindEther, .bindV4, .bindV6, .bindARP:
                    #expect(table.id == TableLayout.bridge, "\(context): \(set.name) outside the bridge table")
                case .governed, .managed, .identityNumbers, .dispatch:
                    #expect(table.id == TableLayout.inet, "\(context): \(set.name) outside the inet table")
                case .destinationPorts(_, let ranges):
                    #expect(table.id == TableLayout.inet, "\(context): \(set.name) outside the inet table")
                    #expect(set.elements.map(\.key) == ranges.map { [KeyPart.between(.port($0.lowerBound), .port($0.upperBound))] },
                            "\(context): \(set.name) holds what its name says")
                }
            }
            for chain in table.chains {
                checked += 1
                guard let parsed = ChainName(parsing: chain.name) else { Issue.record("\(context): chain \(chain.name) is no name of ours"); continue }
                #expect(parsed.name == chain.name)
                switch parsed {
                case .identity(let kind, let id):
                    #expect(identities.contains(id), "\(context): \(chain.name) names no compiled identity")
                    #expect(built[chain.name] == .identity(kind, id))
                case .shortened(let name):
                    // Only names of several services or segments can be too long: one the compiler built.
                    guard let typed = built[name] else { Issue.record("\(context): \(name) is shortened but no identity's or audit chain's"); continue }
                    #expect(typed.name == name && name.utf8.count == KernelLimits.kernel.objectName)
                case .audit(let segments):
                    #expect(segments.allSatisfy { policies.segment(named: $0)?.mode == .audit }, "\(context): \(chain.name)")
                case .forward, .input, .output, .prerouting:
                    #expect(chain.base != nil, "\(context): \(chain.name) is a base chain")
                case .quarantine:
                    #expect(!out.failures.isEmpty)
                }
            }
            for rule in table.rules {
                for case .log(let log) in rule.statements {
                    checked += 1
                    guard let prefix = log.prefix, let parsed = LogPrefix(parsing: prefix) else { Issue.record("\(context): log prefix \(log.prefix ?? "nil")"); continue }
                    #expect(parsed.text == prefix)
                    if case .audit(let segments) = parsed, case .audit(let chainSegments)? = ChainName(parsing: rule.chain) {
                        #expect(segments == chainSegments)
                    }
                }
                guard let comment = rule.comment else { continue }
                checked += 1
                guard let role = RuleRole(parsing: comment) else { Issue.record("\(context): comment '\(comment)' is no role of ours"); continue }
                #expect(role.comment == comment, "\(context): \(comment)")
                let chain = ChainName(parsing: rule.chain)
                switch role {
                case .allow(let reference):
                    #expect(out.flowsByReference[reference] != nil, "\(context): \(comment) names no flow")
                    #expect(rule.statements.last == .verdict(.accept))
                case .deny(let who), .audit(let who):
                    // The denial at the end of an identity's chain names that identity; a shared
                    // audit chain names its segments.
                    switch (who, chain) {
                    case (.identity(let id), .identity(_, let chainID)?): #expect(id == chainID, "\(context): \(comment) in \(rule.chain)")
                    case (.segments(let s), .audit(let chainSegments)?): #expect(s == chainSegments, "\(context): \(comment) in \(rule.chain)")
                    case (.unreadable, _): #expect(comment.contains("~"), "\(context): \(comment)")
                    default: Issue.record("\(context): denial '\(comment)' in chain \(rule.chain)")
                    }
                    if case .audit = role { #expect(rule.statements.last == .verdict(.accept)) } else { #expect(rule.statements.last == .verdict(.drop)) }
                case .sharedDenial, .unclassified, .routerAdvertisements:
                    #expect(table.id == TableLayout.inet && chain.map { [ChainName.forward, .input, .output].contains($0) } == true,
                            "\(context): \(comment) in \(rule.chain)")
                case .quarantine:
                    #expect(chain == .quarantine)
                case .portBinding:
                    #expect(table.id == TableLayout.bridge && rule.statements.last == .verdict(.drop))
                }
            }
        }
        return checked
    }

    @Test func examplePoliciesReadBack() throws {
        let policies = try examplePolicies()
        let out = Compiler.compile(policies, try exampleInventory())
        let checked = Self.expectEveryObjectReadsBack(out, policies, context: "example")
        #expect(checked > 100, "checked \(checked)")
        // Every role the example has: allow, deny, shared, unclassified, router adverts, port binding.
        let roles = (out.table.rules + out.bridgeTable.rules).compactMap { $0.comment.flatMap(RuleRole.init(parsing:)) }
        #expect(roles.contains { if case .allow = $0 { true } else { false } })
        #expect(roles.contains { if case .deny(.identity) = $0 { true } else { false } })
        #expect(roles.contains(.sharedDenial(.toHost)) && roles.contains(.unclassified(.destination)) && roles.contains(.routerAdvertisements))
        #expect(roles.contains(.portBinding(.ipv4Source)))
    }

    /// Random policies: several segments (some in audit mode), services whose labels overlap so
    /// containers have identities of several services, flows of several sources (source groups),
    /// world, host and CIDR endpoints.
    @Test(arguments: 1...40)
    func randomizedPoliciesReadBack(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15)  // seeds mixed, as this suite always drew them
        let (policies, inventory) = try Self.randomWorld(&rng)
        let out = Compiler.compile(policies, inventory)
        let checked = Self.expectEveryObjectReadsBack(out, policies, context: "seed \(seed)")
        #expect(checked > 20, "seed \(seed): checked \(checked)")
    }

    /// Hostile and long names: identities of four 63/63 services (shortened chain names), denial
    /// subjects and log prefixes shortened with a digest, a 300-byte policy path with control bytes.
    @Test(arguments: ["enforce", "audit"])
    func longAndHostileNamesReadBack(mode: String) throws {
        let dir = String(repeating: "deep/", count: 50) + "evil\r\n::error::x\u{1B}[31m\"q\"\\"
        let policies = NameLimits.overlappingPolicies(segments: 4, mode: mode, file: dir + "/shop.yaml")
        let inventory = Inventory(networks: [NameLimits.network], containers: [NameLimits.container("multi", ["role": "shared"], 2)]
            + (0..<4).map { NameLimits.container("peer\($0)", ["role": "peer\($0)"], 10 + UInt32($0)) })
        let out = Compiler.compile(policies, inventory)
        #expect(out.failures.isEmpty)
        Self.expectEveryObjectReadsBack(out, policies, context: "long \(mode)")
        #expect(out.table.chains.contains { if case .shortened? = ChainName(parsing: $0.name) { true } else { false } }, "some chain name was shortened")
    }

    static func randomWorld(_ rng: inout SeededGenerator) throws -> (PolicySet, Inventory) {
        let segmentCount = Int.random(in: 1...3, using: &rng)
        var sources: [(String, [UInt8])] = []
        var allServices: [(segment: String, service: String)] = []
        let labels = ["a", "b", "c"]
        for s in 0..<segmentCount {
            let seg = "seg\(s)"
            let mode = Bool.random(using: &rng) ? "audit" : "enforce"
            var services: [String] = []
            var lines = ["segment: \(seg)", "mode: \(mode)", "networks: [n]", "services:"]
            for v in 0..<Int.random(in: 1...3, using: &rng) {
                let name = "svc\(v)"
                services.append(name)
                allServices.append((seg, name))
                // One label of three: containers carrying several labels are in several services.
                lines.append("  \(name):\n    labels: {\(labels.randomElement(using: &rng)!): \"1\"}")
            }
            lines.append("flows:")
            let ports = ["[tcp/80]", "[tcp/443, udp/53]", "[icmp]", "[tcp/8000-8010]", "[any]"]
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let local = services.shuffled(using: &rng)
                let from: String
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: from = "world"
                case 1: from = "host"
                case 2: from = "{cidr: 203.0.113.0/24}"
                default: from = "[" + local.prefix(Int.random(in: 1...local.count, using: &rng)).joined(separator: ", ") + "]"
                }
                let to = Int.random(in: 0..<4, using: &rng) == 0 ? (Bool.random(using: &rng) ? "world" : "host") : local[0]
                let (f, t) = (from == "world" || from == "host" || from.hasPrefix("{")) && (to == "world" || to == "host") ? (from, local[0]) : (from, to)
                lines.append("  - from: \(f)\n    to: \(t)\n    ports: \(ports.randomElement(using: &rng)!)")
            }
            sources.append(("p/\(seg).yaml", Array((lines.joined(separator: "\n") + "\n").utf8)))
        }
        let loaded = PolicyLoader.load(sources: sources)
        #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted)) in \(sources.map { String(decoding: $0.1, as: UTF8.self) })")
        var containers: [Container] = []
        for i in 0..<8 {
            var l: [String: String] = [:]
            for label in labels where Bool.random(using: &rng) { l[label] = "1" }
            containers.append(Container(name: "c\(i)", labels: l, networks: ["n": Attachment(
                ipv4: .v4(0x0A40_0002 + UInt32(i)), ipv6: IPAddress("fd00:64::\(i + 2)"), mac: "02:42:0a:40:00:0\(i + 2)", port: "vethl\(i)")]))
        }
        let inventory = Inventory(networks: [Network(name: "n", subnets: [IPNetwork("10.64.0.0/24")!, IPNetwork("fd00:64::/64")!],
                                                     gateways: [IPAddress("10.64.0.1")!, IPAddress("fd00:64::1")!])],
                                  containers: containers)
        return (loaded.policies, inventory)
    }

    // MARK: - Generated values

    static func label(_ rng: inout SeededGenerator, maxLength: Int = 63) -> String {
        // DNS-label alphabet (what the loader accepts): letters, digits and `-`.
        let letters = Array("abcdefghijklmnopqrstuvwxyz0123456789-")
        let n = Int.random(in: 1...maxLength, using: &rng)
        return String((0..<n).map { _ in letters.randomElement(using: &rng)! })
    }

    static func identity(_ rng: inout SeededGenerator) -> Identity {
        Identity((0..<Int.random(in: 1...5, using: &rng)).map { _ in
            ServiceRef(segment: label(&rng, maxLength: Bool.random(using: &rng) ? 8 : 63), name: label(&rng, maxLength: Bool.random(using: &rng) ? 8 : 63))
        })
    }

    /// parse(build(x)) == x for every generated value whose readable form fits; a value that had to
    /// be shortened reads back as `.shortened` / `.unreadable` with the same text.
    @Test func generatedValuesRoundTrip() {
        var rng = SeededGenerator(seed: 10 &* 0x9E37_79B9_7F4A_7C15)
        var fitting = 0, shortened = 0
        for _ in 0..<500 {
            let id = Self.identity(&rng)
            let f = AddressFamily.allCases.randomElement(using: &rng)!
            let segments = (0..<Int.random(in: 1...4, using: &rng)).map { _ in Self.label(&rng, maxLength: 20) }
            let chains: [ChainName] = IdentityChainKind.allCases.map { .identity($0, id) }
                + [.audit(segments: segments), .forward, .input, .output, .prerouting, .quarantine]
            for c in chains {
                let name = c.name
                #expect(name.utf8.count <= 255)
                if name.utf8.count < 255 || !name.contains(".") {
                    #expect(ChainName(parsing: name) == c, "\(name)")
                    fitting += 1
                } else {
                    #expect(ChainName(parsing: name) == .shortened(name), "\(name)")
                    shortened += 1
                }
            }
            var sets: [SetName] = [.governed(f), .managed(f), .service(id.services[0], f), .ports, .bindEther, .bindV4, .bindV6, .bindARP]
                + [.identityNumbers(f)] + IdentityChainKind.allCases.map { .dispatch($0) }
            if id.services.count >= 2, SetName.sourceGroup(id, f).fitsUnshortened { sets.append(.sourceGroup(id, f)) }
            // Sorted, disjoint, non-adjacent ports and ranges (what `PortSet` merges a flow's into).
            var ports: [ClosedRange<UInt16>] = [], next = Int.random(in: 0...100, using: &rng)
            for _ in 0..<Int.random(in: 2...8, using: &rng) where next < 65_000 {
                let width = Bool.random(using: &rng) ? 0 : Int.random(in: 1...300, using: &rng)
                ports.append(UInt16(next)...UInt16(next + width))
                next += width + Int.random(in: 2...3_000, using: &rng)
            }
            sets.append(.destinationPorts(Bool.random(using: &rng) ? .tcp : .udp, ports))
            for s in sets {
                #expect(SetName(parsing: s.name) == s, "\(s.name)")
                fitting += 1
            }
            let line = Int.random(in: 1...1_000_000, using: &rng)
            let file = (0..<Int.random(in: 1...12, using: &rng)).map { _ in Self.label(&rng, maxLength: 20) }.joined(separator: "/") + ".yaml"
            var roles: [RuleRole] = [.allow(flow: FlowReference(file: file, line: line)), .sharedDenial(.allCases.randomElement(using: &rng)!),
                                     .unclassified(.allCases.randomElement(using: &rng)!), .quarantine, .routerAdvertisements,
                                     .portBinding(.allCases.randomElement(using: &rng)!)]
            for who in [DenialSubject.identity(id), .segments(segments)] {
                for role in [RuleRole.deny(who), .audit(who)] {
                    if role.comment.contains("~") {
                        let text = String(role.comment.dropLast(role.comment.hasSuffix(" denies") ? 7 : 11))
                        #expect(RuleRole(parsing: role.comment) == (role.comment.hasSuffix(" denies") ? .deny(.unreadable(text)) : .audit(.unreadable(text))))
                        shortened += 1
                    } else {
                        roles.append(role)
                    }
                }
            }
            for role in roles {
                #expect(RuleRole(parsing: role.comment) == role, "\(role.comment)")
                #expect(role.comment.utf8.count <= 128)
                fitting += 1
            }
            let prefix = LogPrefix.audit(segments: segments)
            #expect(prefix.text.utf8.count <= 127)
            #expect(LogPrefix(parsing: prefix.text) == (prefix.text.contains("~") ? .unreadableAudit(String(prefix.text.dropFirst(15).dropLast(2))) : prefix))
        }
        #expect(fitting > 5_000 && shortened > 50, "fitting \(fitting), shortened \(shortened)")
    }

    /// Names of other programs, and near misses of ours, are not ours.
    @Test(arguments: ["filter", "DOCKER-USER", "in_", "in_shop", "in_shop_api_x", "in_b_b__a_a", "audit_", "audit_a__b",
                      "svc_shop_api", "svc_shop_api_v5", "from_shop_api_v4", "ingress", "managed_v4x", "", "quarantined",
                      "tcp_", "tcp_80_80", "tcp_81_80", "tcp_80_81", "tcp_90-80", "udp_1-2-3", "udp_53_", "sctp_80_443", "tcp_80_70000"])
    func foreignNamesAreNotOurs(_ name: String) {
        #expect(ChainName(parsing: name) == nil, "\(name)")
        #expect(SetName(parsing: name) == nil, "\(name)")
    }

    @Test(arguments: ["", "policies/shop.yaml:", "shop.yaml:x1", "shared denies: something else", "port binding: guess",
                      "unclassified somewhere", "quarantined", "no role"])
    func foreignCommentsAreNotOurs(_ comment: String) {
        #expect(RuleRole(parsing: comment) == nil, "\(comment)")
    }
}

// MARK: - Location-independent tables

/// Issue 10 (measured): rule comments carried the policy path as given, so the same policies read
/// from another directory rewrote every chain. They now carry the path relative to the root given.
@Suite struct PolicyLocationIndependence {
    /// A copy of the example policies in a fresh temporary directory: (the directory to remove, `<it>/<leaf>`).
    static func copyOfExamplePolicies(leaf: String) throws -> (base: String, dir: String) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("bh-layout-\(UUID().uuidString)").path
        let dir = base + "/" + leaf
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        for name in try FileManager.default.contentsOfDirectory(atPath: TestSystem.repositoryRoot + "/policies") where name.hasSuffix(".yaml") {
            try FileManager.default.copyItem(atPath: TestSystem.repositoryRoot + "/policies/" + name, toPath: dir + "/" + name)
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: dir + "/" + name)
        }
        return (base, dir)
    }

    /// `path` written relative to the working directory (`../../tmp/…`).
    static func relative(_ path: String) -> String {
        let cwd = FileManager.default.currentDirectoryPath.split(separator: "/")
        let target = path.split(separator: "/")
        var common = 0
        while common < min(cwd.count, target.count), cwd[common] == target[common] { common += 1 }
        let up = Array(repeating: "..", count: cwd.count - common)
        return (up + target[common...].map(String.init)).joined(separator: "/")
    }

    static func load(_ paths: [String]) throws -> PolicySet {
        let loaded = PolicyLoader.load(paths: paths)
        #expect(!loaded.hasErrors, "\(loaded.diagnostics.map(\.formatted))")
        return loaded.policies
    }

    /// The example policies from the repository (absolute), from a copy in another directory of
    /// another name (absolute) and from that copy through a relative path: byte-identical tables,
    /// a diff of zero operations and a plan against either of nothing to do.
    @Test func samePoliciesFromAnotherDirectoryCompileToTheSameTable() throws {
        let (base, copy) = try Self.copyOfExamplePolicies(leaf: "etc/bulkhead/policy.d")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let relativeCopy = Self.relative(copy)
        #expect(!relativeCopy.hasPrefix("/") && relativeCopy != copy, "\(relativeCopy)")
        let inventory = try exampleInventory()
        let original = try Self.load([TestSystem.repositoryRoot + "/policies"])
        let variants = [try Self.load([copy]), try Self.load([relativeCopy]), try Self.load([copy + "/"])]
        let reference = Compiler.compile(original, inventory)
        #expect(!reference.table.rules.isEmpty)
        for (i, policies) in variants.enumerated() {
            #expect(policies.flows.map(\.location.file) != original.flows.map(\.location.file), "variant \(i) was read from elsewhere")
            let out = Compiler.compile(policies, inventory)
            #expect(out.table == reference.table && out.bridgeTable == reference.bridgeTable, "variant \(i)")
            #expect(NFTText.table(out.table) == NFTText.table(reference.table), "variant \(i): byte-identical listing")
            #expect(try Diff.between(desired: out.table, live: reference.table).isEmpty, "variant \(i): zero operations")
            let plan = try Planner().plan(policies: policies, inventory: inventory, live: reference.table, bridgeLive: reference.bridgeTable,
                                          baseline: .empty(reason: "test"))
            #expect(plan.operationCount == 0 && plan.opened.isEmpty && plan.closed.isEmpty, "variant \(i): \(plan.operationCount) operations")
        }
    }

    /// `plan` still prints the path the user gave (the table holds the root-relative one).
    @Test func planPrintsThePathGiven() throws {
        let (base, copy) = try Self.copyOfExamplePolicies(leaf: "policies")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let policies = try Self.load([copy])
        let plan = try Planner().plan(policies: policies, inventory: try exampleInventory(), live: nil, bridgeLive: nil, baseline: .empty(reason: "test"))
        #expect(!plan.opened.isEmpty)
        for change in plan.opened { #expect(change.grant.reference.hasPrefix(copy + "/"), "\(change.grant.reference)") }
        #expect(plan.desired.rules.contains { $0.comment == "shop.yaml:29" })
        #expect(!plan.desired.rules.contains { $0.comment?.contains(copy) == true })
    }

    /// Two roots holding the same relative path: each file is named with its root's last component,
    /// so their flows stay apart in the table; a unique name keeps its short form.
    @Test func twoRootsWithTheSameFileNameStayApart() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("bh-layout-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        for (dir, seg) in [("one", "a"), ("two", "b")] {
            try FileManager.default.createDirectory(atPath: base + "/" + dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let yaml = "segment: \(seg)\nnetworks: [n]\nservices:\n  s:\n    labels: {x: \(seg)}\nflows:\n  - from: world\n    to: s\n    ports: [tcp/80]\n"
            FileManager.default.createFile(atPath: base + "/\(dir)/p.yaml", contents: Data(yaml.utf8), attributes: [.posixPermissions: 0o644])
        }
        FileManager.default.createFile(atPath: base + "/two/only.yaml", contents: Data("segment: c\nnetworks: [m]\nservices:\n  t:\n    labels: {y: c}\n".utf8),
                                       attributes: [.posixPermissions: 0o644])
        let found = PolicyFiles.discover([base + "/one", base + "/two"])
        #expect(found.files.map(\.name) == ["one/p.yaml", "only.yaml", "two/p.yaml"], "\(found.files.map(\.name))")
        #expect(PolicyFiles.discover([base + "/one/p.yaml"]).files.map(\.name) == ["p.yaml"], "a file given itself: its name")
        let policies = try Self.load([base + "/one", base + "/two"])
        #expect(Set(policies.flows.map { FlowReference($0).text }) == ["one/p.yaml:7", "two/p.yaml:7"])
    }
}

