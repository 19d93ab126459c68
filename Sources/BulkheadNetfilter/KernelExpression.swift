import CNetfilter
import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

/// One nf_tables expression as the kernel sees it (registers, offsets, raw bytes): the level
/// between the Bulkhead model's readable matches and libnftnl. A rule of the model linearizes to
/// a list of these (see `Linearize.swift`) and a dumped rule is read back through them
/// (`Delinearize.swift`).
///
/// Registers use the kernel's dump numbering: 0 is the verdict register, 1–4 the 16-byte
/// registers, 8–23 the 32-bit ones (NFT_REG32_00…). nft loads a concatenation's first field
/// into NFT_REG_1 and the following ones into NFT_REG32_01, NFT_REG32_02, …, which the
/// kernel reports back in exactly this form.
enum KernelExpression: Equatable, Sendable {
    case payload(base: UInt32, offset: UInt32, length: UInt32, dreg: UInt32)
    case meta(key: UInt32, dreg: UInt32)
    /// `meta set KEY with reg SREG` (only `meta priority set`).
    case metaSet(key: UInt32, sreg: UInt32)
    case ct(key: UInt32, dreg: UInt32)
    case cmp(sreg: UInt32, op: UInt32, data: [UInt8])
    case bitwise(sreg: UInt32, dreg: UInt32, length: UInt32, mask: [UInt8], xor: [UInt8])
    /// `setID` refers to an anonymous set created earlier in the same batch (NFTA_LOOKUP_SET_ID);
    /// its name is then the kernel template `__set%d`.
    case lookup(set: String, setID: UInt32?, sreg: UInt32, dreg: UInt32?, flags: UInt32)
    case range(sreg: UInt32, op: UInt32, from: [UInt8], to: [UInt8])
    case counter(packets: UInt64, bytes: UInt64)
    /// `level` nil is the kernel default (warn, 4): the kernel reports 4 back for a syslog log
    /// without a level, and the decoder maps that back to nil.
    case log(prefix: String?, group: UInt16?, level: UInt32?)
    case limit(rate: UInt64, unit: UInt64, burst: UInt32, type: UInt32, flags: UInt32)
    case verdict(code: Int32, chain: String?)
    case reject(type: UInt32, code: UInt8)
    /// An expression Bulkhead does not emit (someone else edited our table): kept by name with
    /// its libnftnl text so it compares unequal to anything we generate and can be shown.
    case unknown(name: String, text: String)

    // Register numbers (enum nft_registers).
    static let verdictRegister: UInt32 = 0
    static let reg1: UInt32 = 1
    /// The register holding field `i` of a concatenation (0: NFT_REG_1, i>0: NFT_REG32_00 + i).
    static func concatRegister(_ i: Int) -> UInt32 { i == 0 ? reg1 : UInt32(8 + i) }
}

/// A libnftnl rule object (`struct nftnl_rule`), freed with the wrapper.
final class NftnlRule {
    let handle: OpaquePointer
    init() throws {
        guard let r = nftnl_rule_alloc() else { throw NetfilterError.systemCall(call: "nftnl_rule_alloc", errno: ENOMEM, context: "encoding a rule") }
        handle = r
    }
    init(adopting r: OpaquePointer) { handle = r }
    deinit { nftnl_rule_free(handle) }

    /// Appends `expr`; the rule takes ownership of the libnftnl expression.
    func append(_ expr: KernelExpression) throws {
        let e = try expr.makeNftnl()
        nftnl_rule_add_expr(handle, e)
    }

    /// Decodes every expression of the rule, in order.
    func expressions() -> [KernelExpression] {
        final class Acc { var list: [KernelExpression] = [] }
        let acc = Acc()
        _ = nftnl_expr_foreach(handle, { e, data in
            let acc = Unmanaged<Acc>.fromOpaque(data!).takeUnretainedValue()
            acc.list.append(KernelExpression(decoding: e!))
            return 0
        }, Unmanaged.passUnretained(acc).toOpaque())
        return acc.list
    }
}

private func attr(_ a: Int) -> UInt16 { UInt16(a) }

