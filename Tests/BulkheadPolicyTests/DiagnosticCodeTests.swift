import BulkheadInventory
import BulkheadPolicy
import BulkheadYAML
import Foundation
import Glibc
import Testing

/// One test per diagnostic code: the code, its line and its column.
@Suite struct ErrorCodes {
    @Test func baseIsClean() {
        #expect(load(base).diagnostics.isEmpty, "\(load(base).diagnostics.map(\.formatted))")
    }

    @Test func yamlSyntax() {
        let r = load("segment: shop\nnetworks: [a, b\nservices: {}\n")
        let d = expectOne(r.diagnostics, .yamlSyntax, at: 3, 9)
        #expect(d?.message.contains("flow sequence") == true)
    }

    @Test func yamlSyntaxBadIndentation() {
        let r = load("segment: shop\n networks: [a]\n")
        expectOne(r.diagnostics, .yamlSyntax, at: 2, 10)
    }

    @Test func duplicateKey() {
        let r = load(base + "segment: other\n")
        expectOne(r.diagnostics, .duplicateKey, at: 15, 1, containing: "first at line 1")
    }

    @Test func unknownKeyWithDidYouMean() {
        let r = load(base.replacingOccurrences(of: "flows:", with: "flow:"))
        expectOne(r.diagnostics, .unknownKey, at: 8, 1, containing: "did you mean 'flows'?")
    }

    @Test func unknownKeyInFlow() {
        let r = load(base.replacingOccurrences(of: "    ports: [tcp/8080]", with: "    port: [tcp/8080]"))
        expectOne(r.diagnostics, .unknownKey, at: 11, 5, containing: "did you mean 'ports'?")
        expectOne(r.diagnostics, .missingKey, at: 9, 5, containing: "'ports'")
    }

    @Test func missingKey() {
        let r = load(base.replacingOccurrences(of: "networks: [shop_default]\n", with: ""))
        expectOne(r.diagnostics, .missingKey, at: 1, 1, containing: "'networks'")
    }

    @Test func wrongType() {
        let r = load(base.replacingOccurrences(of: "networks: [shop_default]", with: "networks: {a: b}"))
        expectOne(r.diagnostics, .wrongType, at: 2, 11, containing: "must be a list")
    }

    @Test func wrongTypeDocument() {
        let r = load("- just\n- a list\n")
        expectOne(r.diagnostics, .wrongType, at: 1, 1, containing: "must be a mapping")
    }

    @Test func invalidName() {
        let r = load(base.replacingOccurrences(of: "segment: shop", with: "segment: Shop"))
        expectOne(r.diagnostics, .invalidName, at: 1, 10, containing: "write 'shop'")
        let long = load(base.replacingOccurrences(of: "  api:", with: "  " + String(repeating: "a", count: 64) + ":"))
        expectOne(long.diagnostics, .invalidName, at: 6, 3, containing: "64 characters")
        let dash = load(base.replacingOccurrences(of: "segment: shop", with: "segment: -shop"))
        expectOne(dash.diagnostics, .invalidName, at: 1, 10)
    }

    @Test func reservedName() {
        let r = load(base.replacingOccurrences(of: "  api:", with: "  world:"))
        expectOne(r.diagnostics, .reservedName, at: 6, 3)
    }

    @Test func duplicateSegmentAcrossFiles() {
        let r = load([("a.yaml", base), ("b.yaml", "# other\n" + base)])
        expectOne(r.diagnostics, .duplicateSegment, at: 2, 10, file: "b.yaml", containing: "a.yaml:1")
    }

    @Test func duplicateSegmentInOneFile() {
        let r = load(base + "---\n" + base)
        expectOne(r.diagnostics, .duplicateSegment, at: 16, 10, containing: "t.yaml:1")
    }

    @Test func duplicateService() {
        let r = load(base.replacingOccurrences(of: "  api:\n    labels: {app: api}\n", with: "  api:\n    labels: {app: api}\n  api:\n    labels: {app: api2}\n"))
        expectOne(r.diagnostics, .duplicateService, at: 8, 3, containing: "first at line 6")
    }

    @Test func unknownServiceWithDidYouMean() {
        let r = load(base.replacingOccurrences(of: "    to: api", with: "    to: apii"))
        let d = expectOne(r.diagnostics, .unknownService, at: 10, 9)
        #expect(d?.message == "segment 'shop' has no service 'apii' (did you mean 'api'?)")
    }

    @Test func unknownServiceInOtherSegment() {
        let other = "segment: billing\nnetworks: [b]\nservices:\n  ledger:\n    labels: {app: ledger}\nflows:\n  - from: shop/api\n    to: ledger\n    ports: [tcp/443]\n"
        let r = load([("a.yaml", base + "  - from: api\n    to: billing/ledgr\n    ports: [tcp/443]\n"), ("b.yaml", other)])
        expectOne(r.diagnostics, .unknownService, at: 16, 9, file: "a.yaml", containing: "did you mean 'billing/ledger'?")
    }

