#if canImport(Glibc)
import Glibc
#endif

/// The addresses of this network namespace's own interfaces (not loopback, not link-local):
/// what the policy language calls `host`, beyond the container networks' gateways.
public enum LocalAddresses {
    public static func read() -> [IPAddress] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var out = Set<IPAddress>()
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                let v = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) }
                if v >> 24 != 127 { out.insert(.v4(v)) }
            case AF_INET6:
                let bytes = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
                }
                var v: UInt128 = 0
                for b in bytes { v = v << 8 | UInt128(b) }
                let linkLocal = bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80
                if v != 1, !linkLocal { out.insert(.v6(v)) }
            default:
                continue
            }
        }
        return out.sorted()
    }
}
