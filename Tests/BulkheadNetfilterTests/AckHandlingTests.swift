import BulkheadRuleset
import CNetfilter
import Testing
@testable import BulkheadNetfilter

/// A transport double: records what is sent and answers each batch the way the kernel would,
/// with a scripted error for chosen messages. No kernel, no privileges.
final class ScriptedTransport: NetlinkTransport {
    enum Reply {
        /// Ack every message; fail the n-th operation message (0-based) with errno and text.
        case failMessage(index: Int, errno: Int32, message: String?)
        /// Refuse the batch as a whole (error addressed to BATCH_BEGIN).
        case refuseBatch(errno: Int32)
        /// Ack everything and echo NEWGEN with this generation.
        case commit(generation: UInt32)
    }

    var portID: UInt32 { 4242 }
    var script: [Reply] = []
    var sentDatagrams: [[UInt8]] = []
    private var queue: [[UInt8]] = []

    func reserveBuffers(send: Int, receive: Int) {}

    func send(_ parts: [UnsafeRawBufferPointer]) throws {
        let bytes = parts.flatMap { Array($0) }
        sentDatagrams.append(bytes)
        // Walk the netlink messages of the datagram.
        var headers: [(type: UInt16, seq: UInt32)] = []
        var off = 0
        while off + 16 <= bytes.count {
            let len = Int(u32(bytes, off))
            headers.append((UInt16(bytes[off + 4]) | UInt16(bytes[off + 5]) << 8, u32(bytes, off + 8)))
            off += (len + 3) & ~3
        }
        guard let first = headers.first else { return }
        if first.type != 0x10 { // a plain request (GETGEN): answer NEWGEN + ack
            queue.append(Self.newgen(seq: first.seq, generation: 1) + Self.ack(seq: first.seq, errno: 0, message: nil))
            return
        }
        let ops = headers.dropFirst().dropLast() // without BATCH_BEGIN / BATCH_END
        var reply: [UInt8] = []
        switch script.isEmpty ? .commit(generation: 2) : script.removeFirst() {
        case .refuseBatch(let err):
            reply = Self.ack(seq: first.seq, errno: err, message: nil)
        case .failMessage(let index, let err, let message):
            for (i, h) in ops.enumerated() {
                reply += Self.ack(seq: h.seq, errno: i == index ? err : 0, message: i == index ? message : nil)
            }
        case .commit(let gen):
            reply = Self.newgen(seq: first.seq, generation: gen)
            for h in ops { reply += Self.ack(seq: h.seq, errno: 0, message: nil) }
        }
        queue.append(reply)
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutMilliseconds: Int32) throws -> Int? {
        guard !queue.isEmpty else { return nil }
        let d = queue.removeFirst()
        buffer.copyMemory(from: UnsafeRawBufferPointer(start: d, count: d.count))
        return d.count
    }

    private func u32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
    }

    static func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    static func le16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    /// NLMSG_ERROR, capped (NETLINK_CAP_ACK), with NLMSGERR_ATTR_MSG when `message` is given.
    static func ack(seq: UInt32, errno: Int32, message: String?) -> [UInt8] {
        var attrs: [UInt8] = []
        if let message {
            let s = Array(message.utf8) + [0]
            attrs = le16(UInt16(4 + s.count)) + le16(1) + s
            attrs += [UInt8](repeating: 0, count: (4 - attrs.count % 4) % 4)
        }
        let flags: UInt16 = 0x100 | (message == nil ? 0 : 0x200) // NLM_F_CAPPED | NLM_F_ACK_TLVS
        let payload = le32(UInt32(bitPattern: -errno)) + le32(16) + le16(0) + le16(0) + le32(seq) + le32(4242) + attrs
        return le32(UInt32(16 + payload.count)) + le16(2) + le16(flags) + le32(seq) + le32(0) + payload
    }

    /// NFT_MSG_NEWGEN with NFTA_GEN_ID.
    static func newgen(seq: UInt32, generation: UInt32) -> [UInt8] {
        let payload: [UInt8] = [0, 0, 0, 0] + le16(8) + le16(1) + withUnsafeBytes(of: generation.bigEndian) { Array($0) }
        return le32(UInt32(16 + payload.count)) + le16(0x0a00 | 15) + le16(0) + le32(seq) + le32(0) + payload
    }
}

@Suite struct AckHandlingTests {
    static let id = TableID(family: .inet, name: "bh")

