/// A chain in our table. Rules live in `Table.rules`, not here, so a chain is just its identity
/// and, for base chains, where it hooks in.
public struct Chain: Hashable, Sendable, Codable {
    public var name: String
    /// Nil for a regular chain (reachable only by jump/goto).
    public var base: BaseChain?

    public init(name: String, base: BaseChain? = nil) {
        self.name = name
        self.base = base
    }

    public var isBase: Bool { base != nil }
}

/// Hook registration of a base chain.
public struct BaseChain: Hashable, Sendable, Codable {
    public var type: ChainType
    public var hook: Hook
    /// Lower runs first. nft prints values within ±10 of a standard priority symbolically
    /// (`filter - 10`); see `ChainPriority`.
    public var priority: Int32
    public var policy: Policy

    public init(type: ChainType = .filter, hook: Hook, priority: Int32, policy: Policy = .accept) {
        self.type = type
        self.hook = hook
        self.priority = priority
        self.policy = policy
    }
}

/// `NFTA_CHAIN_TYPE` (a string in the kernel).
public enum ChainType: String, Hashable, Sendable, Codable {
    case filter, nat, route
}

/// Netfilter hook (`NF_INET_*` numbers for ip/ip6/inet/bridge).
public enum Hook: String, Hashable, Sendable, Codable, CaseIterable {
    case prerouting, input, forward, output, postrouting

    /// `NFTA_HOOK_HOOKNUM`.
    public var number: UInt32 {
        switch self {
        case .prerouting: 0
        case .input: 1
        case .forward: 2
        case .output: 3
        case .postrouting: 4
        }
    }
}

/// Base chain default policy (`NFTA_CHAIN_POLICY`: `NF_DROP` 0, `NF_ACCEPT` 1).
public enum Policy: String, Hashable, Sendable, Codable {
    case accept, drop

    public var code: UInt32 { self == .accept ? 1 : 0 }
}

/// Standard priority names, for printing priorities the way nft 1.0.6 does.
public enum ChainPriority {
    public static let raw: Int32 = -300
    public static let mangle: Int32 = -150
    public static let dstnat: Int32 = -100
    public static let filter: Int32 = 0
    public static let security: Int32 = 50
    public static let srcnat: Int32 = 100

    /// nft `prio2str`: the first standard priority (raw, mangle, dstnat, filter, security, srcnat;
    /// for bridge: dstnat -300, filter -200, out 100, srcnat 300, also checked) usable at this hook whose
    /// distance is at most 10 gives `name`, `name + n` or `name - n`; otherwise the number.
    /// dstnat only counts at prerouting and srcnat only at postrouting (checked with nft 1.0.6:
    /// `priority dstnat` on input is rejected, `-160` prints `mangle - 10`, `11` prints `11`).
    public static func text(_ priority: Int32, family: TableFamily, hook: Hook) -> String {
        let table: [(String, Int32, Hook?)] = family == .bridge
            ? [("dstnat", -300, .prerouting), ("filter", -200, nil), ("out", 100, .output), ("srcnat", 300, .postrouting)]
            : [("raw", raw, nil), ("mangle", mangle, nil), ("dstnat", dstnat, .prerouting),
               ("filter", filter, nil), ("security", security, nil), ("srcnat", srcnat, .postrouting)]
        for (name, std, onlyAt) in table {
            if let onlyAt, onlyAt != hook { continue }
            let offset = Int64(priority) - Int64(std)
            guard abs(offset) <= 10 else { continue }
            if offset == 0 { return name }
            return offset > 0 ? "\(name) + \(offset)" : "\(name) - \(-offset)"
        }
        return String(priority)
    }
}
