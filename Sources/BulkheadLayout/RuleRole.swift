import BulkheadPolicy
import BulkheadRuleset

/// Where a flow was written, as a rule comment carries it: the policy file *relative to the policy
/// root it was found under* (`shop.yaml`, `team/shop.yaml`: `Flow.policyFile`) and the line. The
/// kernel's table therefore does not depend on where the policies were read from: `./policies`
/// and `/etc/bulkhead/policies` compile to the same bytes. Commands that talk to a person
/// (`explain`, `plan`) print the path as given (`Flow.reference`).
///
/// `file` is already in its kernel form: printable ASCII (`BoundedText.printable`: CR, LF, ESC,
/// `"` and `\` become `\xNN`), and a path too long to fit `KernelLimits.comment` (128) with its
/// line keeps its tail (the file name and the nearest directories) behind
/// `#<digest of the full path>...`, so two long paths with the same tail stay apart:
/// `#3f2a…...deep/dir/shop.yaml:14`. Two references are equal when their comments are.
public struct FlowReference: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The file part of the comment (kernel form, see above).
    public let file: String
    public let line: Int

    /// The reference of `file` (any text) at `line`, bounded and escaped.
    public init(file: String, line: Int) {
        let suffix = ":\(line)"
        let path = BoundedText.printable(file)
        let limit = KernelLimits.kernel.comment
        if path.utf8.count + suffix.utf8.count <= limit {
            self.file = path
        } else {
            let tag = "#" + BoundedText.digest(file)
            self.file = tag + BoundedText.tail(path, limit: limit - tag.utf8.count - suffix.utf8.count)
        }
        self.line = line
    }

    /// The reference a flow's rules carry: its root-relative file and its line.
    public init(_ flow: Flow) { self.init(file: flow.policyFile, line: flow.location.line) }

    init(kernelFile: String, line: Int) {
        self.file = kernelFile
        self.line = line
    }

    /// `shop.yaml:14`: the comment text.
    public var text: String { "\(file):\(line)" }
    public var description: String { text }

    /// The reference a comment holds: it ends with `:` and decimal digits (nil otherwise).
    public init?(parsing text: String) {
        guard let colon = text.utf8.lastIndex(of: UInt8(ascii: ":")) else { return nil }
        let digits = text.utf8[text.utf8.index(after: colon)...]
        guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let line = Int(Substring(digits)) else { return nil }
        self.init(kernelFile: String(text[..<colon]), line: line)
    }

    public static func < (a: FlowReference, b: FlowReference) -> Bool { (a.file, a.line) < (b.file, b.line) }
}

/// Whose denials the last rule of a chain counts.
public enum DenialSubject: Hashable, Sendable, CustomStringConvertible {
    /// An identity's own chain: `shop/api+shop/extra`.
    case identity(Identity)
    /// A shared audit chain: its segments, `shop,infra`.
    case segments([String])
    /// A subject that was shortened (`~` and a digest) or escaped to fit: its text, not whose.
    case unreadable(String)

    /// The subject as the comment (and the `identity` label of the denial metric) spells it, at
    /// most `limit` bytes.
    func text(limit: Int) -> String {
        let readable: String
        switch self {
        case .identity(let id): readable = id.description
        case .segments(let s): readable = s.joined(separator: ",")
        case .unreadable(let t): return t
        }
        return BoundedText.fitting(BoundedText.printable(readable), limit: limit, separator: "~")
    }

    public var description: String { text(limit: KernelLimits.kernel.comment) }

    /// An identity has `/` in every member, segments have none; anything else (a `~` digest, an
    /// escape) is kept as text.
    static func parse(_ text: Substring) -> DenialSubject {
        // `~` (the digest of a shortened subject) and `\` (an escape) occur in no service or
        // segment name: such a subject is text, even when what is left looks like an identity.
        if text.contains("~") || text.contains("\\") { return .unreadable(String(text)) }
        if text.contains("/") {
            if let id = Identity(description: text) { return .identity(id) }
        } else if !text.isEmpty {
            let segments = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            if !segments.contains(where: \.isEmpty) { return .segments(segments) }
        }
        return .unreadable(String(text))
    }
}

/// A base-chain drop of managed addresses that no map sent anywhere.
public enum SharedDenial: String, CaseIterable, Sendable, Hashable {
    case toUngoverned = "no flow from this container to ungoverned addresses"
    case toHost = "no flow from this container to the host"
    case fromHost = "no flow from the host to this container"
}

/// Which side of a packet a fail-closed drop looked at.
public enum PacketSide: String, CaseIterable, Sendable, Hashable {
    case source, destination
}

/// Why a `bridge bulkhead` rule drops a frame (the `reason` label of the port-binding metric).
public enum PortBindingDrop: String, CaseIterable, Sendable, Hashable {
    case otherEtherType = "ethertype other than IPv4, IPv6, ARP (VLAN, QinQ, PPPoE)"
    case sourceMAC = "source MAC not the port's"
    case arpSender = "ARP sender not the port's"
    case ipv4Source = "IPv4 source not the port's"
    case ipv6Source = "IPv6 source not the port's"
    case routerAdvertisement = "router advertisement or redirect from a container"
    case neighbourAdvert = "neighbour advert for an address not the port's"
    case ipv6FromLinkLocal = "IPv6 from a link-local address (only ND and MLD)"
    case icmpv6FromLinkLocal = "ICMPv6 from a link-local address (only ND and MLD)"
    case ipv6ToLinkLocal = "IPv6 to a link-local address (only ND and MLD)"
    case icmpv6ToLinkLocal = "ICMPv6 to a link-local address (only ND and MLD)"
}

