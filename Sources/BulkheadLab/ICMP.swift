import BulkheadInventory

/// ICMP and ICMPv6 echo packets as raw sockets send and receive them.
enum ICMP {
    /// What a raw ICMP socket received that concerns one of our echo requests.
    enum Message: Equatable {
        /// An echo reply from `from`.
        case reply(id: UInt16, sequence: UInt16, from: IPAddress)
        /// An ICMP error about our echo request to `destination`, sent by `from`.
        case error(id: UInt16, sequence: UInt16, destination: IPAddress, from: IPAddress, type: UInt8, code: UInt8)
    }

    /// An echo request. IPv4 needs our checksum; for ICMPv6 raw sockets the kernel always computes it
    /// (it covers a pseudo-header with the source address, which only the kernel knows).
    static func echoRequest(ipv6: Bool, id: UInt16, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var packet: [UInt8] = [ipv6 ? 128 : 8, 0, 0, 0,
                               UInt8(id >> 8), UInt8(id & 0xff), UInt8(sequence >> 8), UInt8(sequence & 0xff)]
        packet += payload
        if !ipv6 {
            let sum = checksum(packet)
            packet[2] = UInt8(sum >> 8)
            packet[3] = UInt8(sum & 0xff)
        }
        return packet
    }

    /// RFC 1071 Internet checksum.
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// Parses what an IPv4 raw ICMP socket reads: the IPv4 header, then ICMP.
    static func parseV4(_ p: [UInt8]) -> Message? {
        guard p.count >= 20, p[0] >> 4 == 4 else { return nil }
        let ihl = Int(p[0] & 0x0f) * 4
        guard p.count >= ihl + 8 else { return nil }
        let from = address4(p, 12)
        let type = p[ihl], code = p[ihl + 1]
        switch type {
        case 0:
            return .reply(id: u16(p, ihl + 4), sequence: u16(p, ihl + 6), from: from)
        case 3, 11, 12:  // destination unreachable, time exceeded, parameter problem
            let inner = ihl + 8
            guard p.count >= inner + 20, p[inner] >> 4 == 4 else { return nil }
            let innerIHL = Int(p[inner] & 0x0f) * 4
            let echo = inner + innerIHL
            guard p[inner + 9] == 1, p.count >= echo + 8, p[echo] == 8 else { return nil }
            return .error(id: u16(p, echo + 4), sequence: u16(p, echo + 6), destination: address4(p, inner + 16),
                          from: from, type: type, code: code)
        default:
            return nil
        }
    }

    /// Parses what an ICMPv6 raw socket reads: ICMPv6 only (no IPv6 header); `from` comes from recvfrom.
    static func parseV6(_ p: [UInt8], from: IPAddress) -> Message? {
        guard p.count >= 8 else { return nil }
        let type = p[0], code = p[1]
        switch type {
        case 129:
            return .reply(id: u16(p, 4), sequence: u16(p, 6), from: from)
        case 1, 2, 3, 4:  // destination unreachable, packet too big, time exceeded, parameter problem
            let inner = 8, echo = 8 + 40
            guard p.count >= echo + 8, p[inner] >> 4 == 6, p[inner + 6] == 58, p[echo] == 128 else { return nil }
            let destination = IPAddress.v6(p[(inner + 24)..<(inner + 40)].reduce(UInt128(0)) { $0 << 8 | UInt128($1) })
            return .error(id: u16(p, echo + 4), sequence: u16(p, echo + 6), destination: destination,
                          from: from, type: type, code: code)
        default:
            return nil
        }
    }

    /// A readable name for an ICMP error, for probe details.
    static func describe(type: UInt8, code: UInt8, ipv6: Bool) -> String {
        if ipv6 {
            switch (type, code) {
            case (1, 0): return "ICMPv6 no route to destination"
            case (1, 1): return "ICMPv6 administratively prohibited"
            case (1, 3): return "ICMPv6 address unreachable"
            case (1, 4): return "ICMPv6 port unreachable"
            case (1, 5): return "ICMPv6 source address failed policy"
            case (1, 6): return "ICMPv6 reject route"
            case (3, _): return "ICMPv6 time exceeded"
            default: return "ICMPv6 type \(type) code \(code)"
            }
        }
        switch (type, code) {
        case (3, 0): return "ICMP network unreachable"
        case (3, 1): return "ICMP host unreachable"
        case (3, 2): return "ICMP protocol unreachable"
        case (3, 3): return "ICMP port unreachable"
        case (3, 9), (3, 10), (3, 13): return "ICMP administratively prohibited (code \(code))"
        case (11, _): return "ICMP time exceeded"
        default: return "ICMP type \(type) code \(code)"
        }
    }

    private static func u16(_ p: [UInt8], _ i: Int) -> UInt16 { UInt16(p[i]) << 8 | UInt16(p[i + 1]) }
    private static func address4(_ p: [UInt8], _ i: Int) -> IPAddress {
        .v4(UInt32(p[i]) << 24 | UInt32(p[i + 1]) << 16 | UInt32(p[i + 2]) << 8 | UInt32(p[i + 3]))
    }
}
