import BulkheadInventory
import BulkheadRuleset

extension IPAddress {
    /// The address as an nftables value (the ruleset model has its own address types, so it does
    /// not depend on the inventory).
    public var nftValue: Value {
        switch self {
        case .v4(let v): return .ipv4(IPv4Address(v))
        case .v6(let v): return .ipv6(IPv6Address(high: UInt64(truncatingIfNeeded: v >> 64), low: UInt64(truncatingIfNeeded: v)))
        }
    }
}