/// What a rule of ours is for, carried in its comment: the compiler writes `comment`, the
/// decompiler, the agent's metrics and `plan` read it back with `init?(parsing:)`.
///
/// Every comment is printable ASCII of at most `KernelLimits.comment` (128) bytes, whatever the
/// input. The forms cannot be confused: only an allow comment ends with `:` and digits (parsed
/// first, so a path cannot pose as another form); a denial ends with ` denies` or ` would deny`;
/// the others are fixed texts or fixed prefixes with a fixed set of reasons.
public enum RuleRole: Hashable, Sendable {
    /// An allow rule of the flow written there: `shop.yaml:14`.
    case allow(flow: FlowReference)
    /// The end of an identity's chain in enforce mode: `shop/api+shop/extra denies`.
    case deny(DenialSubject)
    /// The same in audit mode (log, count, accept): `shop/api would deny`, or for a shared audit
    /// chain its segments, `shop,infra would deny`.
    case audit(DenialSubject)
    /// A base-chain drop of managed addresses no map sent anywhere: `shared denies: <why>`.
    case sharedDenial(SharedDenial)
    /// A base-chain drop of governed addresses of no managed container: `unclassified source on a
    /// governed network`.
    case unclassified(PacketSide)
    /// The drop in the quarantine chain (identities whose chains could not be built).
    case quarantine
    /// Containers may not act as routers (forward chain).
    case routerAdvertisements
    /// A `bridge bulkhead` drop: `port binding: <reason>`.
    case portBinding(PortBindingDrop)

    static let denies = " denies", wouldDeny = " would deny"
    static let sharedPrefix = "shared denies: ", portBindingPrefix = "port binding: "
    static let quarantineText = "quarantined: identity could not be programmed"
    static let routerAdvertisementsText = "containers may not send router advertisements"

    /// The comment text.
    public var comment: String {
        let limit = KernelLimits.kernel.comment
        switch self {
        case .allow(let r): return r.text
        case .deny(let who): return who.text(limit: limit - Self.denies.utf8.count) + Self.denies
        case .audit(let who): return who.text(limit: limit - Self.wouldDeny.utf8.count) + Self.wouldDeny
        case .sharedDenial(let why): return Self.sharedPrefix + why.rawValue
        case .unclassified(let side): return "unclassified \(side.rawValue) on a governed network"
        case .quarantine: return Self.quarantineText
        case .routerAdvertisements: return Self.routerAdvertisementsText
        case .portBinding(let why): return Self.portBindingPrefix + why.rawValue
        }
    }

    /// The role a comment states; nil for a comment that is not ours.
    public init?(parsing text: String) {
        // Allow comments first: only they end with ':' and digits, whatever their path says.
        if let r = FlowReference(parsing: text) {
            self = .allow(flow: r)
        } else if text == Self.quarantineText {
            self = .quarantine
        } else if text == Self.routerAdvertisementsText {
            self = .routerAdvertisements
        } else if text.hasPrefix(Self.sharedPrefix), let why = SharedDenial(rawValue: String(text.dropFirst(Self.sharedPrefix.count))) {
            self = .sharedDenial(why)
        } else if text.hasPrefix(Self.portBindingPrefix), let why = PortBindingDrop(rawValue: String(text.dropFirst(Self.portBindingPrefix.count))) {
            self = .portBinding(why)
        } else if let side = PacketSide.allCases.first(where: { text == RuleRole.unclassified($0).comment }) {
            self = .unclassified(side)
        } else if text.hasSuffix(Self.wouldDeny) {
            self = .audit(DenialSubject.parse(text.dropLast(Self.wouldDeny.count)))
        } else if text.hasSuffix(Self.denies) {
            self = .deny(DenialSubject.parse(text.dropLast(Self.denies.count)))
        } else {
            return nil
        }
    }
}

/// The log prefix of audit-mode denials: `bulkhead audit <segments>: `, at most
/// `KernelLimits.logPrefix` (127) bytes whatever the segments (shortened with `~` and a digest).
public enum LogPrefix: Hashable, Sendable {
    case audit(segments: [String])
    /// An audit prefix whose segments were shortened or escaped to fit: its text between the
    /// fixed head and tail.
    case unreadableAudit(String)

    static let head = "bulkhead audit ", tail = ": "

    public var text: String {
        switch self {
        case .audit(let segments):
            let limit = KernelLimits.kernel.logPrefix - Self.head.utf8.count - Self.tail.utf8.count
            return Self.head + BoundedText.fitting(BoundedText.printable(segments.joined(separator: ",")), limit: limit, separator: "~") + Self.tail
        case .unreadableAudit(let body):
            return Self.head + body + Self.tail
        }
    }

    public init?(parsing prefix: String) {
        guard prefix.hasPrefix(Self.head), prefix.hasSuffix(Self.tail), prefix.utf8.count >= Self.head.utf8.count + Self.tail.utf8.count else { return nil }
        let body = prefix.dropFirst(Self.head.count).dropLast(Self.tail.count)
        let segments = body.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if !body.isEmpty, !body.contains("~"), !body.contains("\\"), !segments.contains(where: \.isEmpty) {
            self = .audit(segments: segments)
        } else {
            self = .unreadableAudit(String(body))
        }
    }
}