extension KernelExpression {
    /// Builds the libnftnl expression. The caller owns the result until it is added to a rule.
    func makeNftnl() throws -> OpaquePointer {
        func alloc(_ name: String) throws -> OpaquePointer {
            guard let e = nftnl_expr_alloc(name) else {
                throw NetfilterError.unsupported("libnftnl does not know expression \(name)")
            }
            return e
        }
        func setBytes(_ e: OpaquePointer, _ a: Int, _ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { nftnl_expr_set(e, attr(a), $0.baseAddress, UInt32($0.count)) }
        }
        switch self {
        case .payload(let base, let offset, let length, let dreg):
            let e = try alloc("payload")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_PAYLOAD_DREG), dreg)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_PAYLOAD_BASE), base)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_PAYLOAD_OFFSET), offset)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_PAYLOAD_LEN), length)
            return e
        case .meta(let key, let dreg):
            let e = try alloc("meta")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_META_KEY), key)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_META_DREG), dreg)
            return e
        case .metaSet(let key, let sreg):
            let e = try alloc("meta")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_META_KEY), key)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_META_SREG), sreg)
            return e
        case .ct(let key, let dreg):
            let e = try alloc("ct")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_CT_KEY), key)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_CT_DREG), dreg)
            return e
        case .cmp(let sreg, let op, let data):
            let e = try alloc("cmp")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_CMP_SREG), sreg)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_CMP_OP), op)
            setBytes(e, NFTNL_EXPR_CMP_DATA, data)
            return e
        case .bitwise(let sreg, let dreg, let length, let mask, let xor):
            let e = try alloc("bitwise")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_BITWISE_SREG), sreg)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_BITWISE_DREG), dreg)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_BITWISE_LEN), length)
            setBytes(e, NFTNL_EXPR_BITWISE_MASK, mask)
            setBytes(e, NFTNL_EXPR_BITWISE_XOR, xor)
            return e
        case .lookup(let set, let setID, let sreg, let dreg, let flags):
            let e = try alloc("lookup")
            nftnl_expr_set_str(e, attr(NFTNL_EXPR_LOOKUP_SET), set)
            if let setID { nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LOOKUP_SET_ID), setID) }
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LOOKUP_SREG), sreg)
            if let dreg { nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LOOKUP_DREG), dreg) }
            if flags != 0 { nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LOOKUP_FLAGS), flags) }
            return e
        case .range(let sreg, let op, let from, let to):
            let e = try alloc("range")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_RANGE_SREG), sreg)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_RANGE_OP), op)
            setBytes(e, NFTNL_EXPR_RANGE_FROM_DATA, from)
            setBytes(e, NFTNL_EXPR_RANGE_TO_DATA, to)
            return e
        case .counter(let packets, let bytes):
            let e = try alloc("counter")
            nftnl_expr_set_u64(e, attr(NFTNL_EXPR_CTR_PACKETS), packets)
            nftnl_expr_set_u64(e, attr(NFTNL_EXPR_CTR_BYTES), bytes)
            return e
        case .log(let prefix, let group, let level):
            let e = try alloc("log")
            if let prefix { nftnl_expr_set_str(e, attr(NFTNL_EXPR_LOG_PREFIX), prefix) }
            if let level { nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LOG_LEVEL), level) }
            // No snaplen / queue threshold: when the attribute is present the kernel reports it
            // back and nft lists `snaplen 0` (checked against nft 1.0.6).
            if let group { nftnl_expr_set_u16(e, attr(NFTNL_EXPR_LOG_GROUP), group) }
            return e
        case .limit(let rate, let unit, let burst, let type, let flags):
            let e = try alloc("limit")
            nftnl_expr_set_u64(e, attr(NFTNL_EXPR_LIMIT_RATE), rate)
            nftnl_expr_set_u64(e, attr(NFTNL_EXPR_LIMIT_UNIT), unit)
            // nft leaves NFTA_LIMIT_BURST out when it is 0 (a byte limit's default), and the
            // kernel reads a missing burst as 0: send what nft sends (GoldenBytesTests).
            if burst != 0 { nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LIMIT_BURST), burst) }
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LIMIT_TYPE), type)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_LIMIT_FLAGS), flags)
            return e
        case .verdict(let code, let chain):
            let e = try alloc("immediate")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_IMM_DREG), KernelExpression.verdictRegister)
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_IMM_VERDICT), UInt32(bitPattern: code))
            if let chain { nftnl_expr_set_str(e, attr(NFTNL_EXPR_IMM_CHAIN), chain) }
            return e
        case .reject(let type, let code):
            let e = try alloc("reject")
            nftnl_expr_set_u32(e, attr(NFTNL_EXPR_REJECT_TYPE), type)
            nftnl_expr_set_u8(e, attr(NFTNL_EXPR_REJECT_CODE), code)
            return e
        case .unknown(let name, _):
            throw NetfilterError.unsupported("expression \(name) read from the kernel cannot be written back")
        }
    }

    /// Reads a libnftnl expression; anything unexpected becomes `.unknown`, never a crash.
    init(decoding e: OpaquePointer) {
        let name = nftnl_expr_get_str(e, attr(NFTNL_EXPR_NAME)).map { String(cString: $0) } ?? "?"
        func has(_ a: Int) -> Bool { nftnl_expr_is_set(e, attr(a)) }
        func u32(_ a: Int) -> UInt32 { nftnl_expr_get_u32(e, attr(a)) }
        func bytes(_ a: Int) -> [UInt8] {
            var len: UInt32 = 0
            guard has(a), let p = nftnl_expr_get(e, attr(a), &len) else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: Int(len)))
        }
        func str(_ a: Int) -> String? {
            guard has(a), let p = nftnl_expr_get_str(e, attr(a)) else { return nil }
            return String(cString: p)
        }
        func unknown() -> KernelExpression {
            var buf = [UInt8](repeating: 0, count: 512)
            _ = buf.withUnsafeMutableBytes {
                nftnl_expr_snprintf($0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count, e, UInt32(NFTNL_OUTPUT_DEFAULT.rawValue), 0)
            }
            return .unknown(name: name, text: String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self))
        }
        switch name {
        case "payload" where !has(NFTNL_EXPR_PAYLOAD_SREG):
            self = .payload(base: u32(NFTNL_EXPR_PAYLOAD_BASE), offset: u32(NFTNL_EXPR_PAYLOAD_OFFSET),
                            length: u32(NFTNL_EXPR_PAYLOAD_LEN), dreg: u32(NFTNL_EXPR_PAYLOAD_DREG))
        case "meta" where has(NFTNL_EXPR_META_DREG):
            self = .meta(key: u32(NFTNL_EXPR_META_KEY), dreg: u32(NFTNL_EXPR_META_DREG))
        case "meta" where has(NFTNL_EXPR_META_SREG):
            self = .metaSet(key: u32(NFTNL_EXPR_META_KEY), sreg: u32(NFTNL_EXPR_META_SREG))
        case "ct" where has(NFTNL_EXPR_CT_DREG) && !has(NFTNL_EXPR_CT_DIR):
            self = .ct(key: u32(NFTNL_EXPR_CT_KEY), dreg: u32(NFTNL_EXPR_CT_DREG))
        case "cmp":
            self = .cmp(sreg: u32(NFTNL_EXPR_CMP_SREG), op: u32(NFTNL_EXPR_CMP_OP), data: bytes(NFTNL_EXPR_CMP_DATA))
        case "bitwise" where (!has(NFTNL_EXPR_BITWISE_OP) || u32(NFTNL_EXPR_BITWISE_OP) == 0):
            // op 0 is NFT_BITWISE_BOOL (mask and xor); shifts are not ours.
            self = .bitwise(sreg: u32(NFTNL_EXPR_BITWISE_SREG), dreg: u32(NFTNL_EXPR_BITWISE_DREG),
                            length: u32(NFTNL_EXPR_BITWISE_LEN), mask: bytes(NFTNL_EXPR_BITWISE_MASK),
                            xor: bytes(NFTNL_EXPR_BITWISE_XOR))
        case "lookup":
            self = .lookup(set: str(NFTNL_EXPR_LOOKUP_SET) ?? "", setID: nil, sreg: u32(NFTNL_EXPR_LOOKUP_SREG),
                           dreg: has(NFTNL_EXPR_LOOKUP_DREG) ? u32(NFTNL_EXPR_LOOKUP_DREG) : nil,
                           flags: has(NFTNL_EXPR_LOOKUP_FLAGS) ? u32(NFTNL_EXPR_LOOKUP_FLAGS) : 0)
        case "range":
            self = .range(sreg: u32(NFTNL_EXPR_RANGE_SREG), op: u32(NFTNL_EXPR_RANGE_OP),
                          from: bytes(NFTNL_EXPR_RANGE_FROM_DATA), to: bytes(NFTNL_EXPR_RANGE_TO_DATA))
        case "counter":
            // The values are state, not configuration: comparisons (`Rule.sameContent`, the diff,
            // `Delinearize.normalized`) ignore them, and metrics read them from here.
            self = .counter(packets: nftnl_expr_get_u64(e, attr(NFTNL_EXPR_CTR_PACKETS)),
                            bytes: nftnl_expr_get_u64(e, attr(NFTNL_EXPR_CTR_BYTES)))
        case "log" where !has(NFTNL_EXPR_LOG_FLAGS) || u32(NFTNL_EXPR_LOG_FLAGS) == 0:
            let group = has(NFTNL_EXPR_LOG_GROUP) ? nftnl_expr_get_u16(e, attr(NFTNL_EXPR_LOG_GROUP)) : nil
            // The kernel reports NFTA_LOG_LEVEL for every syslog-type log, 4 (warn) by default.
            var level = has(NFTNL_EXPR_LOG_LEVEL) ? u32(NFTNL_EXPR_LOG_LEVEL) : nil
            if group != nil || level == 4 { level = nil }
            self = .log(prefix: str(NFTNL_EXPR_LOG_PREFIX), group: group, level: level)
        case "limit":
            self = .limit(rate: nftnl_expr_get_u64(e, attr(NFTNL_EXPR_LIMIT_RATE)),
                          unit: nftnl_expr_get_u64(e, attr(NFTNL_EXPR_LIMIT_UNIT)),
                          burst: u32(NFTNL_EXPR_LIMIT_BURST), type: u32(NFTNL_EXPR_LIMIT_TYPE),
                          flags: u32(NFTNL_EXPR_LIMIT_FLAGS))
        case "immediate" where has(NFTNL_EXPR_IMM_VERDICT) && u32(NFTNL_EXPR_IMM_DREG) == 0:
            self = .verdict(code: Int32(bitPattern: u32(NFTNL_EXPR_IMM_VERDICT)), chain: str(NFTNL_EXPR_IMM_CHAIN))
        case "reject":
            self = .reject(type: u32(NFTNL_EXPR_REJECT_TYPE), code: nftnl_expr_get_u8(e, attr(NFTNL_EXPR_REJECT_CODE)))
        default:
            self = unknown()
        }
    }
}
