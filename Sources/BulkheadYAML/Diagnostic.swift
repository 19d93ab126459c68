/// A position in a source file: 1-based line and column (columns count characters, not bytes).
public struct Mark: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    /// The start of a file: where whole-file problems (unreadable, empty, too large) are reported.
    public static let start = Mark(line: 1, column: 1)

    public static func < (a: Mark, b: Mark) -> Bool {
        (a.line, a.column) < (b.line, b.column)
    }

    public var description: String { "\(line):\(column)" }
}

/// One finding about an input file, with a stable machine-readable code.
///
/// Codes are part of Bulkhead's public interface (CI pipelines match on them): never rename one.
public struct Diagnostic: Sendable, Hashable, Codable {
    public enum Severity: String, Sendable, Hashable, Codable, Comparable {
        case error
        case warning

        public static func < (a: Severity, b: Severity) -> Bool {
            a == .error && b == .warning
        }
    }

    public var severity: Severity
    public var code: DiagnosticCode
    public var message: String
    public var file: String
    public var line: Int
    public var column: Int

    public init(_ severity: Severity, _ code: DiagnosticCode, _ message: String, file: String, at mark: Mark) {
        self.severity = severity
        self.code = code
        self.message = message
        self.file = file
        self.line = mark.line
        self.column = mark.column
    }

    public var mark: Mark { Mark(line: line, column: column) }

    /// `file:line:column: severity[code]: message`, the form compilers use, so editors can jump to it.
    public var formatted: String {
        "\(file):\(line):\(column): \(severity.rawValue)[\(code.rawValue)]: \(message)"
    }

    /// The order every output uses: by file, line, column, then severity and code, so output never flickers.
    public static func sorted(_ diagnostics: [Diagnostic]) -> [Diagnostic] {
        diagnostics.sorted {
            ($0.file, $0.line, $0.column, $0.severity == .error ? 0 : 1, $0.code.rawValue, $0.message)
                < ($1.file, $1.line, $1.column, $1.severity == .error ? 0 : 1, $1.code.rawValue, $1.message)
        }
    }
}

/// Every diagnostic code Bulkhead emits. The raw value is the stable code printed and matched by CI.
public enum DiagnosticCode: String, Sendable, Hashable, Codable, CaseIterable {
    // Reading and YAML structure.
    case unreadable = "unreadable"
    case noPolicyFiles = "no-policy-files"
    case emptyFile = "empty-file"
    case notText = "not-text"
    case encoding = "encoding"
    case tooLarge = "too-large"
    case yamlSyntax = "yaml-syntax"
    case yamlAlias = "yaml-alias"
    case yamlTag = "yaml-tag"
    case duplicateKey = "duplicate-key"
    // Schema.
    case unknownKey = "unknown-key"
    case missingKey = "missing-key"
    case wrongType = "wrong-type"
    case emptyValue = "empty-value"
    case invalidName = "invalid-name"
    case reservedName = "reserved-name"
    case invalidMode = "invalid-mode"
    case invalidSelector = "invalid-selector"
    case invalidPort = "invalid-port"
    case invalidCIDR = "invalid-cidr"
    case invalidEndpoint = "invalid-endpoint"
    case invalidAddress = "invalid-address"
    // Cross references.
    case duplicateSegment = "duplicate-segment"
    case duplicateService = "duplicate-service"
    case unknownService = "unknown-service"
    case unknownSegment = "unknown-segment"
    case duplicateContainer = "duplicate-container"
    case duplicateNetwork = "duplicate-network"
    // What apply would refuse (validate compiles and checks the ruleset like the kernel).
    case notProgrammable = "not-programmable"
    // Warnings: policy lint.
    case unusedService = "unused-service"
    case redundantFlow = "redundant-flow"
    case cidrHostBits = "cidr-host-bits"
    case ineffectiveFlow = "ineffective-flow"
    // Warnings that need an inventory.
    case unmatchedSelector = "unmatched-selector"
    case unmanagedContainer = "unmanaged-container"
    case overlappingServices = "overlapping-services"
    case cidrOverlapsGoverned = "cidr-overlaps-governed"
    case unknownNetwork = "unknown-network"
    // Warnings about inventories that lie: the address is not enrolled (see `Evaluator`).
    case addressOutsideSubnet = "address-outside-subnet"
    case hostAddressClaimed = "host-address-claimed"
    case duplicateAddress = "duplicate-address"
    // Warnings about the policy files themselves (the agent refuses insecure ones).
    case insecurePermissions = "insecure-permissions"
    case skippedEntry = "skipped-entry"

