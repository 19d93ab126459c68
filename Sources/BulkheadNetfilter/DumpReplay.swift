import BulkheadRuleset
import CNetfilter
import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

@available(macOS 15.0, *)
extension NetlinkNetfilter {
    /// Decodes the netlink messages of one table dump into the model: pure, no socket, no kernel.
    ///
    /// The bytes go through the same code as `dump(table:)` (message walking, libnftnl parsing,
    /// the delinearizer, element decoding): a replay transport answers each of the dumper's
    /// requests with the recorded messages of the matching type. It exists for the fuzz target
    /// of the dump decoder and for tests of kernel data Bulkhead did not write.
    ///
    /// - Parameters:
    ///   - messages: netlink messages back to back, each an `nlmsghdr` + `nfgenmsg` + attributes
    ///     padded to 4 bytes, as the kernel sends them: `NFT_MSG_NEWTABLE`, `NEWCHAIN`, `NEWSET`,
    ///     `NEWSETELEM` and `NEWRULE` in any order (element messages go to the set they name).
    ///     Other message types are ignored; sequence numbers and port ids do not matter.
    ///     `recordDump(table:)` returns such bytes for a live table.
    ///   - table: the table to read (the dumper filters by family and name as the kernel would).
    /// - Returns: the table, or nil when no `NEWTABLE` message names it.
    /// - Throws: `NetfilterError.malformedReply` when the bytes are not a sequence of netlink
    ///   messages (a length running past the end, a header shorter than an nfnetlink header, a
    ///   message larger than a dump datagram, an attribute of the wrong size or an unterminated
    ///   string: see `AttributeCheck`) or an object does not parse; never traps on any input.
    ///   Rules it cannot read back come out as foreign rules (see `Rule.isUndecoded`).
    public static func decodeDump(messages: [UInt8], table: TableID = TableID(family: .inet, name: "bulkhead")) throws -> Table? {
        let replay = try DumpReplay(messages: messages, family: table.family.number)
        let conn = NetlinkConnection(transport: replay, firstSeq: 1)
        var dumper = TableDumper(conn: conn, id: table)
        dumper.elementReads = 1  // a recorded dump reads the same every time
        return try dumper.dump()
    }

    /// The raw data messages of one read of `table` (the input format of `decodeDump`), for seed
    /// corpora and tests. Not checked for consistency across concurrent commits.
    public func recordDump(table: TableID) throws -> [UInt8] {
        try withConnection { conn in
            let recorder = RecordingTransport(conn.transport)
            _ = try TableDumper(conn: NetlinkConnection(transport: recorder), id: table).dump()
            return recorder.recorded
        }
    }
}

/// nf_tables message numbers of a dump (include/uapi/linux/netfilter/nf_tables.h).
private enum DumpMessage {
    static let subsystem = UInt16(NFNL_SUBSYS_NFTABLES)
    static let newTable = UInt16(NFT_MSG_NEWTABLE.rawValue), getTable = UInt16(NFT_MSG_GETTABLE.rawValue)
    static let newChain = UInt16(NFT_MSG_NEWCHAIN.rawValue), getChain = UInt16(NFT_MSG_GETCHAIN.rawValue)
    static let newRule = UInt16(NFT_MSG_NEWRULE.rawValue), getRule = UInt16(NFT_MSG_GETRULE.rawValue)
    static let newSet = UInt16(NFT_MSG_NEWSET.rawValue), getSet = UInt16(NFT_MSG_GETSET.rawValue)
    static let newElements = UInt16(NFT_MSG_NEWSETELEM.rawValue), getElements = UInt16(NFT_MSG_GETSETELEM.rawValue)
    static let getGeneration = UInt16(NFT_MSG_GETGEN.rawValue), newGeneration = UInt16(NFT_MSG_NEWGEN.rawValue)
    static let dumpTypes: Set<UInt16> = [newTable, newChain, newRule, newSet, newElements]
}

private func le32(_ b: [UInt8], _ o: Int) -> UInt32 {
    UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
}
private func le16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
private func bytes32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
private func bytes16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