    @Test func unknownSegment() {
        let r = load(base + "  - from: api\n    to: biling/ledger\n    ports: [tcp/443]\n")
        expectOne(r.diagnostics, .unknownSegment, at: 16, 9)
    }

    @Test(arguments: [
        ("80", "write tcp/80 or udp/80"),
        ("tcp/0", "out of range"),
        ("tcp/65536", "out of range"),
        ("udp/90-80", "reversed"),
        ("TCP/80", "write 'tcp/80'"),
        ("sctp/80", "is not a port"),
        ("tcp/", "is not a port"),
        ("tcp/8o", "is not a port"),
    ])
    func invalidPort(port: String, hint: String) {
        let r = load(base.replacingOccurrences(of: "ports: [tcp/8080]", with: "ports: [tcp/22, \(port)]"))
        expectOne(r.diagnostics, .invalidPort, at: 11, 21, containing: hint)
    }

    @Test func bareNumberPortIsNotCoerced() {
        // `ports: [80]` must be an error, never silently tcp/80.
        let r = load(base.replacingOccurrences(of: "ports: [tcp/8080]", with: "ports: [8080]"))
        expectOne(r.diagnostics, .invalidPort, at: 11, 13, containing: "tcp/8080")
    }

    @Test func invalidCIDR() {
        let r = load(base + "  - from: api\n    to: {cidr: 10.0.0.0/33}\n    ports: [tcp/443]\n")
        expectOne(r.diagnostics, .invalidCIDR, at: 16, 16)
        let v6 = load(base + "  - from: api\n    to: [{cidr: \"2001:db8::/129\"}]\n    ports: [tcp/443]\n")
        expectOne(v6.diagnostics, .invalidCIDR, at: 16, 17)
    }

    @Test func invalidSelector() {
        let r = load(base.replacingOccurrences(of: "labels: {app: api}", with: "labels: {}"))
        expectOne(r.diagnostics, .invalidSelector, at: 7, 13)
        let bad = load(base.replacingOccurrences(of: "labels: {app: api}", with: "labels: {\"a b\": api}"))
        expectOne(bad.diagnostics, .invalidSelector, at: 7, 14)
    }

    @Test func invalidMode() {
        let r = load("mode: enforcing\n" + base)
        expectOne(r.diagnostics, .invalidMode, at: 1, 7, containing: "did you mean 'enforce'?")
    }

    @Test func yamlAlias() {
        let r = load(base.replacingOccurrences(of: "labels: {app: api}", with: "labels: &l {app: api}") + "  - from: api\n    to: frontend\n    ports: *p\n")
        let anchors = r.diagnostics.filter { $0.code == .yamlAlias }  // code "yaml-alias"
        #expect(anchors.count == 2)
        #expect(anchors.first?.line == 7 && anchors.first?.column == 13)
        #expect(anchors.last?.line == 17 && anchors.last?.column == 12)
        #expect(anchors.allSatisfy { $0.message.contains("anchors and aliases are not allowed") })
    }

    @Test func tooLargeFile() {
        let big = base + String(repeating: "# padding padding padding padding padding padding\n", count: 22_000)
        let r = load(big)
        expectOne(r.diagnostics, .tooLarge, at: 1, 1, containing: "1 MiB")
    }

    @Test func tooDeep() {
        let deep = "segment: shop\ndescription: " + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "\n"
        let r = load(deep)
        // The mapping is level 1; the 64th "[" (column 14 + 63) would be level 65.
        expectOne(r.diagnostics, .tooLarge, at: 2, 77, containing: "deeper than 64")
    }

    @Test func emptyFile() {
        expectOne(load("").diagnostics, .emptyFile, at: 1, 1)
        expectOne(load("# only a comment\n\n").diagnostics, .emptyFile, at: 1, 1)
        expectOne(load("---\n...\n---\n").diagnostics, .emptyFile, at: 1, 1)
    }

