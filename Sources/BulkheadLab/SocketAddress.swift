import BulkheadInventory
#if canImport(Glibc)
import Glibc
#endif

/// A socket address for an `IPAddress` and port, built without hand-computed offsets.
struct SocketAddress {
    var storage = sockaddr_storage()
    var length: socklen_t

    init(_ address: IPAddress, port: UInt16 = 0) {
        switch address {
        case .v4(let v):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            sin.sin_addr = in_addr(s_addr: v.bigEndian)
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin) { dst.copyMemory(from: $0) } }
        case .v6:
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            let bytes = address.bytes
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { for i in 0..<16 { $0[i] = bytes[i] } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            withUnsafeMutableBytes(of: &storage) { dst in withUnsafeBytes(of: sin6) { dst.copyMemory(from: $0) } }
        }
    }

    /// The wildcard address of a family.
    static func any(ipv6: Bool, port: UInt16) -> SocketAddress {
        SocketAddress(ipv6 ? .v6(0) : .v4(0), port: port)
    }

    init() {
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    }

    func withPointer<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }

    /// The address part, if this is an IPv4 or IPv6 socket address.
    var address: IPAddress? {
        withUnsafeBytes(of: storage) { raw -> IPAddress? in
            switch Int32(storage.ss_family) {
            case AF_INET:
                let sin = raw.load(as: sockaddr_in.self)
                return .v4(UInt32(bigEndian: sin.sin_addr.s_addr))
            case AF_INET6:
                let sin6 = raw.load(as: sockaddr_in6.self)
                return withUnsafeBytes(of: sin6.sin6_addr) { b in .v6(b.reduce(UInt128(0)) { $0 << 8 | UInt128($1) }) }
            default:
                return nil
            }
        }
    }
}

extension FileDescriptor {
    func setOption<T: BitwiseCopyable>(_ level: Int32, _ name: Int32, _ value: T) -> Bool {
        var v = value
        return setsockopt(raw, level, name, &v, socklen_t(MemoryLayout<T>.size)) == 0
    }

    func bind(_ a: SocketAddress) -> Int32 { a.withPointer { Glibc.bind(raw, $0, $1) } == 0 ? 0 : errno }
    func connect(_ a: SocketAddress) -> Int32 { a.withPointer { Glibc.connect(raw, $0, $1) } == 0 ? 0 : errno }

    /// The pending socket error (`SO_ERROR`), which also clears it.
    var pendingError: Int32 {
        var e: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(raw, SOL_SOCKET, SO_ERROR, &e, &len) == 0 ? e : errno
    }
}

let socketStream = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
let socketDatagram = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
let socketRaw = Int32(SOCK_RAW.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)

/// Monotonic nanoseconds, for deadlines.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
