import CNetfilter

/// Checks the attributes of a recorded nf_tables message before libnftnl parses it.
///
/// libnftnl trusts the kernel: when an attribute it knows has the wrong length (a 3-byte u32, an
/// empty or unterminated string) its parse callbacks call `abi_breakage()`, which prints "nf_tables
/// kernel ABI is broken, contact your vendor" and EXITS THE PROCESS; an unterminated string is
/// read past its end by `strdup`. The kernel never sends such attributes (its own netlink policy
/// is the same as libnftnl's), so the live dump does not pay for this check; bytes that did not
/// come from the kernel (`NetlinkNetfilter.decodeDump`, the fuzz target) go through it first.
///
/// The check rebuilds the message: every attribute libnftnl 1.2.4 validates is checked against
/// the type the kernel's policy gives it (include/uapi/linux/netfilter/nf_tables.h); attributes it
/// does not know are dropped; expressions other than those Bulkhead decodes keep their name and
/// lose their data, so they still come back as foreign rules (`.unknown`).
enum AttributeCheck {
    indirect enum Kind: Sendable {
        case u8, u16, u32, u64
        /// NUL-terminated, at least one byte.
        case string
        case binary(max: Int)
        case nested([UInt16: Kind])
        /// NFTA_LIST_ELEM items, each nested with this schema.
        case list(Kind)
        /// One expression (NFTA_EXPR_NAME, NFTA_EXPR_DATA).
        case expression
        /// `nft_data`: exactly one of NFTA_DATA_VALUE and NFTA_DATA_VERDICT (libnftnl parses both
        /// into one union, and a jump's chain name then reads value bytes as a pointer).
        case data
    }

    typealias Schema = [UInt16: Kind]

