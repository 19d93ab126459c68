import BulkheadInventory
import BulkheadRuleset

extension IPAddress {
    /// The address as an nftables value.
    public var nftValue: Value {
        switch self {
        case .v4: return .ipv4(ipv4!)
        case .v6: return .ipv6(ipv6!)
        }
    }
}
