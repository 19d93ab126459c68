import CNetfilter
import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

/// One nf_tables batch (NFNL_MSG_BATCH_BEGIN … END) being encoded, with the bookkeeping to map
/// every message's sequence number back to the transaction operation that produced it.
///
/// The bytes live in libnftnl's page list (`nftnl_batch`): when a message overruns the current
/// page libnftnl moves it to a fresh one, so a batch of any size is a list of pages that
/// `NetlinkConnection.commit` hands to ONE sendmsg as a gather list. The kernel runs a batch
/// over a single datagram (nfnetlink_rcv_batch aborts a datagram that has no BATCH_END), so
/// "larger than one buffer" means more pages in the same datagram, never more datagrams.
final class EncodedBatch {
    private let handle: OpaquePointer
    /// Sequence number of the BATCH_BEGIN message; batch-wide errors are addressed to it.
    let beginSeq: UInt32
    /// Generation id put in BATCH_BEGIN (NFNL_BATCH_GENID), if any.
    let generation: UInt32?
    /// Sequence numbers that carry NLM_F_ACK and so each get exactly one ack.
    private(set) var expectedAcks: Set<UInt32> = []
    private var operationOfSeq: [UInt32: Int] = [:]
    /// Human text of each operation, rendered only when needed: the nft command of a 100k-element
    /// operation is a multi-megabyte string that an error message or plan may need, a commit not.
    private var describers: [() -> String] = []
    var operationCount: Int { describers.count }
    func operationDescription(_ index: Int) -> String { describers[index]() }
    private(set) var messageCount = 0
    /// Operations the backend added in front of the transaction's own (adopting the table):
    /// transaction operation i is batch operation i + implicitOperations.
    var implicitOperations = 0
    private var ended = false
    private var nextSeq: () -> UInt32
    /// Byte copies of the operation messages, kept only when asked for (golden tests, hints).
    private(set) var recordedMessages: [(seq: UInt32, bytes: [UInt8])] = []
    private let recordMessages: Bool

    /// Default page size: large enough that 100k set elements fit in a few pages, small enough
    /// not to waste memory on small transactions (pages are allocated as needed).
    static let defaultPageSize: UInt32 = 1 << 20
    /// Largest single message: the element-list nest has a 16-bit length, so an element message
    /// is at most 64 KiB plus headers; libnftnl needs this much slack at the end of a page.
    static let maxMessageSize: UInt32 = 65536 + 4096

    init(generation: UInt32?, seq: @escaping () -> UInt32, pageSize: UInt32 = EncodedBatch.defaultPageSize,
         recordMessages: Bool = false) throws {
        guard let b = nftnl_batch_alloc(pageSize, Self.maxMessageSize) else {
            throw NetfilterError.systemCall(call: "nftnl_batch_alloc", errno: ENOMEM, context: "allocating a netlink batch")
        }
        handle = b
        self.generation = generation
        self.nextSeq = seq
        self.recordMessages = recordMessages
        beginSeq = seq()
        _ = bh_batch_begin(nftnl_batch_buffer(handle), beginSeq, generation ?? 0, generation == nil ? 0 : 1, 1)
        try advance()
    }

    deinit { nftnl_batch_free(handle) }

    private func advance() throws {
        if nftnl_batch_update(handle) < 0 {
            throw NetfilterError.systemCall(call: "nftnl_batch_update", errno: errno, context: "growing the netlink batch")
        }
    }

    /// Starts a new operation; returns its index.
    func beginOperation(_ description: @escaping @autoclosure () -> String) -> Int {
        describers.append(description)
        return describers.count - 1
    }

    /// Appends one message for operation `index`. `build` writes the message at the given
    /// buffer with the given sequence number and returns its header; NLM_F_ACK is added here so
    /// every operation message is acknowledged on its own.
    func append(operation index: Int, _ build: (UnsafeMutablePointer<CChar>, UInt32) throws -> UnsafeMutablePointer<nlmsghdr>) throws {
        precondition(!ended, "batch already ended")
        let seq = nextSeq()
        let buffer = nftnl_batch_buffer(handle)!
        zero(from: buffer)
        let nlh = try build(buffer.assumingMemoryBound(to: CChar.self), seq)
        nlh.pointee.nlmsg_flags |= UInt16(NLM_F_ACK)
        if recordMessages {
            let raw = UnsafeRawBufferPointer(start: UnsafeRawPointer(nlh), count: Int(nlh.pointee.nlmsg_len))
            recordedMessages.append((seq, Array(raw)))
        }
        expectedAcks.insert(seq)
        operationOfSeq[seq] = index
        messageCount += 1
        try advance()
    }