/// Splits bytes into netlink messages, checking every length in Swift before C sees them.
private func splitMessages(_ bytes: [UInt8], limit: Int) throws -> [[UInt8]] {
    let header = Int(bh_nfnl_header_len())
    var out: [[UInt8]] = []
    var offset = 0
    while offset < bytes.count {
        guard bytes.count - offset >= 16 else {
            throw NetfilterError.malformedReply("\(bytes.count - offset) trailing bytes at offset \(offset) are not a netlink message")
        }
        let length = Int(le32(bytes, offset))
        guard length >= header, length <= bytes.count - offset else {
            throw NetfilterError.malformedReply("netlink message at offset \(offset) claims \(length) bytes (\(bytes.count - offset) left, at least \(header) needed)")
        }
        guard length <= limit else {
            throw NetfilterError.malformedReply("netlink message at offset \(offset) has \(length) bytes, more than one dump datagram (\(limit))")
        }
        out.append(Array(bytes[offset..<(offset + length)]))
        offset += min((length + 3) & ~3, bytes.count - offset)
    }
    return out
}

/// Answers the dumper's requests from recorded messages, as the kernel would from its tables.
private final class DumpReplay: NetlinkTransport {
    /// Dump datagrams are at most 32 KiB (netlink_recvmsg); the connection's buffer holds 64 KiB.
    static let datagramLimit = 32768
    var portID: UInt32 { 0 }
    private let messages: [(type: UInt16, bytes: [UInt8])]
    private var queue: [[UInt8]] = []

    init(messages bytes: [UInt8], family: UInt8) throws {
        var kept: [(type: UInt16, bytes: [UInt8])] = []
        var offset = 0
        for m in try splitMessages(bytes, limit: Self.datagramLimit) {
            defer { offset += (m.count + 3) & ~3 }
            let type = le16(m, 4)
            guard type >> 8 == DumpMessage.subsystem, DumpMessage.dumpTypes.contains(type & 0xff),
                  m[16] == family else { continue }  // nfgenmsg.nfgen_family
            // Bytes that did not come from the kernel: libnftnl must only see well-formed attributes.
            guard let schema = AttributeCheck.schema(forMessage: type & 0xff), let checked = AttributeCheck.checked(m, schema: schema) else {
                throw NetfilterError.malformedReply("message type \(type & 0xff) at offset \(offset) has a malformed attribute")
            }
            kept.append((type & 0xff, checked))
        }
        messages = kept
    }

    func reserveBuffers(send: Int, receive: Int) {}

    func send(_ parts: [UnsafeRawBufferPointer]) throws {
        let request = parts.flatMap { Array($0) }
        guard request.count >= 16 else { throw NetfilterError.malformedReply("replay: short request") }
        let type = le16(request, 4) & 0xff, seq = le32(request, 8)
        var reply: [[UInt8]] = []
        func matching(_ t: UInt16) -> [[UInt8]] { messages.filter { $0.type == t }.map { Self.renumbered($0.bytes, seq: seq) } }
        switch type {
        case DumpMessage.getGeneration:
            let payload: [UInt8] = [0, 0, 0, 0] + bytes16(8) + bytes16(1) + withUnsafeBytes(of: UInt32(1).bigEndian) { Array($0) }
            reply = [bytes32(UInt32(16 + payload.count)) + bytes16(DumpMessage.subsystem << 8 | DumpMessage.newGeneration)
                     + bytes16(0) + bytes32(seq) + bytes32(0) + payload, Self.ack(seq: seq, errno: 0)]
        case DumpMessage.getTable:
            let tables = matching(DumpMessage.newTable)
            reply = tables + [Self.ack(seq: seq, errno: tables.isEmpty ? ENOENT : 0)]
        case DumpMessage.getChain: reply = matching(DumpMessage.newChain) + [Self.done(seq: seq)]
        case DumpMessage.getSet: reply = matching(DumpMessage.newSet) + [Self.done(seq: seq)]
        case DumpMessage.getRule: reply = matching(DumpMessage.newRule) + [Self.done(seq: seq)]
        case DumpMessage.getElements:
            let wanted = try Self.setName(request)
            reply = try messages.filter { $0.type == DumpMessage.newElements }
                .filter { try Self.setName($0.bytes) == wanted }
                .map { Self.renumbered($0.bytes, seq: seq) } + [Self.done(seq: seq)]
        default:
            throw NetfilterError.malformedReply("replay: unexpected request type \(type)")
        }
        // Several messages per datagram, as the kernel packs a dump.
        var datagram: [UInt8] = []
        for m in reply {
            if !datagram.isEmpty && datagram.count + m.count > Self.datagramLimit {
                queue.append(datagram)
                datagram = []
            }
            datagram += m + [UInt8](repeating: 0, count: (4 - m.count % 4) % 4)
        }
        if !datagram.isEmpty { queue.append(datagram) }
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutMilliseconds: Int32) throws -> Int? {
        guard !queue.isEmpty else { return nil }
        let d = queue.removeFirst()
        guard d.count <= buffer.count else { throw NetfilterError.malformedReply("replay: datagram too large") }
        d.withUnsafeBytes { buffer.copyMemory(from: $0) }
        return d.count
    }