    /// The severity this code always has.
    public var severity: Diagnostic.Severity {
        switch self {
        case .unusedService, .redundantFlow, .cidrHostBits, .ineffectiveFlow, .unmatchedSelector,
             .unmanagedContainer, .overlappingServices, .cidrOverlapsGoverned, .unknownNetwork,
             .addressOutsideSubnet, .hostAddressClaimed, .duplicateAddress,
             .insecurePermissions, .skippedEntry:
            return .warning
        default:
            return .error
        }
    }

    /// One sentence for documentation, SARIF rule descriptions and `--help`.
    public var summary: String {
        switch self {
        case .unreadable: return "The file or directory cannot be read."
        case .noPolicyFiles: return "A directory holds no *.yaml or *.yml file."
        case .emptyFile: return "The file holds no YAML document."
        case .notText: return "The file is binary, not YAML text."
        case .encoding: return "The file is not valid UTF-8."
        case .tooLarge: return "The file is over 1 MiB, or nested deeper than 64 levels."
        case .yamlSyntax: return "The YAML does not parse."
        case .yamlAlias: return "Anchors and aliases are not allowed: write each value out."
        case .yamlTag: return "Explicit YAML tags are not allowed: every scalar is a string."
        case .duplicateKey: return "A mapping repeats a key."
        case .unknownKey: return "A key that the format does not define (often a typo)."
        case .missingKey: return "A required key is absent."
        case .wrongType: return "A value has the wrong shape (mapping, list or scalar)."
        case .emptyValue: return "A value that must not be empty is empty."
        case .invalidName: return "A segment or service name is not a DNS label."
        case .reservedName: return "'world' and 'host' are reserved endpoint names."
        case .invalidMode: return "mode is neither 'enforce' nor 'audit'."
        case .invalidSelector: return "A label selector is empty or malformed."
        case .invalidPort: return "A port is not tcp/N, tcp/N-M, udp/N, udp/N-M, icmp or any."
        case .invalidCIDR: return "A CIDR does not parse."
        case .invalidEndpoint: return "An endpoint is not NAME, SEGMENT/NAME, world, host or {cidr: …}."
        case .invalidAddress: return "An IP address in the inventory does not parse."
        case .duplicateSegment: return "Two documents define the same segment."
        case .duplicateService: return "A segment defines a service twice."
        case .unknownService: return "A flow names a service that its segment does not define."
        case .unknownSegment: return "A flow names a segment that no file defines."
        case .duplicateContainer: return "The inventory lists a container twice."
        case .duplicateNetwork: return "The inventory lists a network twice."
        case .notProgrammable: return "The compiled ruleset would not fit the kernel's limits: apply would refuse it."
        case .unusedService: return "A service appears in no flow, so all its traffic is denied."
        case .redundantFlow: return "Everything a flow allows, other flows already allow."
        case .cidrHostBits: return "A CIDR has host bits set (10.1.2.3/8 means 10.0.0.0/8)."
        case .ineffectiveFlow: return "A flow can never match (for example from world to world)."
        case .unmatchedSelector: return "No container in the inventory matches a service."
        case .unmanagedContainer: return "A container on a governed network matches no service and will be isolated."
        case .overlappingServices: return "One container is matched by several services."
        case .cidrOverlapsGoverned: return "A CIDR endpoint overlaps governed subnets, which it never names."
        case .unknownNetwork: return "A segment governs a network the inventory does not have."
        case .addressOutsideSubnet: return "A container's address lies outside its network's subnets: it is not enrolled."
        case .hostAddressClaimed: return "A container claims a gateway or host address: it is not enrolled."
        case .duplicateAddress: return "Several containers claim one address: it is enrolled for none of them."
        case .insecurePermissions: return "A policy file or directory is writable by group or others, or owned by another user than root or the agent; the agent refuses it."
        case .skippedEntry: return "A directory entry was not read: a symlink loop, a second path to a file already read, or a symlink to a symlink."
        }
    }
}
