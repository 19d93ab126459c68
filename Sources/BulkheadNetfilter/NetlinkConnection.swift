import CNetfilter
import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

/// One acknowledgement (or error) from the kernel, decoded from NLMSG_ERROR.
struct KernelAck: Equatable, Sendable {
    var seq: UInt32
    /// 0 for success, otherwise a positive errno.
    var errno: Int32
    /// NLMSGERR_ATTR_MSG, the kernel's extended-ack text, when it gave one.
    var message: String?
    /// NLMSGERR_ATTR_OFFS: offset of the offending attribute in our message, when given.
    var attributeOffset: UInt32?
}

/// Request/response plumbing over a `NetlinkTransport`: sequence numbers, dumps, generation id,
/// and sending one batch and collecting its acks.
final class NetlinkConnection {
    let transport: NetlinkTransport
    private var nextSeq: UInt32
    /// How long to wait for the kernel. nf_tables processes a batch synchronously inside
    /// sendmsg, so replies are normally queued before sendmsg returns; this only guards
    /// against a reply that never comes.
    var timeoutMilliseconds: Int32 = 10_000
    /// Receive buffer for one datagram. Dumps are capped at 32 KiB per datagram by the kernel
    /// (netlink_recvmsg: SKB_WITH_OVERHEAD(32768)); acks are tiny. 64 KiB + a page covers both.
    private var receiveBuffer: UnsafeMutableRawBufferPointer

