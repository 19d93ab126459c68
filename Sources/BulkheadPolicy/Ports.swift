/// A port entry of a flow: `tcp/N`, `tcp/N-M`, `udp/N`, `udp/N-M`, `icmp` or `any`.
public enum PortSpec: Sendable, Hashable, Comparable, CustomStringConvertible {
    case tcp(ClosedRange<UInt16>)
    case udp(ClosedRange<UInt16>)
    /// ICMP and ICMPv6 echo and errors.
    case icmp
    /// Every protocol and port.
    case any

    public enum ParseError: Error, Equatable {
        case bareNumber(String)
        case malformed(String)
        case outOfRange(String)
        case reversed(String)

        public var message: String {
            switch self {
            case .bareNumber(let s): return "port '\(s)' has no protocol: write tcp/\(s) or udp/\(s)"
            case .malformed(let s):
                let lower = s.lowercased()
                if lower != s, (try? PortSpec.parse(lower)) != nil { return "port '\(s)' must be lower case: write '\(lower)'" }
                return "'\(s)' is not a port: write tcp/N, tcp/N-M, udp/N, udp/N-M, icmp or any"
            case .outOfRange(let s): return "port '\(s)' is out of range: ports are 1 to 65535"
            case .reversed(let s): return "port range '\(s)' is reversed: write the lower port first"
            }
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> PortSpec {
        if text == "icmp" { return .icmp }
        if text == "any" { return .any }
        if !text.isEmpty, text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == 45 }) { throw .bareNumber(text) }
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "tcp" || parts[0] == "udp" else { throw .malformed(text) }
        let bounds = parts[1].split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 1 || bounds.count == 2 else { throw .malformed(text) }
        var numbers: [Int] = []
        for b in bounds {
            guard !b.isEmpty, b.utf8.count <= 6, b.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(b) else { throw .malformed(text) }
            guard (1...65535).contains(n) else { throw .outOfRange(text) }
            numbers.append(n)
        }
        let low = numbers[0], high = numbers.last!
        guard low <= high else { throw .reversed(text) }
        let range = UInt16(low)...UInt16(high)
        return parts[0] == "tcp" ? .tcp(range) : .udp(range)
    }

    public var description: String {
        func r(_ x: ClosedRange<UInt16>) -> String { x.lowerBound == x.upperBound ? "\(x.lowerBound)" : "\(x.lowerBound)-\(x.upperBound)" }
        switch self {
        case .tcp(let x): return "tcp/\(r(x))"
        case .udp(let x): return "udp/\(r(x))"
        case .icmp: return "icmp"
        case .any: return "any"
        }
    }

    private var sortKey: (Int, Int, Int) {
        switch self {
        case .tcp(let x): return (0, Int(x.lowerBound), Int(x.upperBound))
        case .udp(let x): return (1, Int(x.lowerBound), Int(x.upperBound))
        case .icmp: return (2, 0, 0)
        case .any: return (3, 0, 0)
        }
    }

    public static func < (a: PortSpec, b: PortSpec) -> Bool { a.sortKey < b.sortKey }
}

/// The protocol and port of one connection attempt, as the evaluator and probes see it.
public enum Traffic: Sendable, Hashable, CustomStringConvertible {
    case tcp(UInt16)
    case udp(UInt16)
    case icmp
    /// Another IP protocol, by number (for example 47 for GRE).
    case other(UInt8)

    public init?(_ text: String) {
        if text == "icmp" { self = .icmp; return }
        guard let spec = try? PortSpec.parse(text) else { return nil }
        switch spec {
        case .tcp(let r) where r.count == 1: self = .tcp(r.lowerBound)
        case .udp(let r) where r.count == 1: self = .udp(r.lowerBound)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .tcp(let p): return "tcp/\(p)"
        case .udp(let p): return "udp/\(p)"
        case .icmp: return "icmp"
        case .other(let n): return "proto \(n)"
        }
    }
}

/// The set of (protocol, port) a list of `PortSpec`s allows, normalised so coverage is a subset test.
public struct PortSet: Sendable, Hashable {
    public var tcp: [ClosedRange<Int>]
    public var udp: [ClosedRange<Int>]
    public var icmp: Bool
    /// Every other IP protocol (only `any` allows these).
    public var otherProtocols: Bool

    public static let empty = PortSet([])

    public init(_ specs: [PortSpec]) {
        var tcp: [ClosedRange<Int>] = [], udp: [ClosedRange<Int>] = []
        var icmp = false, other = false
        for s in specs {
            switch s {
            case .tcp(let r): tcp.append(Int(r.lowerBound)...Int(r.upperBound))
            case .udp(let r): udp.append(Int(r.lowerBound)...Int(r.upperBound))
            case .icmp: icmp = true
            case .any:
                tcp.append(1...65535); udp.append(1...65535); icmp = true; other = true
            }
        }
        self.tcp = Self.merge(tcp)
        self.udp = Self.merge(udp)
        self.icmp = icmp
        self.otherProtocols = other
    }

    /// The set as port entries: `any` when it allows everything, else merged ranges per protocol.
    public var specs: [PortSpec] {
        if otherProtocols { return [.any] }
        return tcp.map { .tcp(UInt16($0.lowerBound)...UInt16($0.upperBound)) }
            + udp.map { .udp(UInt16($0.lowerBound)...UInt16($0.upperBound)) }
            + (icmp ? [.icmp] : [])
    }

    public func contains(_ t: Traffic) -> Bool {
        switch t {
        case .tcp(let p): return tcp.contains { $0.contains(Int(p)) }
        case .udp(let p): return udp.contains { $0.contains(Int(p)) }
        case .icmp: return icmp
        case .other: return otherProtocols
        }
    }

    public func isSubset(of other: PortSet) -> Bool {
        func covered(_ a: [ClosedRange<Int>], _ b: [ClosedRange<Int>]) -> Bool {
            a.allSatisfy { r in b.contains { $0.lowerBound <= r.lowerBound && r.upperBound <= $0.upperBound } }
        }
        return covered(tcp, other.tcp) && covered(udp, other.udp)
            && (!icmp || other.icmp) && (!otherProtocols || other.otherProtocols)
    }

    public func union(_ other: PortSet) -> PortSet {
        var u = self
        u.tcp = Self.merge(tcp + other.tcp)
        u.udp = Self.merge(udp + other.udp)
        u.icmp = icmp || other.icmp
        u.otherProtocols = otherProtocols || other.otherProtocols
        return u
    }

    /// Sorted, with overlapping and adjacent ranges joined.
    static func merge(_ ranges: [ClosedRange<Int>]) -> [ClosedRange<Int>] {
        var result: [ClosedRange<Int>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = result.last, r.lowerBound <= last.upperBound + 1 {
                result[result.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                result.append(r)
            }
        }
        return result
    }
}
