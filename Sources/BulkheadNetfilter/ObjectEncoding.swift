import BulkheadRuleset
import CNetfilter
import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

// libnftnl attribute numbers come from named C enums (imported as structs) and from anonymous
// ones (imported as Int); both end up as the uint16_t libnftnl takes.
@inline(__always) func nla<T: RawRepresentable>(_ a: T) -> UInt16 where T.RawValue: BinaryInteger { UInt16(a.rawValue) }
@inline(__always) func nla(_ a: Int) -> UInt16 { UInt16(a) }
@inline(__always) func msgType<T: RawRepresentable>(_ m: T) -> UInt16 where T.RawValue: BinaryInteger { UInt16(m.rawValue) }

/// libnftnl object wrappers: each owns its C object and frees it in deinit.
final class NftnlTable {
    let handle: OpaquePointer
    init() throws {
        guard let t = nftnl_table_alloc() else { throw NetfilterError.systemCall(call: "nftnl_table_alloc", errno: ENOMEM, context: "encoding a table") }
        handle = t
    }
    init(adopting t: OpaquePointer) { handle = t }
    deinit { nftnl_table_free(handle) }
}

final class NftnlChain {
    let handle: OpaquePointer
    init() throws {
        guard let c = nftnl_chain_alloc() else { throw NetfilterError.systemCall(call: "nftnl_chain_alloc", errno: ENOMEM, context: "encoding a chain") }
        handle = c
    }
    init(adopting c: OpaquePointer) { handle = c }
    deinit { nftnl_chain_free(handle) }
}

final class NftnlSet {
    let handle: OpaquePointer
    init() throws {
        guard let s = nftnl_set_alloc() else { throw NetfilterError.systemCall(call: "nftnl_set_alloc", errno: ENOMEM, context: "encoding a set") }
        handle = s
    }
    init(adopting s: OpaquePointer) { handle = s }
    deinit { nftnl_set_free(handle) }
}

/// Turns model objects into nf_tables messages in an `EncodedBatch`.
struct MessageEncoder {
    let table: TableID
    var family: UInt16 { UInt16(table.family.number) }

    // MARK: table

