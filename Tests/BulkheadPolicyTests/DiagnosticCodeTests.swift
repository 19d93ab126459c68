import BulkheadCompiler
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadYAML
import Foundation
import Glibc
import Testing

/// What one diagnostic case saw: every diagnostic, and the file its diagnostics must name.
struct Observed: Sendable {
    var diagnostics: [Diagnostic]
    var file: String
}

/// One diagnostic assertion as data: an input, the code it must produce, and where. Every
/// diagnostic test is a row of `DiagnosticCase.all`, so the guard (`everyDiagnosticCodeHasACase`)
/// enumerates the assertions themselves: a code mentioned only in a comment or a negative check has
/// no row and fails it.
struct DiagnosticCase: Sendable, CustomTestStringConvertible {
    let name: String
    let code: DiagnosticCode
    /// Where each diagnostic with `code` must be, in order: exactly these, no more, no fewer.
    let at: [Mark]
    /// A phrase every one of them must contain (the "what next" of the message), if any.
    let containing: String?
    let input: @Sendable () throws -> Observed

    var testDescription: String { "\(code.rawValue): \(name)" }

    /// A policy given as text in `t.yaml`.
    static func text(_ name: String, _ text: String, _ code: DiagnosticCode, at line: Int, _ column: Int,
                     containing: String? = nil) -> DiagnosticCase {
        DiagnosticCase(name: name, code: code, at: [Mark(line: line, column: column)], containing: containing) {
            Observed(diagnostics: load(text).diagnostics, file: "t.yaml")
        }
    }

    static func custom(_ name: String, _ code: DiagnosticCode, at marks: [(Int, Int)], containing: String? = nil,
                       _ input: @escaping @Sendable () throws -> Observed) -> DiagnosticCase {
        DiagnosticCase(name: name, code: code, at: marks.map { Mark(line: $0.0, column: $0.1) }, containing: containing, input: input)
    }