    static func transaction() throws -> Transaction {
        var tx = Transaction(table: id, current: nil)
        try tx.add(.table(Table(family: .inet, name: "bh")))
        try tx.add(.chain(Chain(name: "a")))
        try tx.add(.set(NFTSet(name: "s", key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("10.0.0.1")))])))
        try tx.add(.chain(Chain(name: "b")))
        return tx
    }

    @Test func errorIsMappedBackToTheOperationBySequenceNumber() throws {
        let t = ScriptedTransport()
        let nf = try NetlinkNetfilter(transport: t, ownership: .disabled)
        // Messages: 0 table, 1 chain a, 2 set s, 3 its elements, 4 chain b. Message 3 belongs to
        // operation 2 (the set with its elements).
        t.script = [.failMessage(index: 3, errno: 22, message: "element does not fit the key")]
        #expect {
            try nf.apply(try Self.transaction(), expectedGeneration: 5)
        } throws: { error in
            guard case RulesetError.operationFailed(let index, let op, .kernel(let errno, let message)) = error else { return false }
            return index == 2 && op.hasPrefix("add set inet bh s") && errno == 22
                && message == "Invalid argument: element does not fit the key"
        }
    }

    @Test func generationMismatchIsStale() throws {
        let t = ScriptedTransport()
        let nf = try NetlinkNetfilter(transport: t, ownership: .disabled)
        t.script = [.refuseBatch(errno: 85)] // ERESTART
        #expect {
            try nf.apply(try Self.transaction(), expectedGeneration: 5)
        } throws: { error in
            guard case RulesetError.staleGeneration(let expected, _) = error else { return false }
            return expected == 5
        }
    }

    @Test func missingCapabilityIsNamed() throws {
        let t = ScriptedTransport()
        let nf = try NetlinkNetfilter(transport: t, ownership: .disabled)
        t.script = [.refuseBatch(errno: 1)] // EPERM on BATCH_BEGIN: nfnetlink's capability check
        #expect {
            try nf.apply(try Self.transaction(), expectedGeneration: nil)
        } throws: { error in
            guard case RulesetError.permissionDenied = error else { return false }
            return "\(error)".contains("needs CAP_NET_ADMIN")
        }
    }

    @Test func commitReturnsTheEchoedGeneration() throws {
        let t = ScriptedTransport()
        let nf = try NetlinkNetfilter(transport: t, ownership: .disabled)
        t.script = [.commit(generation: 6)]
        #expect(try nf.apply(try Self.transaction(), expectedGeneration: 5) == 6)
        #expect(t.sentDatagrams.count == 1, "one batch, one datagram")
        #expect(nf.lastCommit?.messages == 5)
    }

    /// A large batch spans several pages but is still one datagram (one sendmsg).
    @Test func largeBatchIsOneDatagramOfSeveralPages() throws {
        var tx = Transaction(table: Self.id, current: nil)
        try tx.add(.table(Table(family: .inet, name: "bh")))
        try tx.add(.set(NFTSet(name: "s", key: KeyType(.ipv4Addr))))
        try tx.add(.elements(set: "s", (0..<20_000).map { SetElement(.ipv4(IPv4Address(0x0A00_0000 + UInt32($0)))) }))
        var enc = TransactionEncoder()
        enc.pageSize = 64 * 1024
        let batch = try enc.encode(tx, generation: nil, seq: { 1 })
        #expect(batch.parts.count > 2)
        #expect(batch.parts.allSatisfy { $0.count <= 64 * 1024 + Int(EncodedBatch.maxMessageSize) })
        let t = ScriptedTransport()
        let nf = try NetlinkNetfilter(transport: t, ownership: .disabled)
        try nf.apply(tx, expectedGeneration: nil)
        #expect(t.sentDatagrams.count == 1)
        #expect((nf.lastCommit?.messages ?? 0) > 2, "elements split over several messages (16-bit nest length)")
    }

    /// An expression Bulkhead does not know becomes a foreign rule, never a crash.
    @Test func unknownExpressionsDecodeToAForeignRule() {
        let d = Delinearizer(family: .inet, anonymousSets: [:])
        let rule = d.rule(chain: "c", handle: 3, expressions: [.unknown(name: "tproxy", text: "tproxy ip reg 1"), .verdict(code: 1, chain: nil)], userdata: [])
        #expect(rule.comment?.hasPrefix(Delinearizer.foreignMarker) == true)
        #expect(rule != Rule(chain: "c", handle: 3, [.verdict(.accept)]))
        // Known expressions in an order we never emit (verdict before counter) decode as written,
        // not as foreign: the rule differs from every rule Bulkhead writes (counter, then verdict),
        // so a diff replaces it.
        let odd = d.rule(chain: "c", handle: 4, expressions: [.verdict(code: 1, chain: nil), .counter(packets: 0, bytes: 0)], userdata: [])
        #expect(odd == Rule(chain: "c", handle: 4, [.verdict(.accept), .counter(packets: 0, bytes: 0)]), "\(odd)")
        #expect(odd.comment == nil)
    }
}