    // libnftnl pages come from malloc and libmnl leaves attribute padding unwritten, so without
    // this the pad bytes would be whatever the heap held: harmless to the kernel, but the bytes
    // we send would not be deterministic. Zero the space a message can use, once per region.
    private var zeroedStart: UnsafeMutableRawPointer?
    private var zeroedEnd: UnsafeMutableRawPointer?

    private func zero(from buffer: UnsafeMutableRawPointer) {
        let want = buffer + Int(Self.maxMessageSize)
        if let start = zeroedStart, let end = zeroedEnd, buffer >= start, buffer <= end {
            if want > end {
                memset(end, 0, want - end)
                zeroedEnd = want
            }
        } else {
            // First message, or libnftnl moved on to a fresh page.
            memset(buffer, 0, Int(Self.maxMessageSize))
            zeroedStart = buffer
            zeroedEnd = want
        }
    }

    /// Closes the batch with NFNL_MSG_BATCH_END.
    func end() throws {
        guard !ended else { return }
        _ = bh_batch_end(nftnl_batch_buffer(handle), nextSeq())
        try advance()
        ended = true
    }

    var isEmpty: Bool { messageCount == 0 }

    /// The pages to send, in order, as one datagram.
    var parts: [UnsafeRawBufferPointer] {
        precondition(ended, "send an ended batch")
        let n = Int(nftnl_batch_iovec_len(handle))
        var iov = [iovec](repeating: iovec(), count: n)
        nftnl_batch_iovec(handle, &iov, UInt32(n))
        return iov.map { UnsafeRawBufferPointer(start: $0.iov_base, count: $0.iov_len) }
    }

    /// Total bytes of the batch.
    var byteCount: Int { parts.reduce(0) { $0 + $1.count } }

    func operationIndex(for seq: UInt32) -> Int? { operationOfSeq[seq] }

    /// Order of a message inside the batch (sequence numbers grow, modulo 2^32).
    func position(of seq: UInt32) -> UInt32 { seq &- beginSeq }

    /// The bytes of the message with sequence number `seq`, found by walking the pages (only
    /// needed on the error path).
    func messageBytes(seq: UInt32) -> [UInt8]? {
        for part in parts {
            var off = 0
            while off + 16 <= part.count {
                let len = Int(part.load(fromByteOffset: off, as: UInt32.self))
                guard len >= 16, off + len <= part.count else { break }
                if part.load(fromByteOffset: off + 8, as: UInt32.self) == seq {
                    return Array(part[off..<(off + len)])
                }
                off += (len + 3) & ~3
            }
        }
        return nil
    }

    /// Text for an error that came with an attribute offset (NLMSGERR_ATTR_OFFS, relative to
    /// the start of our message) but no message: nf_tables mostly points at the attribute.
    func attributeHint(seq: UInt32, offset: UInt32?) -> String? {
        guard let offset else { return nil }
        if let bytes = messageBytes(seq: seq), Int(offset) + 4 <= bytes.count {
            let type = UInt16(bytes[Int(offset) + 2]) | UInt16(bytes[Int(offset) + 3]) << 8
            var text = "the kernel rejected attribute type \(type & 0x3fff) at byte \(offset) of the message"
            // A string attribute (a name) is the usual culprit: quote it.
            let len = Int(UInt16(bytes[Int(offset)]) | UInt16(bytes[Int(offset) + 1]) << 8)
            if len > 4, Int(offset) + len <= bytes.count {
                let payload = bytes[(Int(offset) + 4)..<(Int(offset) + len)]
                if payload.last == 0, payload.dropLast().allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) {
                    text += " (\"\(String(decoding: payload.dropLast(), as: UTF8.self))\")"
                }
            }
            return text
        }
        return "the kernel rejected the attribute at byte \(offset) of the message"
    }
}