    /// Asserts the case: the diagnostics with `code` are exactly at `at`, in `file`, with the code's
    /// severity and the phrase.
    func verify() throws {
        let seen = try input()
        let matching = seen.diagnostics.filter { $0.code == code }
        #expect(matching.map(\.mark) == at, "\(code.rawValue) at \(matching.map(\.mark)), expected \(at): \(seen.diagnostics.map(\.formatted))")
        #expect(!matching.isEmpty)
        for d in matching {
            #expect(d.file == seen.file, "\(d.formatted): expected file \(seen.file)")
            #expect(d.severity == code.severity, "\(d.formatted)")
            if let containing { #expect(d.message.contains(containing), "\(d.formatted): expected '\(containing)'") }
        }
    }
}

/// The inventory the inventory-lint cases run against.
let lintInventory = """
networks:
  - name: shop_default
    subnets: [172.20.0.0/16, "fd00:20::/64"]
  - name: other
    subnets: [10.9.0.0/16]
containers:
  - name: fe
    labels: {app: frontend}
    networks:
      shop_default: {ipv4: 172.20.0.2, ipv6: "fd00:20::2"}
  - name: stray
    labels: {app: nothing}
    networks:
      shop_default: {ipv4: 172.20.0.9}
  - name: both
    labels: {app: frontend, role: api}
    networks:
      shop_default: {ipv4: 172.20.0.3}

"""

/// An inventory that lies (issue 8, item 9): an address outside its network's subnets, a container
/// claiming the gateway, two containers claiming one address. Each is reported, and none of those
/// addresses is enrolled.
let lyingInventory = """
networks:
  - name: shop_default
    subnets: [172.20.0.0/16]
    gateways: [172.20.0.1]
containers:
  - name: liar
    labels: {app: api}
    networks:
      shop_default: {ipv4: 8.8.8.8}
  - name: gw
    labels: {app: api}
    networks:
      shop_default: {ipv4: 172.20.0.1}
  - name: twin-a
    labels: {app: frontend}
    networks:
      shop_default: {ipv4: 172.20.0.7}
  - name: twin-b
    labels: {app: api}
    networks:
      shop_default: {ipv4: 172.20.0.7}

"""

/// `policy` linted against `inventory`: the inventory's own diagnostics must be clean.
func lint(_ policy: String, inventory: String = lintInventory) throws -> [Diagnostic] {
    let (inv, invDiagnostics) = InventoryLoader.load(Array(inventory.utf8), file: "inv.yaml")
    #expect(invDiagnostics.isEmpty, "\(invDiagnostics.map(\.formatted))")
    return InventoryLint.run(load(policy).policies, try #require(inv))
}

/// Policy-file cases read from disk: `setUp` arranges the scratch directory before loading it.
func fromDisk(file: @escaping @Sendable (ScratchDir) -> String, _ setUp: @escaping @Sendable (ScratchDir) throws -> Void = { _ in }) -> @Sendable () throws -> Observed {
    {
        let dir = try ScratchDir()
        try setUp(dir)
        return Observed(diagnostics: try load(paths: dir.path).diagnostics, file: file(dir))
    }
}

extension DiagnosticCase {
    static let all: [DiagnosticCase] = structure + ports + references + warnings

    static let structure: [DiagnosticCase] = [
        // Reading. Whole-file and whole-directory problems carry line 1, column 1 (`Mark.start`) and
        // the path that could not be read: there is no position inside something unread.
        .custom("a path that does not exist", .unreadable, at: [(1, 1)], containing: "no such file or directory") {
            Observed(diagnostics: try load(paths: "/nonexistent/bulkhead-policies").diagnostics, file: "/nonexistent/bulkhead-policies")
        },
        .custom("a FIFO named *.yaml", .unreadable, at: [(1, 1)], containing: "a FIFO, not a regular file",
                fromDisk(file: { $0.path + "/x.yaml" }) { dir in #expect(mkfifo(dir.path + "/x.yaml", 0o644) == 0) }),
        .custom("an unreadable inventory", .unreadable, at: [(1, 1)], containing: "cannot read inventory") {
            Observed(diagnostics: InventoryLoader.load(path: "/nonexistent/inventory.yaml").1, file: "/nonexistent/inventory.yaml")
        },
        .custom("a directory without *.yaml or *.yml", .noPolicyFiles, at: [(1, 1)], containing: "holds no policy files (*.yaml or *.yml)",
                fromDisk(file: { $0.path }) { dir in
                    try FileManager.default.removeItem(atPath: dir.path + "/shop.yaml")
                    try "not a policy".write(toFile: dir.path + "/README.txt", atomically: true, encoding: .utf8)
                }),
        .text("nothing at all", "", .emptyFile, at: 1, 1),
        .text("only a comment", "# only a comment\n\n", .emptyFile, at: 1, 1),
        .text("empty documents", "---\n...\n---\n", .emptyFile, at: 1, 1),
        .custom("an ELF header", .notText, at: [(1, 7)]) {
            let r = PolicyLoader.load(sources: [("a.out", [0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x00, 0x00, 0xff])])
            #expect(r.diagnostics.count == 1, "\(r.diagnostics.map(\.formatted))")
            return Observed(diagnostics: r.diagnostics, file: "a.out")
        },
        .custom("Latin-1", .encoding, at: [(2, 17)], containing: "UTF-8") {
            // "caf" then a Latin-1 é.
            let r = PolicyLoader.load(sources: [("latin1.yaml", Array("segment: shop\ndescription: caf".utf8) + [0xE9] + Array("\n".utf8))])
            return Observed(diagnostics: r.diagnostics, file: "latin1.yaml")
        },
        .text("over 1 MiB", base + String(repeating: "# padding padding padding padding padding padding\n", count: 22_000),
              .tooLarge, at: 1, 1, containing: "1 MiB"),
        // The mapping is level 1; the 64th "[" (column 14 + 63) would be level 65.
        .text("nested too deep", "segment: shop\ndescription: " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "\n",
              .tooLarge, at: 2, 77, containing: "deeper than 64"),
        // YAML structure.
        .text("unclosed flow sequence", "segment: shop\nnetworks: [a, b\nservices: {}\n", .yamlSyntax, at: 3, 9, containing: "flow sequence"),
        .text("bad indentation", "segment: shop\n networks: [a]\n", .yamlSyntax, at: 2, 10),
        .custom("an anchor and an alias", .yamlAlias, at: [(7, 13), (17, 12)], containing: "anchors and aliases are not allowed") {
            let text = base.replacingOccurrences(of: "labels: {app: api}", with: "labels: &l {app: api}") + "  - from: api\n    to: frontend\n    ports: *p\n"
            return Observed(diagnostics: load(text).diagnostics, file: "t.yaml")
        },
        .text("explicit tag", base.replacingOccurrences(of: "segment: shop", with: "segment: !!int 5"), .yamlTag, at: 1, 10),
        .text("a key twice", base + "segment: other\n", .duplicateKey, at: 15, 1, containing: "first at line 1"),
        // Schema.
        .text("misspelt top-level key", base.replacingOccurrences(of: "flows:", with: "flow:"), .unknownKey, at: 8, 1, containing: "did you mean 'flows'?"),
        .text("misspelt key in a flow", base.replacingOccurrences(of: "    ports: [tcp/8080]", with: "    port: [tcp/8080]"),
              .unknownKey, at: 11, 5, containing: "did you mean 'ports'?"),
        .text("the flow missing its ports", base.replacingOccurrences(of: "    ports: [tcp/8080]", with: "    port: [tcp/8080]"),
              .missingKey, at: 9, 5, containing: "'ports'"),
        .text("no networks", base.replacingOccurrences(of: "networks: [shop_default]\n", with: ""), .missingKey, at: 1, 1, containing: "'networks'"),
        .text("networks as a mapping", base.replacingOccurrences(of: "networks: [shop_default]", with: "networks: {a: b}"),
              .wrongType, at: 2, 11, containing: "must be a list"),
        .text("document as a list", "- just\n- a list\n", .wrongType, at: 1, 1, containing: "must be a mapping"),
        .text("empty ports", base.replacingOccurrences(of: "ports: [tcp/8080]", with: "ports: []"), .emptyValue, at: 11, 12),
        .text("empty networks", base.replacingOccurrences(of: "networks: [shop_default]", with: "networks: []"), .emptyValue, at: 2, 11),
        .text("upper case", base.replacingOccurrences(of: "segment: shop", with: "segment: Shop"), .invalidName, at: 1, 10, containing: "write 'shop'"),
        .text("64 characters", base.replacingOccurrences(of: "  api:", with: "  " + String(repeating: "a", count: 64) + ":"),
              .invalidName, at: 6, 3, containing: "64 characters"),
        .text("leading dash", base.replacingOccurrences(of: "segment: shop", with: "segment: -shop"), .invalidName, at: 1, 10),
        .text("service named world", base.replacingOccurrences(of: "  api:", with: "  world:"), .reservedName, at: 6, 3),
        .text("mode: enforcing", "mode: enforcing\n" + base, .invalidMode, at: 1, 7, containing: "did you mean 'enforce'?"),
        .text("empty labels", base.replacingOccurrences(of: "labels: {app: api}", with: "labels: {}"), .invalidSelector, at: 7, 13),
        .text("label key with a space", base.replacingOccurrences(of: "labels: {app: api}", with: "labels: {\"a b\": api}"), .invalidSelector, at: 7, 14),
    ]

    static let ports: [DiagnosticCase] = [
        ("80", "write tcp/80 or udp/80"),
        ("tcp/0", "out of range"),
        ("tcp/65536", "out of range"),
        ("udp/90-80", "reversed"),
        ("TCP/80", "write 'tcp/80'"),
        ("sctp/80", "is not a port"),
        ("tcp/", "is not a port"),
        ("tcp/8o", "is not a port"),
    ].map { (port: String, hint: String) -> DiagnosticCase in
        .text("port \(port)", base.replacingOccurrences(of: "ports: [tcp/8080]", with: "ports: [tcp/22, \(port)]"), .invalidPort, at: 11, 21, containing: hint)
    } + [
        // `ports: [80]` must be an error, never silently tcp/80.
        .text("bare number", base.replacingOccurrences(of: "ports: [tcp/8080]", with: "ports: [8080]"), .invalidPort, at: 11, 13, containing: "tcp/8080"),
        .text("IPv4 prefix 33", base + "  - from: api\n    to: {cidr: 10.0.0.0/33}\n    ports: [tcp/443]\n", .invalidCIDR, at: 16, 16),
        .text("IPv6 prefix 129", base + "  - from: api\n    to: [{cidr: \"2001:db8::/129\"}]\n    ports: [tcp/443]\n", .invalidCIDR, at: 16, 17),
        .text("bare CIDR as endpoint", base + "  - from: api\n    to: 10.0.0.0/8\n    ports: [tcp/443]\n", .invalidEndpoint, at: 16, 9, containing: "{cidr: 10.0.0.0/8}"),
        .text("three-part endpoint", base + "  - from: api\n    to: a/b/c\n    ports: [tcp/443]\n", .invalidEndpoint, at: 16, 9),
    ]

    static let references: [DiagnosticCase] = [
        // Cross references.
        .custom("segment in two files", .duplicateSegment, at: [(2, 10)], containing: "a.yaml:1") {
            Observed(diagnostics: load([("a.yaml", base), ("b.yaml", "# other\n" + base)]).diagnostics, file: "b.yaml")
        },
        .text("segment twice in one file", base + "---\n" + base, .duplicateSegment, at: 16, 10, containing: "t.yaml:1"),
        .text("service twice", base.replacingOccurrences(of: "  api:\n    labels: {app: api}\n", with: "  api:\n    labels: {app: api}\n  api:\n    labels: {app: api2}\n"),
              .duplicateService, at: 8, 3, containing: "first at line 6"),
        .text("misspelt service", base.replacingOccurrences(of: "    to: api", with: "    to: apii"), .unknownService, at: 10, 9,
              containing: "segment 'shop' has no service 'apii' (did you mean 'api'?)"),
        .custom("misspelt service in another segment", .unknownService, at: [(16, 9)], containing: "did you mean 'billing/ledger'?") {
            let other = "segment: billing\nnetworks: [b]\nservices:\n  ledger:\n    labels: {app: ledger}\nflows:\n  - from: shop/api\n    to: ledger\n    ports: [tcp/443]\n"
            let r = load([("a.yaml", base + "  - from: api\n    to: billing/ledgr\n    ports: [tcp/443]\n"), ("b.yaml", other)])
            return Observed(diagnostics: r.diagnostics, file: "a.yaml")
        },
        .text("misspelt segment", base + "  - from: api\n    to: biling/ledger\n    ports: [tcp/443]\n", .unknownSegment, at: 16, 9),
        // What apply would refuse: an identity name over the kernel's limit, at its first service.
        .custom("identity name over the object-name limit", .notProgrammable, at: [(6, 3)], containing: "in_s_admin__s_web") {
            let yaml = "segment: s\nnetworks: [n]\nservices:\n  web:\n    labels: {role: web}\n  admin:\n    labels: {team: ops}\nflows:\n  - from: world\n    to: web\n    ports: [tcp/80]\n"
            let inventory = Inventory(
                networks: [Network(name: "n", subnets: [IPNetwork("10.76.0.0/24")!])],
                containers: [Container(name: "both", labels: ["role": "web", "team": "ops"], networks: ["n": Attachment(ipv4: IPAddress("10.76.0.2"))])])
            var options = Compiler.Options()
            options.limits.objectName = 16
            return Observed(diagnostics: Preflight.check(load(yaml).policies, inventory: inventory, options: options), file: "t.yaml")
        },
        // Inventory files.
        .custom("inventory prefix 33", .invalidCIDR, at: [(3, 15)], inventoryErrors),
        .custom("network twice", .duplicateNetwork, at: [(4, 5)], inventoryErrors),
        .custom("IPv6 address as ipv4", .invalidAddress, at: [(7, 26)], containing: "IPv4", inventoryErrors),
        .custom("container twice", .duplicateContainer, at: [(8, 5)], inventoryErrors),
    ]

    static let warnings: [DiagnosticCase] = [
        // Warnings: policy lint.
        .text("service in no flow", base.replacingOccurrences(of: "  api:\n", with: "  db:\n    labels: {app: db}\n  api:\n"),
              .unusedService, at: 6, 3, containing: "shop/db"),
        .text("the same flow twice", base + "  - from: frontend\n    to: api\n    ports: [tcp/8080]\n", .redundantFlow, at: 15, 5, containing: "line 9"),
        .custom("flows covered by two ranges", .redundantFlow, at: [(9, 5), (21, 5)]) {
            // The exact tcp/8080 flow (line 9) and the last one are covered by the two ranges.
            let text = base + "  - from: frontend\n    to: api\n    ports: [tcp/1-1000]\n  - from: frontend\n    to: api\n    ports: [tcp/1001-65535]\n"
                + "  - from: frontend\n    to: api\n    ports: [tcp/443, tcp/8443]\n"
            return Observed(diagnostics: load(text).diagnostics, file: "t.yaml")
        },
        .text("CIDR covered by world", base + "  - from: api\n    to: world\n    ports: [tcp/443]\n  - from: api\n    to: {cidr: 192.0.2.0/24}\n    ports: [tcp/443]\n",
              .redundantFlow, at: 18, 5, containing: "line 15"),
        // The wider flow makes the narrow one redundant, not itself.
        .text("a wider flow after", base + "  - from: frontend\n    to: api\n    ports: [tcp/8080, tcp/9090]\n", .redundantFlow, at: 9, 5, containing: "line 15"),
        .custom("host bits set", .cidrHostBits, at: [(16, 16)], containing: "10.0.0.0/8") {
            let r = load(base + "  - from: api\n    to: {cidr: 10.1.2.3/8}\n    ports: [tcp/443]\n")
            #expect(r.policies.flows.last?.to.first?.endpoint == .cidr(IPNetwork("10.0.0.0/8")!))
            return Observed(diagnostics: r.diagnostics, file: "t.yaml")
        },
        .text("world to host", base + "  - from: world\n    to: host\n    ports: [tcp/22]\n", .ineffectiveFlow, at: 15, 5),
        // Warnings that need an inventory.
        .custom("selector matching nobody", .unmatchedSelector, at: [(7, 13)], containing: "shop/api") {
            Observed(diagnostics: try lint(base), file: "t.yaml")
        },
        .custom("container in no service", .unmanagedContainer, at: [(11, 5)], containing: "'stray'") {
            Observed(diagnostics: try lint(base), file: "inv.yaml")
        },
        .custom("container in two services", .overlappingServices, at: [(15, 5)], containing: "shop/api, shop/frontend") {
            Observed(diagnostics: try lint(base.replacingOccurrences(of: "labels: {app: api}", with: "labels: {role: api}")), file: "inv.yaml")
        },
        .custom("CIDR over a governed network", .cidrOverlapsGoverned, at: [(16, 9)], containing: "172.20.0.0/16") {
            Observed(diagnostics: try lint(base + "  - from: api\n    to: {cidr: 172.20.128.0/17}\n    ports: [tcp/443]\n"), file: "t.yaml")
        },
        .custom("misspelt network", .unknownNetwork, at: [(2, 26)], containing: "did you mean 'shop_default'?") {
            Observed(diagnostics: try lint(base.replacingOccurrences(of: "networks: [shop_default]", with: "networks: [shop_default, shop_defualt]")), file: "t.yaml")
        },
        .custom("address outside the subnets", .addressOutsideSubnet, at: [(6, 5)], containing: "address 8.8.8.8 of container 'liar' is not enrolled") {
            Observed(diagnostics: try lint(base, inventory: lyingInventory), file: "inv.yaml")
        },
        .custom("the gateway claimed", .hostAddressClaimed, at: [(10, 5)], containing: "172.20.0.1 of container 'gw'") {
            Observed(diagnostics: try lint(base, inventory: lyingInventory), file: "inv.yaml")
        },
        .custom("one address, two containers", .duplicateAddress, at: [(14, 5), (18, 5)], containing: "containers twin-a, twin-b all claim it") {
            Observed(diagnostics: try lint(base, inventory: lyingInventory), file: "inv.yaml")
        },
        // Warnings about the policy files themselves (sshd's StrictModes): they still load.
        .custom("a file writable by everyone", .insecurePermissions, at: [(1, 1)], containing: "writable by everyone (mode 666)",
                fromDisk(file: { $0.path + "/shop.yaml" }) { dir in #expect(chmod(dir.path + "/shop.yaml", 0o666) == 0) }),
        .custom("a directory writable by its group", .insecurePermissions, at: [(1, 1)], containing: "writable by its group (mode 775)",
                fromDisk(file: { $0.path }) { dir in #expect(chmod(dir.path, 0o775) == 0) }),
        .custom("a file owned by another user", .insecurePermissions, at: [(1, 1)], containing: "owned by uid 65534") {
            let dir = try ScratchDir()
            #expect(chown(dir.path + "/shop.yaml", 65534, 65534) == 0, "chown needs root")
            let r = try load(paths: dir.path)
            // A warning for validate: the policies still load (the agent is the one that refuses).
            #expect(!r.hasErrors)
            return Observed(diagnostics: r.diagnostics, file: dir.path + "/shop.yaml")
        },
        .custom("a symlink loop", .skippedEntry, at: [(1, 1)], containing: "symlink loop",
                fromDisk(file: { $0.path + "/loop" }) { dir in try dir.link("loop", to: ".") }),
    ]

    /// One inventory with four errors, shared by four rows.
    static let inventoryErrors: @Sendable () -> Observed = {
        let bad = """
        networks:
          - name: n
            subnets: [10.0.0.0/33]
          - name: n
        containers:
          - name: a
            networks: {n: {ipv4: "fd00::1"}}
          - name: a
            networks: {n: {ipv6: 10.0.0.1}}

        """
        let (inv, d) = InventoryLoader.load(Array(bad.utf8), file: "i.yaml")
        #expect(inv == nil)
        return Observed(diagnostics: d, file: "i.yaml")
    }
}

/// Every row of `DiagnosticCase.all`: the code, its line and column, its file and message.
@Suite struct DiagnosticCodes {
    @Test(arguments: DiagnosticCase.all)
    func diagnostic(_ c: DiagnosticCase) throws {
        try c.verify()
    }

    @Test func baseIsClean() {
        #expect(load(base).diagnostics.isEmpty, "\(load(base).diagnostics.map(\.formatted))")
    }

    @Test func noYAML11Coercion() {
        // `no` and `on` stay strings (valid names), `0755` a label value as written.
        let text = """
        segment: "no"
        networks: [on]
        services:
          on:
            labels: {mode: 0755, enabled: yes}
        flows:
          - from: world
            to: on
            ports: [tcp/22]

        """
        let r = load(text)
        #expect(r.diagnostics.isEmpty, "\(r.diagnostics.map(\.formatted))")
        let svc = r.policies.segments.first?.services.first
        #expect(svc?.name == "on")
        #expect(svc?.labels == ["mode": "0755", "enabled": "yes"])
        #expect(r.policies.segments.first?.networks.first?.name == "on")
    }
}

/// Guards the rule that every code has a test: each `DiagnosticCode` case must have a row in
/// `DiagnosticCase.all`, which `DiagnosticCodes.diagnostic` asserts (code, line, column, file). The
/// guard reads the rows, not the source text: a comment naming a code is not a test of it.
@Test func everyDiagnosticCodeHasACase() {
    let covered = Set(DiagnosticCase.all.map(\.code))
    let untested = DiagnosticCode.allCases.filter { !covered.contains($0) }
    #expect(untested.isEmpty, "codes without a row in DiagnosticCase.all: \(untested.map(\.rawValue))")
    #expect(DiagnosticCase.all.count >= DiagnosticCode.allCases.count)
}
