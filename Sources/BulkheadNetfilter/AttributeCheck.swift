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

    static let verdict: Schema = [1: .u32, 2: .string, 3: .u32]  // NFTA_VERDICT_CODE, _CHAIN, _CHAIN_ID
    static let table: Schema = [1: .string, 2: .u32, 3: .u32, 4: .u64, 6: .binary(max: 65535), 7: .u32]
    static let chain: Schema = [
        1: .string, 2: .u64, 3: .string,
        4: .nested([1: .u32, 2: .u32, 3: .string, 4: .nested([1: .string])]),  // NFTA_CHAIN_HOOK
        5: .u32, 6: .u32, 7: .string, 8: .nested([1: .u64, 2: .u64]), 10: .u32, 11: .u32, 12: .binary(max: 65535),
    ]
    static let rule: Schema = [
        1: .string, 2: .string, 3: .u64, 4: .list(.expression), 5: .nested([1: .u32, 2: .u32]),
        6: .u64, 7: .binary(max: 65535), 9: .u32, 10: .u32, 11: .u32,
    ]
    static let set: Schema = [
        1: .string, 2: .string, 3: .u32, 4: .u32, 5: .u32, 6: .u32, 7: .u32, 8: .u32,
        9: .nested([1: .u32, 2: .list(.nested([1: .u32]))]),  // NFTA_SET_DESC
        10: .u32, 11: .u64, 12: .u32, 13: .binary(max: 65535), 15: .u32, 16: .u64,
    ]
    static let element: Schema = [
        1: .data, 2: .data, 3: .u32, 4: .u64, 5: .u64, 6: .binary(max: 65535),
        9: .string, 10: .data,
    ]
    static let elementList: Schema = [1: .string, 2: .string, 3: .list(.nested(element)), 4: .u32]

    /// Data of the expressions Bulkhead decodes, by name.
    static let expressions: [String: Schema] = [
        "payload": [1: .u32, 2: .u32, 3: .u32, 4: .u32, 5: .u32, 6: .u32, 7: .u32, 8: .u32],
        "meta": [1: .u32, 2: .u32, 3: .u32],
        "ct": [1: .u32, 2: .u32, 3: .u8, 4: .u32],
        "cmp": [1: .u32, 2: .u32, 3: .data],
        "bitwise": [1: .u32, 2: .u32, 3: .u32, 4: .data, 5: .data, 6: .u32, 7: .data],
        "lookup": [1: .string, 2: .u32, 3: .u32, 4: .u32, 5: .u32],
        "range": [1: .u32, 2: .u32, 3: .data, 4: .data],
        "counter": [1: .u64, 2: .u64],
        "log": [1: .u16, 2: .string, 3: .u32, 4: .u16, 5: .u32, 6: .u32],
        "limit": [1: .u64, 2: .u64, 3: .u32, 4: .u32, 5: .u32],
        "immediate": [1: .u32, 2: .data],
        "reject": [1: .u32, 2: .u8],
    ]

    /// The schema of a dump message by its nf_tables message number.
    static func schema(forMessage type: UInt16) -> Schema? {
        switch type {
        case 0: table      // NFT_MSG_NEWTABLE
        case 3: chain      // NFT_MSG_NEWCHAIN
        case 6: rule       // NFT_MSG_NEWRULE
        case 9: set        // NFT_MSG_NEWSET
        case 12: elementList  // NFT_MSG_NEWSETELEM
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
        return (rawType & 0x3fff, rawType, (offset + 4)..<(offset + length), next)
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
        switch (attrs[1], attrs[2]) {
        case (let value?, nil):
            guard !value.isEmpty, value.count <= 64, emit(1, Array(value), into: &out) else { return nil }
        case (nil, let verdict?):
            guard let v = attributes(verdict), let code = v[1], code.count == 4 else { return nil }
            let raw = code.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
            let verdictCode = Int32(bitPattern: UInt32(bigEndian: raw))
            var nest: [UInt8] = []
            _ = emit(1, Array(code), into: &nest)
            if chainVerdicts.contains(verdictCode) {
                guard let chain = v[2], let name = check(chain, .string) else { return nil }
                _ = emit(2, name, into: &nest)
            } else if !plainVerdicts.contains(verdictCode) {
                return nil
            }
            guard emit(0x8002, nest, into: &out) else { return nil }  // NLA_F_NESTED | NFTA_DATA_VERDICT
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
                guard let payload = check(p[a.payload], item), emit((a.rawType & ~0x3fff) | 1, payload, into: &out) else { return nil }
            }
            return out
        case .expression:
            // NFTA_EXPR_NAME first decides how NFTA_EXPR_DATA is checked.
            var name: [UInt8]?
            var offset = p.startIndex
            while offset < p.endIndex {
                guard let a = attribute(at: offset, in: p) else { return nil }
                offset = a.next
                if a.type == 1, name == nil { name = Array(p[a.payload]) }
            }
            guard let name, let named = check(name[...], .string) else { return nil }
            var out: [UInt8] = []
            _ = emit(1, named, into: &out)
            guard let schema = expressions[String(decoding: named.dropLast(), as: UTF8.self)] else {
                return out  // an expression Bulkhead does not decode: its name is enough
            }
            offset = p.startIndex
            while offset < p.endIndex {
                let a = attribute(at: offset, in: p)!
                offset = a.next
                guard a.type == 2 else { continue }  // NFTA_EXPR_DATA
                guard let data = rebuild(p[a.payload], schema), emit(a.rawType, data, into: &out) else { return nil }
                break  // the first NFTA_EXPR_DATA only
            }
            return out
        }
    }
}
