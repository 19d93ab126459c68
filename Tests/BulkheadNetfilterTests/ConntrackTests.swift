import BulkheadConntrack
import BulkheadInventory
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

/// ctnetlink bytes: the requests we send, annotated field by field, and the decoder of dumped
/// entries, fed the kernel's shape, then mutated and random bytes.
@Suite struct ConntrackCodecTests {
    /// nlattr: length (host order, little-endian here), type, payload, padding to 4.
    func attr(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] { ConntrackCodec.attribute(type, payload) }

    /// A dump entry as the kernel sends it: IPCTNL_MSG_CT_NEW, family AF_INET, both tuples,
    /// plus attributes the decoder does not need (status, timeout, protoinfo).
    func kernelEntry(zone: UInt16? = 3, id: UInt32? = 0xdead_beef) -> [UInt8] {
        let ip = attr(1 | 0x8000, attr(1, [10, 0, 0, 1]) + attr(2, [10, 0, 0, 2]))          // CTA_TUPLE_IP: V4_SRC, V4_DST
        let proto = attr(2 | 0x8000, attr(1, [6]) + attr(2, [0x9c, 0x40]) + attr(3, [0, 80])) // CTA_TUPLE_PROTO: NUM 6, SRC 40000, DST 80
        let rip = attr(1 | 0x8000, attr(1, [10, 0, 0, 2]) + attr(2, [10, 0, 0, 1]))
        let rproto = attr(2 | 0x8000, attr(1, [6]) + attr(2, [0, 80]) + attr(3, [0x9c, 0x40]))
        var attributes = attr(1 | 0x8000, ip + proto)        // CTA_TUPLE_ORIG
        attributes += attr(2 | 0x8000, rip + rproto)          // CTA_TUPLE_REPLY
        attributes += attr(3, [0, 0, 0x01, 0x8e])              // CTA_STATUS
        attributes += attr(7, [0, 0, 0x01, 0x2c])              // CTA_TIMEOUT
        if let id { attributes += attr(12, ConntrackCodec.bigEndian32(id)) }  // CTA_ID
        if let zone { attributes += attr(18, ConntrackCodec.bigEndian16(zone)) } // CTA_ZONE
        return ConntrackCodec.message(type: 0x0100, flags: 0x2, seq: 7, family: 2, attributes: attributes)
    }