    /// NLA_TYPE_MASK: the type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
    static let typeMask = ~UInt16(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

    static let verdict: Schema = [nla(NFTA_VERDICT_CODE): .u32, nla(NFTA_VERDICT_CHAIN): .string, nla(NFTA_VERDICT_CHAIN_ID): .u32]
    static let table: Schema = [
        nla(NFTA_TABLE_NAME): .string, nla(NFTA_TABLE_FLAGS): .u32, nla(NFTA_TABLE_USE): .u32, nla(NFTA_TABLE_HANDLE): .u64,
        nla(NFTA_TABLE_USERDATA): .binary(max: 65535), nla(NFTA_TABLE_OWNER): .u32,
    ]
    static let chain: Schema = [
        nla(NFTA_CHAIN_TABLE): .string, nla(NFTA_CHAIN_HANDLE): .u64, nla(NFTA_CHAIN_NAME): .string,
        nla(NFTA_CHAIN_HOOK): .nested([nla(NFTA_HOOK_HOOKNUM): .u32, nla(NFTA_HOOK_PRIORITY): .u32, nla(NFTA_HOOK_DEV): .string,
                                       nla(NFTA_HOOK_DEVS): .nested([nla(NFTA_DEVICE_NAME): .string])]),
        nla(NFTA_CHAIN_POLICY): .u32, nla(NFTA_CHAIN_USE): .u32, nla(NFTA_CHAIN_TYPE): .string,
        nla(NFTA_CHAIN_COUNTERS): .nested([nla(NFTA_COUNTER_BYTES): .u64, nla(NFTA_COUNTER_PACKETS): .u64]),
        nla(NFTA_CHAIN_FLAGS): .u32, nla(NFTA_CHAIN_ID): .u32, nla(NFTA_CHAIN_USERDATA): .binary(max: 65535),
    ]
    static let rule: Schema = [
        nla(NFTA_RULE_TABLE): .string, nla(NFTA_RULE_CHAIN): .string, nla(NFTA_RULE_HANDLE): .u64,
        nla(NFTA_RULE_EXPRESSIONS): .list(.expression),
        nla(NFTA_RULE_COMPAT): .nested([nla(NFTA_RULE_COMPAT_PROTO): .u32, nla(NFTA_RULE_COMPAT_FLAGS): .u32]),
        nla(NFTA_RULE_POSITION): .u64, nla(NFTA_RULE_USERDATA): .binary(max: 65535), nla(NFTA_RULE_ID): .u32,
        nla(NFTA_RULE_POSITION_ID): .u32, nla(NFTA_RULE_CHAIN_ID): .u32,
    ]
    static let set: Schema = [
        nla(NFTA_SET_TABLE): .string, nla(NFTA_SET_NAME): .string, nla(NFTA_SET_FLAGS): .u32, nla(NFTA_SET_KEY_TYPE): .u32,
        nla(NFTA_SET_KEY_LEN): .u32, nla(NFTA_SET_DATA_TYPE): .u32, nla(NFTA_SET_DATA_LEN): .u32, nla(NFTA_SET_POLICY): .u32,
        nla(NFTA_SET_DESC): .nested([nla(NFTA_SET_DESC_SIZE): .u32,
                                     nla(NFTA_SET_DESC_CONCAT): .list(.nested([nla(NFTA_SET_FIELD_LEN): .u32]))]),
        nla(NFTA_SET_ID): .u32, nla(NFTA_SET_TIMEOUT): .u64, nla(NFTA_SET_GC_INTERVAL): .u32,
        nla(NFTA_SET_USERDATA): .binary(max: 65535), nla(NFTA_SET_OBJ_TYPE): .u32, nla(NFTA_SET_HANDLE): .u64,
    ]
    static let element: Schema = [
        nla(NFTA_SET_ELEM_KEY): .data, nla(NFTA_SET_ELEM_DATA): .data, nla(NFTA_SET_ELEM_FLAGS): .u32,
        nla(NFTA_SET_ELEM_TIMEOUT): .u64, nla(NFTA_SET_ELEM_EXPIRATION): .u64, nla(NFTA_SET_ELEM_USERDATA): .binary(max: 65535),
        nla(NFTA_SET_ELEM_OBJREF): .string, nla(NFTA_SET_ELEM_KEY_END): .data,
    ]
    static let elementList: Schema = [
        nla(NFTA_SET_ELEM_LIST_TABLE): .string, nla(NFTA_SET_ELEM_LIST_SET): .string,
        nla(NFTA_SET_ELEM_LIST_ELEMENTS): .list(.nested(element)), nla(NFTA_SET_ELEM_LIST_SET_ID): .u32,
    ]

    /// Data of the expressions Bulkhead decodes, by name.
    static let expressions: [String: Schema] = [
        "payload": [nla(NFTA_PAYLOAD_DREG): .u32, nla(NFTA_PAYLOAD_BASE): .u32, nla(NFTA_PAYLOAD_OFFSET): .u32, nla(NFTA_PAYLOAD_LEN): .u32,
                    nla(NFTA_PAYLOAD_SREG): .u32, nla(NFTA_PAYLOAD_CSUM_TYPE): .u32, nla(NFTA_PAYLOAD_CSUM_OFFSET): .u32,
                    nla(NFTA_PAYLOAD_CSUM_FLAGS): .u32],
        "meta": [nla(NFTA_META_DREG): .u32, nla(NFTA_META_KEY): .u32, nla(NFTA_META_SREG): .u32],
        "ct": [nla(NFTA_CT_DREG): .u32, nla(NFTA_CT_KEY): .u32, nla(NFTA_CT_DIRECTION): .u8, nla(NFTA_CT_SREG): .u32],
        "cmp": [nla(NFTA_CMP_SREG): .u32, nla(NFTA_CMP_OP): .u32, nla(NFTA_CMP_DATA): .data],
        "bitwise": [nla(NFTA_BITWISE_SREG): .u32, nla(NFTA_BITWISE_DREG): .u32, nla(NFTA_BITWISE_LEN): .u32,
                    nla(NFTA_BITWISE_MASK): .data, nla(NFTA_BITWISE_XOR): .data, nla(NFTA_BITWISE_OP): .u32, nla(NFTA_BITWISE_DATA): .data],
        "lookup": [nla(NFTA_LOOKUP_SET): .string, nla(NFTA_LOOKUP_SREG): .u32, nla(NFTA_LOOKUP_DREG): .u32,
                   nla(NFTA_LOOKUP_SET_ID): .u32, nla(NFTA_LOOKUP_FLAGS): .u32],
        "range": [nla(NFTA_RANGE_SREG): .u32, nla(NFTA_RANGE_OP): .u32, nla(NFTA_RANGE_FROM_DATA): .data, nla(NFTA_RANGE_TO_DATA): .data],
        "counter": [nla(NFTA_COUNTER_BYTES): .u64, nla(NFTA_COUNTER_PACKETS): .u64],
        "log": [nla(NFTA_LOG_GROUP): .u16, nla(NFTA_LOG_PREFIX): .string, nla(NFTA_LOG_SNAPLEN): .u32,
                nla(NFTA_LOG_QTHRESHOLD): .u16, nla(NFTA_LOG_LEVEL): .u32, nla(NFTA_LOG_FLAGS): .u32],
        "limit": [nla(NFTA_LIMIT_RATE): .u64, nla(NFTA_LIMIT_UNIT): .u64, nla(NFTA_LIMIT_BURST): .u32,
                  nla(NFTA_LIMIT_TYPE): .u32, nla(NFTA_LIMIT_FLAGS): .u32],
        "immediate": [nla(NFTA_IMMEDIATE_DREG): .u32, nla(NFTA_IMMEDIATE_DATA): .data],
        "reject": [nla(NFTA_REJECT_TYPE): .u32, nla(NFTA_REJECT_ICMP_CODE): .u8],
    ]

    /// The schema of a dump message by its nf_tables message number.
    static func schema(forMessage type: UInt16) -> Schema? {
        switch UInt32(type) {
        case NFT_MSG_NEWTABLE.rawValue: table
        case NFT_MSG_NEWCHAIN.rawValue: chain
        case NFT_MSG_NEWRULE.rawValue: rule
        case NFT_MSG_NEWSET.rawValue: set
        case NFT_MSG_NEWSETELEM.rawValue: elementList
        default: nil
        }
    }

    /// The message with checked attributes, or nil when one of them is malformed.
    /// `message` is a whole netlink message of at least 20 bytes (header and nfgenmsg).
    static func checked(_ message: [UInt8], schema: Schema) -> [UInt8]? {
        guard message.count >= 20, let attributes = rebuild(message[20...], schema) else { return nil }
        var out = Array(message[0..<20]) + attributes
        let length = UInt32(out.count)
        out.replaceSubrange(0..<4, with: withUnsafeBytes(of: length.littleEndian) { Array($0) })
        return out
    }

    /// One attribute's header and payload bounds, or nil when its length is impossible.
    private static func attribute(at offset: Int, in bytes: ArraySlice<UInt8>) -> (type: UInt16, rawType: UInt16, payload: Range<Int>, next: Int)? {
        guard bytes.endIndex - offset >= 4 else { return nil }
        let length = Int(UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8)
        let rawType = UInt16(bytes[offset + 2]) | UInt16(bytes[offset + 3]) << 8
        guard length >= 4, length <= bytes.endIndex - offset else { return nil }
        let next = min(offset + (length + 3) & ~3, bytes.endIndex)
        return (rawType & typeMask, rawType, (offset + 4)..<(offset + length), next)
    }

    private static func emit(_ rawType: UInt16, _ payload: [UInt8], into out: inout [UInt8]) -> Bool {
        guard payload.count + 4 <= Int(UInt16.max) else { return false }
        out += withUnsafeBytes(of: UInt16(payload.count + 4).littleEndian) { Array($0) }
        out += withUnsafeBytes(of: rawType.littleEndian) { Array($0) }
        out += payload
        out += [UInt8](repeating: 0, count: (4 - payload.count % 4) % 4)
        return true
    }

    /// Rebuilds an attribute stream: known attributes checked (nested ones rebuilt), unknown
    /// ones dropped. Nil when a known attribute is malformed or the stream does not parse.
    static func rebuild(_ bytes: ArraySlice<UInt8>, _ schema: Schema) -> [UInt8]? {
        var out: [UInt8] = []
        var seen = Set<UInt16>()
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            guard let a = attribute(at: offset, in: bytes) else { return nil }
            offset = a.next
            // libnftnl keeps the last of two attributes of one type, and parses both on the way:
            // the kernel never repeats one, so keep the first and drop the rest.
            guard let kind = schema[a.type], seen.insert(a.type).inserted else { continue }
            guard let payload = check(bytes[a.payload], kind), emit(a.rawType, payload, into: &out) else { return nil }
        }
        return out
    }