    func newTable(_ t: Table, flags: UInt32, exclusive: Bool, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlTable()
        nftnl_table_set_str(obj.handle, nla(NFTNL_TABLE_NAME), table.name)
        nftnl_table_set_u32(obj.handle, nla(NFTNL_TABLE_FLAGS), flags)
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_NEWTABLE), family, UInt16(NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0)), seq)!
            nftnl_table_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    func deleteTable(into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlTable()
        nftnl_table_set_str(obj.handle, nla(NFTNL_TABLE_NAME), table.name)
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_DELTABLE), family, 0, seq)!
            nftnl_table_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    /// `flush table` / `flush chain`: NFT_MSG_DELRULE naming only the table (and chain) deletes
    /// every rule in it.
    func flushRules(chain: String?, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlRule()
        nftnl_rule_set_str(obj.handle, nla(NFTNL_RULE_TABLE), table.name)
        if let chain { nftnl_rule_set_str(obj.handle, nla(NFTNL_RULE_CHAIN), chain) }
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_DELRULE), family, 0, seq)!
            nftnl_rule_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    // MARK: chain

    func newChain(_ c: Chain, exclusive: Bool, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlChain()
        nftnl_chain_set_str(obj.handle, nla(NFTNL_CHAIN_TABLE), table.name)
        nftnl_chain_set_str(obj.handle, nla(NFTNL_CHAIN_NAME), c.name)
        if let b = c.base {
            nftnl_chain_set_u32(obj.handle, nla(NFTNL_CHAIN_HOOKNUM), b.hook.number)
            nftnl_chain_set_s32(obj.handle, nla(NFTNL_CHAIN_PRIO), b.priority)
            nftnl_chain_set_str(obj.handle, nla(NFTNL_CHAIN_TYPE), b.type.rawValue)
            nftnl_chain_set_u32(obj.handle, nla(NFTNL_CHAIN_POLICY), b.policy.code)
        }
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_NEWCHAIN), family, UInt16(NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0)), seq)!
            nftnl_chain_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    func deleteChain(_ name: String, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlChain()
        nftnl_chain_set_str(obj.handle, nla(NFTNL_CHAIN_TABLE), table.name)
        nftnl_chain_set_str(obj.handle, nla(NFTNL_CHAIN_NAME), name)
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_DELCHAIN), family, 0, seq)!
            nftnl_chain_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    // MARK: set

    /// NFTA_SET_USERDATA as nft 1.0.6 writes it for a `type …` set: the key byte order
    /// (NFTNL_UDATA_SET_KEYBYTEORDER: 1 host, 2 big endian, 0 for a concatenation), and for maps
    /// the data byte order and NFTNL_UDATA_SET_DATA_INTERVAL 0. nft reads these back to print
    /// keys and data in the right byte order.
    static func setUserdata(key: KeyType, data: MapData?) -> [UInt8] {
        func u32(_ type: UInt8, _ v: UInt32) -> [UInt8] { [type, 4] + withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        func order(_ t: DataType) -> UInt32 { t.isBigEndian ? 2 : 1 }
        var out = u32(0, key.isConcatenation ? 0 : order(key.fields[0]))
        if let data {
            switch data {
            case .verdict: out += u32(1, 0)
            case .value(let t): out += u32(1, order(t))
            }
            out += u32(6, 0)
        }
        return out
    }

    func newSet(name: String, key: KeyType, kernelFlags: UInt32, data: MapData?, timeoutMilliseconds: UInt64?,
                setID: UInt32, descSize: UInt32?, exclusive: Bool, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlSet()
        let s = obj.handle
        nftnl_set_set_str(s, nla(NFTNL_SET_TABLE), table.name)
        nftnl_set_set_str(s, nla(NFTNL_SET_NAME), name)
        nftnl_set_set_u32(s, nla(NFTNL_SET_FLAGS), kernelFlags)
        nftnl_set_set_u32(s, nla(NFTNL_SET_KEY_TYPE), key.typeID)
        nftnl_set_set_u32(s, nla(NFTNL_SET_KEY_LEN), UInt32(key.byteLength))
        if let data {
            nftnl_set_set_u32(s, nla(NFTNL_SET_DATA_TYPE), data.typeID)
            switch data {
            // The kernel sizes verdict data itself (sizeof(struct nft_verdict)); nft sends 0.
            case .verdict: nftnl_set_set_u32(s, nla(NFTNL_SET_DATA_LEN), 0)
            case .value(let t): nftnl_set_set_u32(s, nla(NFTNL_SET_DATA_LEN), UInt32(t.byteLength))
            }
        }
        if let timeoutMilliseconds { nftnl_set_set_u64(s, nla(NFTNL_SET_TIMEOUT), timeoutMilliseconds) }
        nftnl_set_set_u32(s, nla(NFTNL_SET_ID), setID)
        if let descSize { nftnl_set_set_u32(s, nla(NFTNL_SET_DESC_SIZE), descSize) }
        if key.isConcatenation && (kernelFlags & 0x4) != 0 {
            // The pipapo backend that holds concatenated ranges needs each field's length.
            let lens = key.fieldLengths.map { UInt8($0) }
            _ = lens.withUnsafeBytes { nftnl_set_set_data(s, nla(NFTNL_SET_DESC_CONCAT), $0.baseAddress, UInt32($0.count)) }
        }
        let ud = Self.setUserdata(key: key, data: data)
        _ = ud.withUnsafeBytes { nftnl_set_set_data(s, nla(NFTNL_SET_USERDATA), $0.baseAddress, UInt32($0.count)) }
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_NEWSET), family, UInt16(NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0)), seq)!
            nftnl_set_nlmsg_build_payload(nlh, s)
            return nlh
        }
    }

    func deleteSet(_ name: String, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlSet()
        nftnl_set_set_str(obj.handle, nla(NFTNL_SET_TABLE), table.name)
        nftnl_set_set_str(obj.handle, nla(NFTNL_SET_NAME), name)
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_DELSET), family, 0, seq)!
            nftnl_set_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    // MARK: elements

    /// Element messages for `elements` of `set`. The element list is a netlink nest whose length
    /// field is 16 bits, so elements are split over several NEWSETELEM/DELSETELEM messages of at
    /// most ~60 KiB each, all in the same batch.
    func elements(_ elements: [SetElement], of set: NFTSet, setName: String, setID: UInt32?, delete: Bool,
                  exclusive: Bool, into batch: EncodedBatch, operation: Int) throws {
        // Kernel elements are made a slice of model elements at a time, as the messages need
        // them: for 100,000 elements, all of them at once cost 10 MB of the commit's peak.
        var source = 0
        var kernel: [KernelElement] = []
        var start = 0
        func refill() throws {
            while start == kernel.count && source < elements.count {
                let next = min(elements.count, source + 2048)
                kernel = try ElementEncoding.kernelElements(Array(elements[source..<next]), of: set)
                start = 0
                source = next
            }
        }
        try refill()
        let budget = 60_000
        while start < kernel.count {
            let obj = try NftnlSet()
            let s = obj.handle
            nftnl_set_set_str(s, nla(NFTNL_SET_TABLE), table.name)
            // A set created earlier in this batch is named by its id alone. The kernel tries a
            // name first, by walking the table's list of sets comparing names (a `strlen` each),
            // and only then the id, which it finds at the tail of the batch's list of new sets:
            // one step for the elements that follow their set. nft sends both.
            if let setID {
                nftnl_set_set_u32(s, nla(NFTNL_SET_ID), setID)
            } else {
                nftnl_set_set_str(s, nla(NFTNL_SET_NAME), setName)
            }
            // Fill one message up to the budget, across slices (the same split as for the whole
            // list at once), at least one element per message.
            var size = 0
            var count = 0
            while start < kernel.count && (size + kernel[start].encodedSize <= budget || count == 0) {
                let k = kernel[start]
                size += k.encodedSize
                count += 1
                start += 1
                guard let e = nftnl_set_elem_alloc() else {
                    throw NetfilterError.systemCall(call: "nftnl_set_elem_alloc", errno: ENOMEM, context: "encoding set elements")
                }
                k.key.withUnsafeBytes { _ = nftnl_set_elem_set(e, nla(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count)) }
                if let keyEnd = k.keyEnd {
                    keyEnd.withUnsafeBytes { _ = nftnl_set_elem_set(e, nla(NFTNL_SET_ELEM_KEY_END), $0.baseAddress, UInt32($0.count)) }
                }
                if k.flags != 0 { nftnl_set_elem_set_u32(e, nla(NFTNL_SET_ELEM_FLAGS), k.flags) }
                if !delete {
                    switch k.data {
                    case .none: break
                    case .verdict(let v)?:
                        nftnl_set_elem_set_u32(e, nla(NFTNL_SET_ELEM_VERDICT), UInt32(bitPattern: v.code))
                        if let chain = v.targetChain { nftnl_set_elem_set_str(e, nla(NFTNL_SET_ELEM_CHAIN), chain) }
                    case .value(let v)?:
                        v.bytes.withUnsafeBytes { _ = nftnl_set_elem_set(e, nla(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count)) }
                    }
                }
                nftnl_set_elem_add(s, e)
                try refill()
            }
            let type = delete ? msgType(NFT_MSG_DELSETELEM) : msgType(NFT_MSG_NEWSETELEM)
            let flags = delete ? 0 : UInt16(NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0))
            try batch.append(operation: operation) { buf, seq in
                let nlh = nftnl_nlmsg_build_hdr(buf, type, family, flags, seq)!
                nftnl_set_elems_nlmsg_build_payload(nlh, s)
                return nlh
            }
        }
    }

    /// `flush set`: NFT_MSG_DELSETELEM without an element list removes every element.
    func flushSet(_ name: String, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlSet()
        nftnl_set_set_str(obj.handle, nla(NFTNL_SET_TABLE), table.name)
        nftnl_set_set_str(obj.handle, nla(NFTNL_SET_NAME), name)
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_DELSETELEM), family, 0, seq)!
            nftnl_set_elems_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    // MARK: rule

    func newRule(_ rule: Rule, linearized: LinearizedRule, into batch: EncodedBatch, operation: Int) throws {
        // Anonymous sets go first, in the same batch; the rule's lookup names them by id.
        for anon in linearized.anonymousSets {
            let model = anon.asModelSet
            let kernelCount = try ElementEncoding.kernelElements(model.elements, of: model).count
            try newSet(name: anon.data == nil ? "__set%d" : "__map%d", key: anon.key, kernelFlags: anon.kernelFlags, data: anon.data,
                       timeoutMilliseconds: nil, setID: anon.id, descSize: UInt32(kernelCount), exclusive: false,
                       into: batch, operation: operation)
            try elements(model.elements, of: model, setName: anon.data == nil ? "__set%d" : "__map%d", setID: anon.id, delete: false,
                         exclusive: false, into: batch, operation: operation)
        }
        let obj = try NftnlRule()
        nftnl_rule_set_str(obj.handle, nla(NFTNL_RULE_TABLE), table.name)
        nftnl_rule_set_str(obj.handle, nla(NFTNL_RULE_CHAIN), rule.chain)
        let ud = rule.userdata
        if !ud.isEmpty {
            _ = ud.withUnsafeBytes { nftnl_rule_set_data(obj.handle, nla(NFTNL_RULE_USERDATA), $0.baseAddress, UInt32($0.count)) }
        }
        for e in linearized.expressions { try obj.append(e) }
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_NEWRULE), family, UInt16(NLM_F_CREATE | NLM_F_APPEND), seq)!
            nftnl_rule_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }

    func deleteRule(chain: String, handle: UInt64, into batch: EncodedBatch, operation: Int) throws {
        let obj = try NftnlRule()
        nftnl_rule_set_str(obj.handle, nla(NFTNL_RULE_TABLE), table.name)
        nftnl_rule_set_str(obj.handle, nla(NFTNL_RULE_CHAIN), chain)
        nftnl_rule_set_u64(obj.handle, nla(NFTNL_RULE_HANDLE), handle)
        try batch.append(operation: operation) { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf, msgType(NFT_MSG_DELRULE), family, 0, seq)!
            nftnl_rule_nlmsg_build_payload(nlh, obj.handle)
            return nlh
        }
    }
}