    @Test func binaryJunk() {
        let bytes: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x00, 0x00, 0xff]
        let r = PolicyLoader.load(sources: [("a.out", bytes)])
        expectOne(r.diagnostics, .notText, at: 1, 7)
        #expect(r.diagnostics.count == 1)
    }

    @Test func notUTF8() {
        var bytes = Array("segment: shop\ndescription: caf".utf8)
        bytes.append(0xE9)  // Latin-1 é
        bytes += Array("\n".utf8)
        let r = PolicyLoader.load(sources: [("latin1.yaml", bytes)])
        expectOne(r.diagnostics, .encoding, at: 2, 17, containing: "UTF-8")
    }

    @Test func explicitTag() {
        let r = load(base.replacingOccurrences(of: "segment: shop", with: "segment: !!int 5"))
        expectOne(r.diagnostics, .yamlTag, at: 1, 10)
    }

    @Test func invalidEndpoint() {
        let r = load(base + "  - from: api\n    to: 10.0.0.0/8\n    ports: [tcp/443]\n")
        expectOne(r.diagnostics, .invalidEndpoint, at: 16, 9, containing: "{cidr: 10.0.0.0/8}")
        let r2 = load(base + "  - from: api\n    to: a/b/c\n    ports: [tcp/443]\n")
        expectOne(r2.diagnostics, .invalidEndpoint, at: 16, 9)
    }

    @Test func emptyValues() {
        let r = load(base.replacingOccurrences(of: "ports: [tcp/8080]", with: "ports: []"))
        expectOne(r.diagnostics, .emptyValue, at: 11, 12)
        let n = load(base.replacingOccurrences(of: "networks: [shop_default]", with: "networks: []"))
        expectOne(n.diagnostics, .emptyValue, at: 2, 11)
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

@Suite struct WarningCodes {
    @Test func unusedService() {
        let r = load(base.replacingOccurrences(of: "  api:\n", with: "  db:\n    labels: {app: db}\n  api:\n"))
        expectOne(r.diagnostics, .unusedService, at: 6, 3, containing: "shop/db")
    }

    @Test func redundantFlowNamesTheCoveringLine() {
        let r = load(base + "  - from: frontend\n    to: api\n    ports: [tcp/8080]\n")
        expectOne(r.diagnostics, .redundantFlow, at: 15, 5, containing: "line 9")
    }

    @Test func redundantFlowCoveredByAnyAndUnion() {
        let text = base + """
          - from: frontend
            to: api
            ports: [tcp/1-1000]
          - from: frontend
            to: api
            ports: [tcp/1001-65535]
          - from: frontend
            to: api
            ports: [tcp/443, tcp/8443]

        """
        let r = load(text)
        let redundant = r.diagnostics.filter { $0.code == .redundantFlow }
        // The exact tcp/8080 flow (line 9) and the last one are covered by the two ranges.
        #expect(redundant.map(\.line) == [9, 21], "\(redundant.map(\.formatted))")
    }

    @Test func cidrCoveredByWorldIsRedundant() {
        let text = base + "  - from: api\n    to: world\n    ports: [tcp/443]\n  - from: api\n    to: {cidr: 192.0.2.0/24}\n    ports: [tcp/443]\n"
        expectOne(load(text).diagnostics, .redundantFlow, at: 18, 5, containing: "line 15")
    }

    @Test func widerFlowMakesTheNarrowOneRedundantNotItself() {
        let r = load(base + "  - from: frontend\n    to: api\n    ports: [tcp/8080, tcp/9090]\n")
        expectOne(r.diagnostics, .redundantFlow, at: 9, 5, containing: "line 15")
    }

    @Test func cidrHostBits() {
        let r = load(base + "  - from: api\n    to: {cidr: 10.1.2.3/8}\n    ports: [tcp/443]\n")
        expectOne(r.diagnostics, .cidrHostBits, at: 16, 16, containing: "10.0.0.0/8")
        #expect(r.policies.flows.last?.to.first?.endpoint == .cidr(IPNetwork("10.0.0.0/8")!))
    }

    @Test func ineffectiveFlow() {
        let r = load(base + "  - from: world\n    to: host\n    ports: [tcp/22]\n")
        expectOne(r.diagnostics, .ineffectiveFlow, at: 15, 5)
    }
}

/// Codes that need `--inventory`.
@Suite struct InventoryCodes {
    let inventory = """
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

    func run(_ policy: String) -> [Diagnostic] {
        let r = load(policy)
        let (inv, invDiagnostics) = InventoryLoader.load(Array(inventory.utf8), file: "inv.yaml")
        #expect(invDiagnostics.isEmpty, "\(invDiagnostics.map(\.formatted))")
        return InventoryLint.run(r.policies, inv!)
    }

    @Test func unmatchedSelector() {
        let d = run(base)
        expectOne(d, .unmatchedSelector, at: 7, 13, containing: "shop/api")
    }

    @Test func unmanagedContainer() {
        expectOne(run(base), .unmanagedContainer, at: 11, 5, file: "inv.yaml", containing: "'stray'")
    }

    @Test func overlappingServices() {
        let d = run(base.replacingOccurrences(of: "labels: {app: api}", with: "labels: {role: api}"))
        expectOne(d, .overlappingServices, at: 15, 5, file: "inv.yaml", containing: "shop/api, shop/frontend")
    }

    @Test func cidrOverlapsGoverned() {
        let d = run(base + "  - from: api\n    to: {cidr: 172.20.128.0/17}\n    ports: [tcp/443]\n")
        expectOne(d, .cidrOverlapsGoverned, at: 16, 9, containing: "172.20.0.0/16")
    }

    @Test func unknownNetwork() {
        let d = run(base.replacingOccurrences(of: "networks: [shop_default]", with: "networks: [shop_default, shop_defualt]"))
        expectOne(d, .unknownNetwork, at: 2, 26, containing: "did you mean 'shop_default'?")
    }

    /// An inventory that lies (issue 8, item 9): an address outside its network's subnets, a
    /// container claiming the gateway, two containers claiming one address. Each is reported, and
    /// none of those addresses is enrolled.
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

    func runLying() -> [Diagnostic] {
        let (inv, invDiagnostics) = InventoryLoader.load(Array(lyingInventory.utf8), file: "inv.yaml")
        #expect(invDiagnostics.isEmpty, "\(invDiagnostics.map(\.formatted))")
        return InventoryLint.run(load(base).policies, inv!)
    }

    @Test func addressOutsideSubnet() {
        expectOne(runLying(), .addressOutsideSubnet, at: 6, 5, file: "inv.yaml", containing: "address 8.8.8.8 of container 'liar' is not enrolled")
    }

    @Test func hostAddressClaimed() {
        expectOne(runLying(), .hostAddressClaimed, at: 10, 5, file: "inv.yaml", containing: "172.20.0.1 of container 'gw'")
    }

    @Test func duplicateAddress() {
        let d = runLying().filter { $0.code.rawValue == "duplicate-address" }
        #expect(d.map(\.line) == [14, 18], "\(d.map(\.formatted))")
        #expect(d.allSatisfy { $0.severity == DiagnosticCode.duplicateAddress.severity && $0.message.contains("containers twin-a, twin-b all claim it") })
    }

    /// sshd's StrictModes for policies: writable by group or others, or owned by another user.
    @Test func insecurePermissions() throws {
        let dir = try ScratchDir()
        let file = dir.path + "/shop.yaml"
        #expect(try load(paths: dir.path).diagnostics.isEmpty)
        #expect(chmod(file, 0o666) == 0)
        expectOne(try load(paths: dir.path).diagnostics, .insecurePermissions, at: 1, 1, file: file, containing: "writable by everyone (mode 666)")
        #expect(chmod(file, 0o644) == 0 && chmod(dir.path, 0o775) == 0)
        expectOne(try load(paths: dir.path).diagnostics, .insecurePermissions, at: 1, 1, file: dir.path, containing: "writable by its group (mode 775)")
        #expect(chmod(dir.path, 0o755) == 0)
        #expect(chown(file, 65534, 65534) == 0, "chown needs root")
        expectOne(try load(paths: dir.path).diagnostics, .insecurePermissions, at: 1, 1, file: file, containing: "owned by uid 65534")
        // A warning for validate: the policies still load (the agent is the one that refuses).
        #expect(try !load(paths: dir.path).hasErrors)
    }

    @Test func skippedEntry() throws {
        let dir = try ScratchDir()
        try dir.link("loop", to: ".")
        expectOne(try load(paths: dir.path).diagnostics, .skippedEntry, at: 1, 1, file: dir.path + "/loop", containing: "symlink loop")
    }

    @Test func inventoryErrors() {
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
        expectOne(d, .invalidCIDR, at: 3, 15)
        expectOne(d, .duplicateNetwork, at: 4, 5)
        expectOne(d, .invalidAddress, at: 7, 26, containing: "IPv4")
        expectOne(d, .duplicateContainer, at: 8, 5)
    }
}

/// Guards the rule that every code has a test: each `DiagnosticCode` case must be asserted somewhere
/// in the test sources (as `.caseName` in Swift or `error[code]`/`"code"` in the CLI tests).
@Test func everyDiagnosticCodeIsTested() throws {
    let fm = FileManager.default
    var text = ""
    for dir in ["Tests/BulkheadPolicyTests", "Tests/BulkheadCLITests"] {
        for name in try fm.contentsOfDirectory(atPath: repositoryRoot + "/" + dir) where name.hasSuffix(".swift") {
            text += try String(contentsOfFile: repositoryRoot + "/" + dir + "/" + name, encoding: .utf8)
        }
    }
    let untested = DiagnosticCode.allCases.filter { code in
        let caseName = "\(code)"
        return !text.contains(", .\(caseName),") && !text.contains("[\(code.rawValue)]") && !text.contains("\"\(code.rawValue)\"")
    }
    #expect(untested.isEmpty, "codes without a test: \(untested.map(\.rawValue))")
}
