#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address. IPv6 is kept as a 128-bit integer so ranges compare cheaply.
public enum IPAddress: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt128)

    public var isIPv4: Bool { if case .v4 = self { return true } else { return false } }
    public var bitWidth: Int { isIPv4 ? 32 : 128 }

    /// Parses dotted-quad IPv4 (no leading zeros, no shorthand) or any RFC 4291 IPv6 text form.
    public init?(_ text: String) {
        if text.contains(":") {
            var raw = in6_addr()
            guard inet_pton(AF_INET6, text, &raw) == 1 else { return nil }
            let bytes = withUnsafeBytes(of: &raw) { Array($0) }
            var value: UInt128 = 0
            for b in bytes { value = value << 8 | UInt128(b) }
            self = .v6(value)
        } else {
            var raw = in_addr()
            guard inet_pton(AF_INET, text, &raw) == 1 else { return nil }
            self = .v4(UInt32(bigEndian: raw.s_addr))
        }
    }

    /// Network-order bytes: what netlink and nftables carry.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let v): return (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) }
        case .v6(let v): return (0..<16).map { UInt8(truncatingIfNeeded: v >> (120 - 8 * $0)) }
        }
    }

    public var description: String {
        switch self {
        case .v4:
            return bytes.map(String.init).joined(separator: ".")
        case .v6:
            var raw = in6_addr()
            let b = bytes
            withUnsafeMutableBytes(of: &raw) { dst in for i in 0..<16 { dst[i] = b[i] } }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            _ = inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count))
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): return x < y
        case (.v6(let x), .v6(let y)): return x < y
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = IPAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an IP address: \(text)"))
        }
        self = address
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An address prefix such as `172.20.0.0/16` or `fd00:20::/64`.
public struct IPNetwork: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The address as written (host bits may be set; see `hasHostBits`).
    public var address: IPAddress
    public var prefixLength: Int

    public init(address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `ADDRESS/LEN`; a bare address is a host prefix (/32 or /128).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        var length = address.bitWidth
        if parts.count == 2 {
            let digits = parts[1]
            guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
                  let n = Int(digits), n <= address.bitWidth,
                  !(digits.count > 1 && digits.first == "0")
            else { return nil }
            length = n
        }
        self.init(address: address, prefixLength: length)
    }

    public var isIPv4: Bool { address.isIPv4 }

    /// The first address of the prefix (host bits cleared).
    public var network: IPAddress {
        switch address {
        case .v4(let v): return .v4(prefixLength == 0 ? 0 : v & (UInt32.max << (32 - prefixLength)))
        case .v6(let v): return .v6(prefixLength == 0 ? 0 : v & (UInt128.max << (128 - prefixLength)))
        }
    }

    /// The last address of the prefix.
    public var last: IPAddress {
        switch network {
        case .v4(let v): return .v4(prefixLength == 32 ? v : v | (UInt32.max >> prefixLength))
        case .v6(let v): return .v6(prefixLength == 128 ? v : v | (UInt128.max >> prefixLength))
        }
    }

    /// `10.1.2.3/8`: bits set past the prefix, which the kernel would silently clear.
    public var hasHostBits: Bool { network != address }

    /// The same prefix with host bits cleared.
    public var normalized: IPNetwork { IPNetwork(address: network, prefixLength: prefixLength) }

    public func contains(_ a: IPAddress) -> Bool {
        a.isIPv4 == isIPv4 && network <= a && a <= last
    }

    public func contains(_ other: IPNetwork) -> Bool {
        other.isIPv4 == isIPv4 && other.prefixLength >= prefixLength && contains(other.address)
    }

    public func overlaps(_ other: IPNetwork) -> Bool {
        contains(other) || other.contains(self)
    }

    public var description: String { "\(address)/\(prefixLength)" }

    public static func < (a: IPNetwork, b: IPNetwork) -> Bool {
        (a.address, a.prefixLength) < (b.address, b.prefixLength)
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let n = IPNetwork(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a CIDR: \(text)"))
        }
        self = n
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