    @Test func dumpRequestBytes() {
        let bytes = ConntrackCodec.dumpRequest(seq: 0x0102_0304)
        #expect(bytes == [
            20, 0, 0, 0,        // nlmsg_len 20
            0x01, 0x01,         // nlmsg_type (NFNL_SUBSYS_CTNETLINK 1 << 8) | IPCTNL_MSG_CT_GET 1
            0x01, 0x03,         // NLM_F_REQUEST | NLM_F_DUMP (0x300)
            4, 3, 2, 1,         // seq
            0, 0, 0, 0,         // port id: the kernel's
            0, 0, 0, 0,         // nfgenmsg: AF_UNSPEC (every family), NFNETLINK_V0, res_id 0
        ])
    }

    @Test func deleteRequestBytesFromAModelEntry() {
        let entry = ConntrackEntry(original: ConntrackTuple(source: IPAddress("10.0.0.1")!, destination: IPAddress("10.0.0.2")!, proto: 17,
                                                            sourcePort: 53, destinationPort: 5353), zone: 9, id: 0x0a0b_0c0d)
        let bytes = ConntrackCodec.deleteRequest(entry, seq: 1)
        #expect(bytes == [
            88, 0, 0, 0, 0x02, 0x01, 0x05, 0x00,  // len 88, IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK
            1, 0, 0, 0, 0, 0, 0, 0,               // seq 1, port id 0
            2, 0, 0, 0,                           // AF_INET, V0, res_id
            52, 0, 0x01, 0x80,                    // CTA_TUPLE_ORIG | NLA_F_NESTED, 52 bytes
            20, 0, 0x01, 0x80,                    //   CTA_TUPLE_IP | nested
            8, 0, 1, 0, 10, 0, 0, 1,              //     CTA_IP_V4_SRC 10.0.0.1
            8, 0, 2, 0, 10, 0, 0, 2,              //     CTA_IP_V4_DST 10.0.0.2
            28, 0, 0x02, 0x80,                    //   CTA_TUPLE_PROTO | nested
            5, 0, 1, 0, 17, 0, 0, 0,              //     CTA_PROTO_NUM udp (+3 padding)
            6, 0, 2, 0, 0, 53, 0, 0,              //     CTA_PROTO_SRC_PORT 53 (big endian)
            6, 0, 3, 0, 0x14, 0xe9, 0, 0,         //     CTA_PROTO_DST_PORT 5353
            6, 0, 18, 0, 0, 9, 0, 0,              // CTA_ZONE 9
            8, 0, 12, 0, 0x0a, 0x0b, 0x0c, 0x0d,  // CTA_ID
        ])
        #expect(bytes.count == 88)
    }

    @Test func decodesTheKernelsShapeAndSendsItsTupleBack() throws {
        let bytes = kernelEntry()
        let entry = try #require(try ConntrackCodec.decodeEntry(bytes))
        #expect(entry.original == ConntrackTuple(source: IPAddress("10.0.0.1")!, destination: IPAddress("10.0.0.2")!, proto: 6, sourcePort: 40000, destinationPort: 80))
        #expect(entry.reply == ConntrackTuple(source: IPAddress("10.0.0.2")!, destination: IPAddress("10.0.0.1")!, proto: 6, sourcePort: 80, destinationPort: 40000))
        #expect(entry.zone == 3 && entry.id == 0xdead_beef)
        // The delete carries the kernel's CTA_TUPLE_ORIG bytes verbatim (offset 20, 52 bytes).
        #expect(entry.kernelTuple == Array(bytes[20..<72]))
        let delete = ConntrackCodec.deleteRequest(entry, seq: 5)
        #expect(Array(delete[20..<72]) == Array(bytes[20..<72]))
        // Without zone and id the entry is zone 0 and the delete names no id.
        let plain = try #require(try ConntrackCodec.decodeEntry(kernelEntry(zone: nil, id: nil)))
        #expect(plain.zone == 0 && plain.id == nil)
    }

    @Test func otherMessagesAndFamiliesAreSkipped() throws {
        var other = kernelEntry()
        other[4] = 0x02  // IPCTNL_MSG_CT_DELETE (an event), not an entry of a dump
        #expect(try ConntrackCodec.decodeEntry(other) == nil)
        var bridge = kernelEntry()
        bridge[16] = 7  // NFPROTO_BRIDGE
        #expect(try ConntrackCodec.decodeEntry(bridge) == nil)
        // A v4 message with a 16-byte address: the tuple is not usable, the entry is skipped.
        let ip = attr(1 | 0x8000, attr(1, [UInt8](repeating: 1, count: 16)) + attr(2, [10, 0, 0, 2]))
        let proto = attr(2 | 0x8000, attr(1, [6]))
        let odd = ConntrackCodec.message(type: 0x0100, flags: 2, seq: 1, family: 2, attributes: attr(1 | 0x8000, ip + proto) + attr(2 | 0x8000, ip + proto))
        #expect(try ConntrackCodec.decodeEntry(odd) == nil)
    }

    @Test func lyingLengthsAreMalformedNotCrashes() {
        var bytes = kernelEntry()
        bytes[20] = 0xff  // CTA_TUPLE_ORIG claims 255 bytes
        #expect(throws: ConntrackError.self) { try ConntrackCodec.decodeEntry(bytes) }
        #expect(throws: ConntrackError.malformedReply("a 3-byte conntrack message is shorter than its headers")) { try ConntrackCodec.decodeEntry([1, 2, 3]) }
        var long = kernelEntry()
        long[0] = 0xff; long[1] = 0xff  // nlmsg_len past the datagram
        #expect(throws: ConntrackError.self) { try ConntrackCodec.decodeEntry(long) }
    }

    /// Fuzz-style: every single-byte mutation and every truncation of a real-shaped entry, then
    /// random bytes behind a valid header. Each either decodes, is skipped, or is reported
    /// malformed; none crashes, and some of each kind occur.
    @Test func mutatedAndRandomBytesNeverCrash() {
        let base = kernelEntry()
        var decoded = 0, skipped = 0, malformed = 0
        func feed(_ b: [UInt8]) {
            do {
                if try ConntrackCodec.decodeEntry(b) != nil { decoded += 1 } else { skipped += 1 }
            } catch {
                malformed += 1
            }
        }
        for i in 0..<base.count {
            for v: UInt8 in [0, 1, 3, 4, 5, 0x7f, 0x80, 0xfe, 0xff] {
                var b = base
                b[i] = v
                feed(b)
            }
        }
        for n in 0..<base.count { feed(Array(base.prefix(n))) }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let count = Int.random(in: 0...300, using: &rng)
            var b = Array(base.prefix(20)) + (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let total = UInt32(b.count)
            b[0] = UInt8(total & 0xff); b[1] = UInt8(total >> 8); b[2] = 0; b[3] = 0
            feed(b)
        }
        #expect(decoded > 0 && skipped > 0 && malformed > 0, "decoded \(decoded), skipped \(skipped), malformed \(malformed)")
    }
}