    init(transport: NetlinkTransport, firstSeq: UInt32? = nil) {
        self.transport = transport
        // A time-based first sequence number, like nft, so replies to an earlier process
        // that used the same port id cannot be mistaken for ours.
        self.nextSeq = firstSeq ?? UInt32(truncatingIfNeeded: time(nil))
        self.receiveBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 4096, alignment: 8)
    }

    deinit { receiveBuffer.deallocate() }

    func allocateSeq() -> UInt32 {
        let s = nextSeq
        nextSeq &+= 1
        if nextSeq == 0 { nextSeq = 1 }
        return s
    }

    /// Sends one request and calls `onData` for every data message of the reply, until the
    /// kernel acks (plain request with NLM_F_ACK) or ends the dump (NLMSG_DONE).
    func request(
        context: String,
        build: (UnsafeMutableRawPointer, UInt32) -> UnsafeMutablePointer<nlmsghdr>,
        onData: (UnsafePointer<nlmsghdr>) throws -> Void
    ) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
        defer { buffer.deallocate() }
        let seq = allocateSeq()
        let nlh = build(buffer.baseAddress!, seq)
        let isDump = (bh_nlmsg_flags(nlh) & UInt16(NLM_F_DUMP)) == UInt16(NLM_F_DUMP)
        try transport.send([UnsafeRawBufferPointer(start: buffer.baseAddress, count: Int(bh_nlmsg_len(nlh)))])

        var finished = false
        var failure: Error?
        while !finished {
            guard let n = try transport.receive(into: receiveBuffer, timeoutMilliseconds: timeoutMilliseconds) else {
                throw NetfilterError.timeout(waitingFor: context)
            }
            try walk(UnsafeRawBufferPointer(start: receiveBuffer.baseAddress, count: n)) { kind, msg, ack in
                guard bh_nlmsg_seq(msg) == seq else { return } // stale reply to an earlier request
                switch kind {
                case .data:
                    if failure == nil {
                        do { try onData(msg) } catch { failure = error }
                    }
                case .ack(let ack):
                    if ack.errno != 0 {
                        if failure == nil { failure = Self.requestError(ack, context: context) }
                    }
                    finished = true
                case .done(let ack):
                    if ack.errno != 0, failure == nil { failure = Self.requestError(ack, context: context) }
                    finished = true
                }
            }
            // A plain GET without NLM_F_ACK answers with exactly one data message.
            if !isDump && (bh_nlmsg_flags(nlh) & UInt16(NLM_F_ACK)) == 0 && !finished {
                finished = true
            }
        }
        if let failure { throw failure }
    }

    static func requestError(_ ack: KernelAck, context: String) -> NetfilterError {
        if ack.errno == EPERM { return .permissionDenied(operation: context) }
        return .systemCall(call: "netlink request", errno: ack.errno,
                           context: context + (ack.message.map { " (\($0))" } ?? ""))
    }

    enum Message {
        case data
        case ack(KernelAck)
        case done(KernelAck)
    }

    /// Walks one datagram and calls `body` per message.
    func walk(_ datagram: UnsafeRawBufferPointer, _ body: (Message, UnsafePointer<nlmsghdr>, KernelAck?) throws -> Void) throws {
        final class Box {
            var body: (Message, UnsafePointer<nlmsghdr>, KernelAck?) throws -> Void
            var error: Error?
            var truncated = false
            init(_ b: @escaping (Message, UnsafePointer<nlmsghdr>, KernelAck?) throws -> Void) { body = b }
        }
        try withoutActuallyEscaping(body) { escapable in
            let box = Box(escapable)
            let count = withExtendedLifetime(box) { () -> Int32 in
                bh_walk_messages(datagram.baseAddress, datagram.count, { kind, nlh, ack, ctx in
                    let box = Unmanaged<Box>.fromOpaque(ctx!).takeUnretainedValue()
                    guard box.error == nil, let nlh else { return }
                    var decoded: KernelAck?
                    if let ack {
                        decoded = KernelAck(
                            seq: ack.pointee.seq,
                            errno: ack.pointee.error < 0 ? -ack.pointee.error : ack.pointee.error,
                            message: ack.pointee.message.map { String(cString: $0) },
                            attributeOffset: ack.pointee.offset == UInt32.max ? nil : ack.pointee.offset)
                    }
                    let message: Message
                    switch Int(kind) {
                    case Int(BH_MSG_ACK.rawValue): message = .ack(decoded!)
                    case Int(BH_MSG_DONE.rawValue): message = .done(decoded!)
                    case Int(BH_MSG_DATA.rawValue): message = .data
                    case Int(BH_MSG_TRUNCATED.rawValue): box.truncated = true; return
                    default: return // NLMSG_NOOP / NLMSG_OVERRUN: nothing for us
                    }
                    do { try box.body(message, nlh, decoded) } catch { box.error = error }
                }, Unmanaged.passUnretained(box).toOpaque())
            }
            if let error = box.error { throw error }
            if count < 0 || box.truncated {
                throw NetfilterError.malformedReply("a \(datagram.count)-byte datagram from the kernel does not parse as netlink messages")
            }
        }
    }

    /// Reads the ruleset generation id (NFT_MSG_GETGEN). Every committed nf_tables batch, by
    /// anyone, increments it.
    func readGeneration() throws -> UInt32 {
        var genid: UInt32?
        try request(context: "reading the nftables generation id (NFT_MSG_GETGEN)", build: { buf, seq in
            nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), UInt16(NFT_MSG_GETGEN.rawValue), UInt16(AF_UNSPEC), UInt16(NLM_F_ACK), seq)
        }, onData: { nlh in
            guard let gen = nftnl_gen_alloc() else { throw NetfilterError.malformedReply("out of memory") }
            defer { nftnl_gen_free(gen) }
            if nftnl_gen_nlmsg_parse(nlh, gen) < 0 {
                throw NetfilterError.malformedReply("NFT_MSG_NEWGEN reply does not parse")
            }
            genid = nftnl_gen_get_u32(gen, UInt16(NFTNL_GEN_ID))
        })
        guard let genid else { throw NetfilterError.malformedReply("no NFT_MSG_NEWGEN in the reply to NFT_MSG_GETGEN") }
        return genid
    }

    /// Sends `batch` as one datagram and collects one ack per operation message.
    ///
    /// Returns normally only when every message was acknowledged with success, with the new
    /// generation id when the kernel echoed it. Otherwise throws the first failing operation (by
    /// position in the batch), mapped back by sequence number.
    @discardableResult
    func commit(_ batch: EncodedBatch) throws -> UInt32? {
        let parts = batch.parts
        let total = parts.reduce(0) { $0 + $1.count }
        // The kernel copies the whole datagram into one skb and refuses anything larger than the
        // send buffer (EMSGSIZE); acks queue on our receive side until we read them, so it must
        // hold one per message. 1 KiB per ack is nft's sizing (an skb's truesize, not 36 bytes).
        transport.reserveBuffers(send: total + 65536, receive: max(batch.messageCount * 1024, 256 * 1024))
        try transport.send(parts)

        var pending = batch.expectedAcks
        var errors: [KernelAck] = []
        var batchError: KernelAck?
        var newGeneration: UInt32?
        while !pending.isEmpty && batchError == nil {
            guard let n = try transport.receive(into: receiveBuffer, timeoutMilliseconds: timeoutMilliseconds) else {
                throw NetfilterError.timeout(waitingFor: "acknowledgements of \(pending.count) of \(batch.expectedAcks.count) batch messages")
            }
            try walk(UnsafeRawBufferPointer(start: receiveBuffer.baseAddress, count: n)) { kind, nlh, ack in
                if case .data = kind, bh_nfnl_msg_type(bh_nlmsg_type(nlh)) == UInt16(NFT_MSG_NEWGEN.rawValue),
                   let gen = nftnl_gen_alloc() {
                    defer { nftnl_gen_free(gen) }
                    if nftnl_gen_nlmsg_parse(nlh, gen) >= 0 { newGeneration = nftnl_gen_get_u32(gen, UInt16(NFTNL_GEN_ID)) }
                    return
                }
                guard case .ack(let ack) = kind else { return }
                if ack.seq == batch.beginSeq {
                    // The whole batch was refused before or after its messages ran: no capability
                    // (EPERM), generation mismatch (ERESTART), out of memory, or a commit failure.
                    if ack.errno != 0 { batchError = ack }
                    return
                }
                if pending.remove(ack.seq) != nil, ack.errno != 0 {
                    errors.append(ack)
                }
            }
        }
        if let batchError {
            switch batchError.errno {
            case EPERM: throw NetfilterError.permissionDenied(operation: "committing an nftables transaction")
            case ERESTART: throw NetfilterError.generationChanged(expected: batch.generation ?? 0)
            default: throw NetfilterError.batchFailed(errno: batchError.errno, kernelMessage: batchError.message)
            }
        }
        if !errors.isEmpty {
            // The kernel keeps going after the first error and reports every later one too;
            // later ones are often consequences (a rule in a chain that failed to be created), so
            // the first by position is the cause.
            let first = errors.min { batch.position(of: $0.seq) < batch.position(of: $1.seq) }!
            let index = batch.operationIndex(for: first.seq) ?? -1
            // EPERM on one message (not on BATCH_BEGIN) is not a missing capability: the kernel
            // checks CAP_NET_ADMIN once per datagram. It means another socket owns the table.
            throw NetfilterError.operationFailed(
                index: index,
                operation: index >= 0 ? batch.operationDescription(index) : "unknown message seq \(first.seq)",
                errno: first.errno,
                kernelMessage: first.message ?? batch.attributeHint(seq: first.seq, offset: first.attributeOffset))
        }
        return newGeneration
    }
}