    /// The attributes of a nest by type (first of each), or nil when the stream does not parse.
    private static func attributes(_ bytes: ArraySlice<UInt8>) -> [UInt16: ArraySlice<UInt8>]? {
        var found: [UInt16: ArraySlice<UInt8>] = [:]
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            guard let a = attribute(at: offset, in: bytes) else { return nil }
            offset = a.next
            if found[a.type] == nil { found[a.type] = bytes[a.payload] }
        }
        return found
    }

    /// NF_ACCEPT, NF_DROP, NF_QUEUE, NFT_CONTINUE, NFT_BREAK, NFT_RETURN: no chain.
    static let plainVerdicts: Set<Int32> = [1, 0, 3, -1, -2, -5]
    /// NFT_JUMP, NFT_GOTO: a chain name is required.
    static let chainVerdicts: Set<Int32> = [-3, -4]

    private static func checkData(_ p: ArraySlice<UInt8>) -> [UInt8]? {
        guard let attrs = attributes(p) else { return nil }
        var out: [UInt8] = []
        switch (attrs[nla(NFTA_DATA_VALUE)], attrs[nla(NFTA_DATA_VERDICT)]) {
        case (let value?, nil):
            // NFT_DATA_VALUE_MAXLEN: libnftnl's register image is 64 bytes.
            guard !value.isEmpty, value.count <= 64, emit(nla(NFTA_DATA_VALUE), Array(value), into: &out) else { return nil }
        case (nil, let verdict?):
            guard let v = attributes(verdict), let code = v[nla(NFTA_VERDICT_CODE)], code.count == 4 else { return nil }
            let raw = code.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            let verdictCode = Int32(bitPattern: UInt32(bigEndian: raw))
            var nest: [UInt8] = []
            _ = emit(nla(NFTA_VERDICT_CODE), Array(code), into: &nest)
            if chainVerdicts.contains(verdictCode) {
                guard let chain = v[nla(NFTA_VERDICT_CHAIN)], let name = check(chain, .string) else { return nil }
                _ = emit(nla(NFTA_VERDICT_CHAIN), name, into: &nest)
            } else if !plainVerdicts.contains(verdictCode) {
                return nil
            }
            guard emit(UInt16(NLA_F_NESTED) | nla(NFTA_DATA_VERDICT), nest, into: &out) else { return nil }
        default:
            return nil
        }
        return out
    }

    private static func check(_ p: ArraySlice<UInt8>, _ kind: Kind) -> [UInt8]? {
        switch kind {
        case .u8: return p.count == 1 ? Array(p) : nil
        case .u16: return p.count == 2 ? Array(p) : nil
        case .u32: return p.count == 4 ? Array(p) : nil
        case .u64: return p.count == 8 ? Array(p) : nil
        case .string: return !p.isEmpty && p.last == 0 ? Array(p) : nil
        case .binary(let max): return p.count <= max ? Array(p) : nil
        case .nested(let schema): return rebuild(p, schema)
        case .data: return checkData(p)
        case .list(let item):
            var out: [UInt8] = []
            var offset = p.startIndex
            while offset < p.endIndex {
                guard let a = attribute(at: offset, in: p) else { return nil }
                offset = a.next
                // Items are NFTA_LIST_ELEM in a dump; a batch message built by libnftnl numbers
                // set elements 1, 2, 3 … instead (the kernel ignores the type), which libnftnl's
                // own parser then refuses. Read any item as NFTA_LIST_ELEM.
                guard let payload = check(p[a.payload], item), emit((a.rawType & ~typeMask) | nla(NFTA_LIST_ELEM), payload, into: &out) else { return nil }
            }
            return out
        case .expression:
            // NFTA_EXPR_NAME first decides how NFTA_EXPR_DATA is checked.
            var name: [UInt8]?
            var offset = p.startIndex
            while offset < p.endIndex {
                guard let a = attribute(at: offset, in: p) else { return nil }
                offset = a.next
                if a.type == nla(NFTA_EXPR_NAME), name == nil { name = Array(p[a.payload]) }
            }
            guard let name, let named = check(name[...], .string) else { return nil }
            var out: [UInt8] = []
            _ = emit(nla(NFTA_EXPR_NAME), named, into: &out)
            guard let schema = expressions[String(decoding: named.dropLast(), as: UTF8.self)] else {
                return out  // an expression Bulkhead does not decode: its name is enough
            }
            offset = p.startIndex
            while offset < p.endIndex {
                let a = attribute(at: offset, in: p)!
                offset = a.next
                guard a.type == nla(NFTA_EXPR_DATA) else { continue }
                guard let data = rebuild(p[a.payload], schema), emit(a.rawType, data, into: &out) else { return nil }
                break  // the first NFTA_EXPR_DATA only
            }
            return out
        }
    }
}