    private static func renumbered(_ m: [UInt8], seq: UInt32) -> [UInt8] {
        var m = m
        m.replaceSubrange(8..<12, with: bytes32(seq))
        return m
    }

    /// The set an element request or element message names (NFTA_SET_ELEM_LIST_SET), read in
    /// Swift: the attribute stream was checked when the message was recorded or built.
    private static func setName(_ message: [UInt8]) throws -> [UInt8]? {
        var offset = 20
        while offset + 4 <= message.count {
            let length = Int(le16(message, offset)), type = le16(message, offset + 2) & 0x3fff
            guard length >= 4, offset + length <= message.count else {
                throw NetfilterError.malformedReply("NEWSETELEM attribute at byte \(offset) runs past the message")
            }
            if type == 2 { return Array(message[(offset + 4)..<(offset + length)].prefix { $0 != 0 }) }
            offset += (length + 3) & ~3
        }
        return nil
    }

    static func ack(seq: UInt32, errno: Int32) -> [UInt8] {
        let payload = bytes32(UInt32(bitPattern: -errno)) + bytes32(16) + bytes16(0) + bytes16(0) + bytes32(seq) + bytes32(0)
        return bytes32(UInt32(16 + payload.count)) + bytes16(2) + bytes16(0x100) + bytes32(seq) + bytes32(0) + payload
    }

    static func done(seq: UInt32) -> [UInt8] {
        bytes32(20) + bytes16(3) + bytes16(2) + bytes32(seq) + bytes32(0) + bytes32(0)  // NLMSG_DONE, NLM_F_MULTI
    }
}

/// Forwards to the real socket and keeps a copy of every nf_tables data message received.
private final class RecordingTransport: NetlinkTransport {
    let inner: NetlinkTransport
    var recorded: [UInt8] = []
    init(_ inner: NetlinkTransport) { self.inner = inner }
    var portID: UInt32 { inner.portID }
    func send(_ parts: [UnsafeRawBufferPointer]) throws { try inner.send(parts) }
    func reserveBuffers(send: Int, receive: Int) { inner.reserveBuffers(send: send, receive: receive) }
    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutMilliseconds: Int32) throws -> Int? {
        guard let n = try inner.receive(into: buffer, timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        let datagram = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        for m in (try? splitMessages(datagram, limit: Int.max)) ?? [] {
            let type = le16(m, 4)
            if type >> 8 == DumpMessage.subsystem, DumpMessage.dumpTypes.contains(type & 0xff) {
                recorded += m + [UInt8](repeating: 0, count: (4 - m.count % 4) % 4)
            }
        }
        return n
    }
}

@available(macOS 15.0, *)
extension NetlinkNetfilter {
    /// Appends a rule made of arbitrary kernel expressions to `chain`, bypassing the linearizer:
    /// for tests that need kernel data Bulkhead never writes and nft refuses to write (a 2-byte
    /// load compared against 8 bytes). Not used by any command.
    func appendRawRule(table: TableID, chain: String, expressions: [KernelExpression], comment: String? = nil) throws {
        try withConnection { conn in
            let batch = try EncodedBatch(generation: nil, seq: { [conn] in conn.allocateSeq() })
            let index = batch.beginOperation("add raw rule to \(table) \(chain)")
            try MessageEncoder(table: table).newRule(Rule(chain: chain, [], comment: comment),
                                                     linearized: LinearizedRule(expressions: expressions, anonymousSets: []),
                                                     into: batch, operation: index)
            try batch.end()
            try conn.commit(batch)
        }
    }
}
