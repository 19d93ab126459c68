import BulkheadInventory
#if canImport(Glibc)
import Glibc
#endif

/// An error the kernel queued on a socket with `IP_RECVERR` / `IPV6_RECVERR`: which ICMP message (if
/// any) caused it and who sent it.
///
/// Why the error queue: since Linux 6.8 a TCP socket in SYN_SENT treats "soft" ICMP errors (IPv6 no
/// route, address unreachable; RFC 1122 4.2.3.9) as transient and keeps retrying until its own
/// timeout, so `SO_ERROR` stays 0 for the probe's lifetime. With RECVERR the ICMP error is queued at
/// once and poll reports POLLERR. Connected UDP likewise only reports "hard" errors without it.
struct QueuedError: Equatable {
    var errno: Int32
    /// ICMP or ICMPv6 type and code, when the error came from an ICMP message.
    var icmp: (type: UInt8, code: UInt8)?
    var ipv6: Bool
    var offender: IPAddress?

    static func == (a: QueuedError, b: QueuedError) -> Bool {
        a.errno == b.errno && a.icmp?.type == b.icmp?.type && a.icmp?.code == b.icmp?.code && a.ipv6 == b.ipv6 && a.offender == b.offender
    }

    /// ICMP port unreachable is the destination's own "no": refused. Any other ICMP error is unreachable.
    var outcome: ProbeOutcome {
        if let icmp {
            let portUnreachable = ipv6 ? (icmp.type == 1 && icmp.code == 4) : (icmp.type == 3 && icmp.code == 3)
            return portUnreachable ? .refused : .unreachable
        }
        return errno == ECONNREFUSED ? .refused : .unreachable
    }

    var detail: String {
        let base = icmp.map { ICMP.describe(type: $0.type, code: $0.code, ipv6: ipv6) } ?? "\(errnoName(errno)): \(String(cString: strerror(errno)))"
        return base + (offender.map { " from \($0)" } ?? "")
    }

    /// `struct sock_extended_err` from <linux/errqueue.h>, which Swift's Glibc module does not include.
    private struct ExtendedError {
        var errno: UInt32
        var origin: UInt8
        var type: UInt8
        var code: UInt8
        var pad: UInt8
        var info: UInt32
        var data: UInt32
    }
    private static let originICMP: UInt8 = 2, originICMP6: UInt8 = 3

    /// Asks the kernel to queue ICMP errors on this socket.
    static func enable(on fd: FileDescriptor, ipv6: Bool) {
        _ = ipv6 ? fd.setOption(Int32(IPPROTO_IPV6), IPV6_RECVERR, Int32(1)) : fd.setOption(Int32(IPPROTO_IP), IP_RECVERR, Int32(1))
    }

    /// Reads the oldest queued error, if any.
    static func read(from fd: FileDescriptor, ipv6: Bool) -> QueuedError? {
        var data = [UInt8](repeating: 0, count: 256)
        var control = [UInt8](repeating: 0, count: 512)
        var controlLength = 0
        let n = data.withUnsafeMutableBytes { d in
            control.withUnsafeMutableBytes { c in
                var iov = iovec(iov_base: d.baseAddress, iov_len: d.count)
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = c.baseAddress
                    msg.msg_controllen = c.count
                    let r = recvmsg(fd.raw, &msg, Int32(MSG_ERRQUEUE) | Int32(MSG_DONTWAIT))
                    controlLength = msg.msg_controllen
                    return r
                }
            }
        }
        guard n >= 0 else { return nil }
        let size = MemoryLayout<ExtendedError>.size
        for m in ControlMessages.parse(control, length: controlLength) {
            let isV4 = m.level == Int32(IPPROTO_IP) && m.type == Int32(IP_RECVERR)
            let isV6 = m.level == Int32(IPPROTO_IPV6) && m.type == Int32(IPV6_RECVERR)
            guard isV4 || isV6, m.data.count >= size else { continue }
            let ee = m.data.withUnsafeBytes { $0.loadUnaligned(as: ExtendedError.self) }
            // The offender's address follows the struct (SO_EE_OFFENDER).
            var offender: IPAddress?
            let rest = Array(m.data[size...])
            if rest.count >= MemoryLayout<sockaddr_in>.size {
                var address = SocketAddress()
                withUnsafeMutableBytes(of: &address.storage) { dst in
                    for i in 0..<min(dst.count, rest.count) { dst[i] = rest[i] }
                }
                offender = address.address.flatMap { $0 == .v4(0) || $0 == .v6(0) ? nil : $0 }
            }
            let fromICMP = ee.origin == originICMP || ee.origin == originICMP6
            return QueuedError(errno: Int32(ee.errno), icmp: fromICMP ? (ee.type, ee.code) : nil,
                               ipv6: ee.origin == originICMP6 || (isV6 && ee.origin != originICMP), offender: offender)
        }
        return nil
    }
}
