/// An IPv4 address held as its 32-bit value (so ordering is numeric, as nft sorts it).
public struct IPv4Address: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    /// The address as a host-order integer: `10.0.0.1` is `0x0A000001`.
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted-quad notation; nil for anything else (no octal, no shorthand).
    public init?(_ text: String) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII),
                  let octet = UInt8(part) else { return nil }
            v = v << 8 | UInt32(octet)
        }
        self.value = v
    }

    /// Network byte order, as the kernel stores it in a register or set key.
    public var bytes: [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    public static func < (a: Self, b: Self) -> Bool { a.value < b.value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = IPv4Address(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "not an IPv4 address: \(text)"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An IPv6 address held as two 64-bit halves (numeric ordering, as nft sorts it).
public struct IPv6Address: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Builds an address from exactly 16 network-order bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<8 { h = h << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { l = l << 8 | UInt64(bytes[i]) }
        self.init(high: h, low: l)
    }

    /// Parses RFC 4291 text, including `::` and a trailing dotted IPv4 part.
    public init?(_ text: String) {
        guard text.allSatisfy(\.isASCII), !text.isEmpty else { return nil }
        var groups: [UInt16] = []
        var tail: [UInt16] = []
        let halves = text.components(separatedByString: "::")
        guard halves.count <= 2 else { return nil }
        func parse(_ s: Substring, allowV4: Bool) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, f) in fields.enumerated() {
                if allowV4, i == fields.count - 1, f.contains(".") {
                    guard let v4 = IPv4Address(String(f)) else { return nil }
                    out.append(UInt16(v4.value >> 16))
                    out.append(UInt16(v4.value & 0xffff))
                } else {
                    guard !f.isEmpty, f.count <= 4, let g = UInt16(f, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        if halves.count == 2 {
            guard let a = parse(halves[0], allowV4: false), let b = parse(halves[1], allowV4: true),
                  a.count + b.count <= 7 else { return nil }
            groups = a
            tail = b
            groups += Array(repeating: 0, count: 8 - a.count - b.count) + tail
        } else {
            guard let a = parse(halves[0], allowV4: true), a.count == 8 else { return nil }
            groups = a
        }
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<4 { h = h << 16 | UInt64(groups[i]) }
        for i in 4..<8 { l = l << 16 | UInt64(groups[i]) }
        self.init(high: h, low: l)
    }

    /// Network byte order.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(high >> (56 - 8 * UInt64($0)) & 0xff) }
            + (0..<8).map { UInt8(low >> (56 - 8 * UInt64($0)) & 0xff) }
    }

    var groups: [UInt16] {
        (0..<4).map { UInt16(high >> (48 - 16 * UInt64($0)) & 0xffff) }
            + (0..<4).map { UInt16(low >> (48 - 16 * UInt64($0)) & 0xffff) }
    }

    /// Text as glibc `inet_ntop` writes it, because that is what `nft list` prints: the longest run
    /// of two or more zero groups (the first on a tie) becomes `::`, and IPv4-compatible and
    /// IPv4-mapped addresses end in dotted form.
    public var description: String {
        let w = groups
        var bestBase = -1, bestLen = 0, curBase = -1, curLen = 0
        for i in 0..<8 {
            if w[i] == 0 {
                if curBase == -1 { curBase = i; curLen = 1 } else { curLen += 1 }
            } else if curBase != -1 {
                if bestBase == -1 || curLen > bestLen { bestBase = curBase; bestLen = curLen }
                curBase = -1
            }
        }
        if curBase != -1, bestBase == -1 || curLen > bestLen { bestBase = curBase; bestLen = curLen }
        if bestBase != -1, bestLen < 2 { bestBase = -1 }
        var out = ""
        var i = 0
        while i < 8 {
            if bestBase != -1, i >= bestBase, i < bestBase + bestLen {
                if i == bestBase { out += ":" }
                i += 1
                continue
            }
            if i != 0 { out += ":" }
            if i == 6, bestBase == 0,
               bestLen == 6 || (bestLen == 7 && w[7] != 1) || (bestLen == 5 && w[5] == 0xffff) {
                out += IPv4Address(UInt32(w[6]) << 16 | UInt32(w[7])).description
                break
            }
            out += String(w[i], radix: 16)
            i += 1
        }
        if bestBase != -1, bestBase + bestLen == 8 { out += ":" }
        return out
    }

    public static func < (a: Self, b: Self) -> Bool { (a.high, a.low) < (b.high, b.low) }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = IPv6Address(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "not an IPv6 address: \(text)"))
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension String {
    /// Splits on a multi-character separator without Foundation.
    func components(separatedByString sep: String) -> [Substring] {
        var parts: [Substring] = []
        var rest = self[...]
        while let r = rest.firstRange(of: sep) {
            parts.append(rest[..<r.lowerBound])
            rest = rest[r.upperBound...]
        }
        parts.append(rest)
        return parts
    }
}
