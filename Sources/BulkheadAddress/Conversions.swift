/// One address family for the inventory and the ruleset model: `IPAddress` (either family, what
/// policies and inventories hold) and the per-family `IPv4Address` / `IPv6Address` (what an
/// nftables value holds) convert both ways here, so no other module re-derives the bit layout.
extension IPAddress {
    public init(_ address: IPv4Address) { self = .v4(address.value) }
    public init(_ address: IPv6Address) { self = .v6(UInt128(address.high) << 64 | UInt128(address.low)) }

    /// The IPv4 address, nil for IPv6.
    public var ipv4: IPv4Address? {
        if case .v4(let v) = self { return IPv4Address(v) }
        return nil
    }

    /// The IPv6 address, nil for IPv4.
    public var ipv6: IPv6Address? {
        if case .v6(let v) = self { return IPv6Address(high: UInt64(truncatingIfNeeded: v >> 64), low: UInt64(truncatingIfNeeded: v)) }
        return nil
    }
}