/// The real table, in a fresh namespace: entries inserted with the conntrack tool are dumped,
/// deleted by our request, and gone for the tool too.
@Suite(.serialized) struct ConntrackKernelTests {
    @Test func dumpAndDeleteInAFreshNamespace() throws {
        guard Kernel.enabled else { return }
        try TestSystem.requireRoot("the conntrack kernel test")
        try Kernel.withNamespace { ns in
            let insert: [[String]] = [
                ["-p", "tcp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--sport", "40000", "--dport", "80", "--state", "ESTABLISHED"],
                ["-p", "udp", "-s", "10.9.0.1", "-d", "10.9.0.3", "--sport", "40001", "--dport", "53", "--zone", "5"],
                ["-p", "icmp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--icmp-type", "8", "--icmp-code", "0", "--icmp-id", "77"],
                ["-p", "tcp", "-s", "fd00:9::1", "-d", "fd00:9::2", "--sport", "40002", "--dport", "443", "--state", "ESTABLISHED"],
            ]
            for args in insert {
                let r = try Kernel.run(["ip", "netns", "exec", ns, "conntrack", "-I"] + args + ["-t", "120", "-u", "SEEN_REPLY"])
                #expect(r.status == 0, "conntrack -I \(args): \(r.err)")
            }
            let table = try NetlinkConntrack(namespace: ns)
            let entries = try table.entries()
            #expect(entries.count == 4, "\(entries)")
            let tcp = try #require(entries.first { $0.original.proto == 6 && $0.original.source.isIPv4 })
            #expect(tcp.original == ConntrackTuple(source: IPAddress("10.9.0.1")!, destination: IPAddress("10.9.0.2")!, proto: 6, sourcePort: 40000, destinationPort: 80))
            #expect(tcp.id != nil)
            let udp = try #require(entries.first { $0.original.proto == 17 })
            #expect(udp.zone == 5 && udp.original.destinationPort == 53)
            let icmp = try #require(entries.first { $0.original.proto == 1 })
            #expect(icmp.original.sourcePort == nil && icmp.original.destinationPort == nil)
            let v6 = try #require(entries.first { !$0.original.source.isIPv4 })
            #expect(v6.original.destination == IPAddress("fd00:9::2")! && v6.original.destinationPort == 443)

            // Each kind deletes by the kernel's own tuple (ICMP id/type/code included), zone and id.
            for e in [tcp, udp, icmp] { #expect(try table.delete(e) == true, "\(e)") }
            // Gone already: false, not an error.
            #expect(try table.delete(tcp) == false)
            let left = try table.entries()
            #expect(left == [v6], "\(left)")
            let listed = try Kernel.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-f", "ipv4"])
            #expect(!listed.out.contains("10.9.0."), "\(listed.out)")
            #expect(try table.delete(v6) == true)
            #expect(try table.entries().isEmpty)
        }
    }

    @Test func unknownNamespaceIsATypedError() {
        #expect(throws: ConntrackError.self) { _ = try NetlinkConntrack(namespace: "bh-no-such-namespace-\(getpid())") }
    }
}
