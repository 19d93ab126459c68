import BulkheadPolicy
import BulkheadRuleset

/// The comments Bulkhead writes on its rules, both ways: the compiler writes `text`, the
/// decompiler, the agent's metrics and `plan` read them back with `init?(parsing:)`.
///
/// Every text is printable ASCII (`BoundedText.printable`: CR, LF, ESC, `"` and `\` of a policy
/// path become `\xNN`) and at most `KernelLimits.comment` (128) bytes, whatever the input:
/// - an allow rule names its flow, `policies/shop.yaml:14`. A path too long to fit keeps its tail
///   (the file name and the nearest directories), behind `#<digest of the full path>...`, so two
///   long paths with the same tail stay apart: `#3f2a…...deep/dir/shop.yaml:14`;
/// - the last rule of an identity chain says whose denial it counts: `shop/api+shop/extra denies`
///   (`would deny` in audit mode); a list of services too long to fit is shortened with `~` and a
///   digest (`~` never occurs in service names);
/// - fixed notes on the base chains: `unclassified …`, `shared denies: …` and others.
///
/// The forms cannot be confused: only a flow comment ends with `:` and digits (parsed first, so a
/// path cannot pose as another form), a denial ends with ` denies` or ` would deny`.
public enum RuleComment: Sendable, Hashable {
    /// An allow rule of the flow written at this (already bounded) `file:line`.
    case flow(reference: String)
    /// The end of an identity's chain, or of a shared audit chain (`who` is then the segments).
    case denial(who: String, audit: Bool)
    /// A base-chain drop of managed addresses that no map sent anywhere: `shared denies: <why>`.
    case sharedDenial(String)
    /// A base-chain drop of governed addresses of no managed container: `unclassified <where>`.
    case unclassified(String)
    /// The drop in the quarantine chain (identities whose chains could not be built).
    case quarantine
    /// Any other note of ours.
    case note(String)

    static let denies = " denies", wouldDeny = " would deny"
    static let quarantineText = "quarantined: identity could not be programmed"

    /// The flow comment for `file:line`, bounded and escaped.
    public static func flow(file: String, line: Int) -> RuleComment {
        let suffix = ":\(line)"
        let path = BoundedText.printable(file)
        let limit = KernelLimits.kernel.comment
        if path.utf8.count + suffix.utf8.count <= limit { return .flow(reference: path + suffix) }
        let tag = "#" + BoundedText.digest(file)
        return .flow(reference: tag + BoundedText.tail(path, limit: limit - tag.utf8.count - suffix.utf8.count) + suffix)
    }

    public static func flow(_ flow: Flow) -> RuleComment { .flow(file: flow.location.file, line: flow.location.line) }

    /// The denial comment of an identity (or, for shared audit chains, of a list of segments).
    public static func denial(of who: String, audit: Bool) -> RuleComment {
        let limit = KernelLimits.kernel.comment - (audit ? wouldDeny : denies).utf8.count
        return .denial(who: BoundedText.fitting(BoundedText.printable(who), limit: limit, separator: "~"), audit: audit)
    }

    public var text: String {
        switch self {
        case .flow(let r): return r
        case .denial(let who, let audit): return who + (audit ? Self.wouldDeny : Self.denies)
        case .sharedDenial(let why): return "shared denies: " + why
        case .unclassified(let rest): return "unclassified " + rest
        case .quarantine: return Self.quarantineText
        case .note(let n): return n
        }
    }

    public init?(parsing text: String) {
        // Flow comments first: only they end with ':' and digits, whatever their path says.
        if let colon = text.utf8.lastIndex(of: UInt8(ascii: ":")), text.utf8.index(after: colon) != text.utf8.endIndex,
           text.utf8[text.utf8.index(after: colon)...].allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            self = .flow(reference: text)
        } else if text == Self.quarantineText {
            self = .quarantine
        } else if text.hasPrefix("shared denies: ") {
            self = .sharedDenial(String(text.dropFirst("shared denies: ".count)))
        } else if text.hasPrefix("unclassified ") {
            self = .unclassified(String(text.dropFirst("unclassified ".count)))
        } else if text.hasSuffix(Self.wouldDeny) {
            self = .denial(who: String(text.dropLast(Self.wouldDeny.count)), audit: true)
        } else if text.hasSuffix(Self.denies) {
            self = .denial(who: String(text.dropLast(Self.denies.count)), audit: false)
        } else if text == Self.routerAdvertisements {
            self = .note(text)
        } else {
            return nil
        }
    }

    static let routerAdvertisements = "containers may not send router advertisements"
}

/// The log prefix of audit-mode denials: `bulkhead audit <segments>: `, at most
/// `KernelLimits.logPrefix` (127) bytes whatever the segments (shortened with `~` and a digest).
public enum AuditLogPrefix {
    public static func make(segments: [String]) -> String {
        let head = "bulkhead audit ", tail = ": "
        let limit = KernelLimits.kernel.logPrefix - head.utf8.count - tail.utf8.count
        return head + BoundedText.fitting(BoundedText.printable(segments.joined(separator: ",")), limit: limit, separator: "~") + tail
    }

    /// The segments a prefix names (nil for a shortened one, or one that is not ours).
    public static func parse(_ prefix: String) -> [String]? {
        guard prefix.hasPrefix("bulkhead audit "), prefix.hasSuffix(": ") else { return nil }
        let body = prefix.dropFirst("bulkhead audit ".count).dropLast(2)
        guard !body.contains("~") else { return nil }
        return body.split(separator: ",").map(String.init)
    }
}
