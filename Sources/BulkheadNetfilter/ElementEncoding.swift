import BulkheadRuleset

/// One element as the kernel stores it.
struct KernelElement: Hashable {
    var key: [UInt8]
    /// NFTA_SET_ELEM_KEY_END: the closing key of a concatenated range (pipapo sets only).
    var keyEnd: [UInt8]?
    /// NFT_SET_ELEM_INTERVAL_END marks the first key *after* a range in a single-field
    /// interval set (rbtree).
    var flags: UInt32
    var data: ElementData?
    /// NFTA_SET_ELEM_DATA of a data map as read from a dump (decoded with the set's data type).
    var rawData: [UInt8]? = nil

    /// Upper bound of the element's size inside the element-list nest, used to split messages.
    var encodedSize: Int {
        func attr(_ n: Int) -> Int { 4 + (n + 3) / 4 * 4 }
        var n = 4 + 4 + attr(key.count)
        if let keyEnd { n += 4 + attr(keyEnd.count) }
        if flags != 0 { n += 8 }
        switch data {
        case .none: break
        case .verdict(let v)?: n += 4 + 4 + 8 + (v.targetChain.map { attr($0.utf8.count + 1) } ?? 0)
        case .value(let v)?: n += 4 + attr(v.bytes.count)
        }
        return n
    }
}

/// Model elements ↔ kernel elements, including nft's interval encoding.
enum ElementEncoding {
    /// The key bytes of one field: single-field keys are the raw value, concatenated keys pad
    /// every field to a 32-bit register boundary (nft `netlink_padded_len`).
    static func fieldBytes(_ v: Value, padded: Bool) -> [UInt8] {
        var b = v.bytes
        if padded { b += [UInt8](repeating: 0, count: (4 - b.count % 4) % 4) }
        return b
    }

    /// High end of a key part as bytes (a wildcard interface name covers every name that starts
    /// with its prefix: the prefix followed by 0xff).
    static func highBytes(_ part: KeyPart) -> [UInt8] {
        if case .value(.ifname(let n)) = part, n.hasSuffix("*") {
            let prefix = Array(n.dropLast().utf8.prefix(16))
            return prefix + [UInt8](repeating: 0xff, count: 16 - prefix.count)
        }
        return part.high.bytes
    }

    /// Big-endian +1; nil when it overflows (the range reaches the top of the key space).
    static func increment(_ bytes: [UInt8]) -> [UInt8]? {
        var b = bytes
        var i = b.count - 1
        while i >= 0 {
            if b[i] == 0xff { b[i] = 0; i -= 1 } else { b[i] += 1; return b }
        }
        return nil
    }

    static func kernelElements(_ elements: [SetElement], of set: NFTSet) throws -> [KernelElement] {
        let fields = set.key.fields
        let concat = fields.count > 1
        let interval = set.flags.contains(.interval)
        var out: [KernelElement] = []
        out.reserveCapacity(interval && !concat ? elements.count * 2 : elements.count)
        for e in elements {
            guard e.key.count == fields.count else {
                throw NetfilterError.unsupported("element \(e) has \(e.key.count) key fields, set \(set.name) has \(fields.count)")
            }
            if !interval {
                for (part, type) in zip(e.key, fields) {
                    guard case .value(let v) = part, !v.isWildcard else {
                        throw NetfilterError.unsupported("range \(part) in set \(set.name), which has no interval flag")
                    }
                    guard v.dataType == type else { throw NetfilterError.unsupported("\(v) is not a \(type) (set \(set.name))") }
                }
                // One allocation per element: every field written in place at its (padded)
                // offset, the padding left zero.
                var key = [UInt8](repeating: 0, count: set.key.byteLength)
                key.withUnsafeMutableBufferPointer { buf in
                    var offset = 0
                    for (part, type) in zip(e.key, fields) {
                        part.low.writeBytes(to: buf.baseAddress! + offset)
                        offset += concat ? (type.byteLength + 3) / 4 * 4 : type.byteLength
                    }
                }
                out.append(KernelElement(key: key, keyEnd: nil, flags: 0, data: e.data))
            } else if concat {
                var low: [UInt8] = [], high: [UInt8] = []
                for part in e.key {
                    low += fieldBytes(part.low, padded: true)
                    var h = highBytes(part)
                    h += [UInt8](repeating: 0, count: (4 - h.count % 4) % 4)
                    high += h
                }
                out.append(KernelElement(key: low, keyEnd: high, flags: 0, data: e.data))
            } else {
                // rbtree interval: a start element, and an end element at high + 1 flagged
                // INTERVAL_END. A range that reaches the top of the key space has no end.
                let part = e.key[0]
                out.append(KernelElement(key: part.low.bytes, keyEnd: nil, flags: 0, data: e.data))
                if let end = increment(highBytes(part)) {
                    out.append(KernelElement(key: end, keyEnd: nil, flags: NFT.setElementIntervalEnd, data: nil))
                }
            }
        }
        return out
    }

    // MARK: decoding

    static func value(_ b: ArraySlice<UInt8>, as type: DataType) -> Value? {
        guard b.count >= type.byteLength else { return nil }
        let i = b.startIndex
        func be32() -> UInt32 { UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3]) }
        func le32() -> UInt32 { UInt32(b[i + 3]) << 24 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i]) }
        switch type {
        case .ipv4Addr: return .ipv4(IPv4Address(be32()))
        case .ipv6Addr: return IPv6Address(bytes: Array(b.prefix(16))).map { .ipv6($0) }
        case .inetService: return .port(UInt16(b[i]) << 8 | UInt16(b[i + 1]))
        case .inetProto: return .proto(b[i])
        case .nfProto: return .nfProto(b[i])
        case .icmpType: return .icmpType(b[i])
        case .icmpv6Type: return .icmpv6Type(b[i])
        case .mark: return .mark(le32())
        case .classid: return .classid(le32())
        case .ctState: return .ctState(CtState(rawValue: le32()))
        case .ifname:
            let name = b.prefix(16).prefix { $0 != 0 }
            return .ifname(String(decoding: name, as: UTF8.self))
        case .etherAddr: return EtherAddress(bytes: Array(b.prefix(6))).map { .etherAddr($0) }
        case .etherType: return .etherType(UInt16(b[i]) << 8 | UInt16(b[i + 1]))
        }
    }

    /// `value(_:as:)` straight from a kernel buffer (the dump path: no per-field arrays).
    static func value(_ b: UnsafeRawBufferPointer, as type: DataType) -> Value? {
        guard b.count >= type.byteLength else { return nil }
        func be32() -> UInt32 { UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3]) }
        switch type {
        case .ipv4Addr: return .ipv4(IPv4Address(be32()))
        case .inetService: return .port(UInt16(b[0]) << 8 | UInt16(b[1]))
        case .inetProto: return .proto(b[0])
        case .nfProto: return .nfProto(b[0])
        default: return value(Array(b)[...], as: type)
        }
    }

    /// Splits a non-interval key in place; nil when it does not fit the set's key type.
    static func splitKey(_ key: UnsafeRawBufferPointer, fields: [DataType]) -> [KeyPart]? {
        if fields.count == 1 { return value(key, as: fields[0]).map { [.value($0)] } }
        var parts: [KeyPart] = []
        parts.reserveCapacity(fields.count)
        var offset = 0
        for f in fields {
            let len = (f.byteLength + 3) / 4 * 4
            guard offset + len <= key.count,
                  let v = value(UnsafeRawBufferPointer(rebasing: key[offset..<(offset + len)]), as: f) else { return nil }
            parts.append(.value(v))
            offset += len
        }
        return parts
    }

    static func splitKey(_ key: [UInt8], fields: [DataType]) -> [Value]? {
        if fields.count == 1 { return value(key[...], as: fields[0]).map { [$0] } }
        var values: [Value] = []
        var offset = 0
        for f in fields {
            let len = (f.byteLength + 3) / 4 * 4
            guard offset + len <= key.count, let v = value(key[offset..<(offset + len)], as: f) else { return nil }
            values.append(v)
            offset += len
        }
        return values
    }

    static func keyPart(low: [UInt8], high: [UInt8], type: DataType) -> KeyPart? {
        guard let lo = value(low[...], as: type), let hi = value(high[...], as: type) else { return nil }
        if type == .ifname, case .ifname(let prefix) = lo {
            // The name was decoded with replacement characters for invalid UTF-8, so its UTF-8
            // form can be longer than the 16 bytes it came from: such a name is not a wildcard.
            let p = Array(prefix.utf8)
            if p.count <= 16, high == p + [UInt8](repeating: 0xff, count: 16 - p.count) && low == p + [UInt8](repeating: 0, count: 16 - p.count) {
                return .value(.ifname(prefix + "*"))
            }
        }
        return .between(lo, hi)
    }

    /// Model elements from a dump. Elements that do not fit the set's key are reported in
    /// `undecodable` rather than dropped silently.
    static func modelElements(_ kernel: [KernelElement], of set: NFTSet) -> (elements: [SetElement], undecodable: Int) {
        let fields = set.key.fields
        let interval = set.flags.contains(.interval)
        var out: [SetElement] = []
        out.reserveCapacity(kernel.count)
        var bad = 0
        var kernel = kernel
        if case .value(let t)? = set.data {
            for i in kernel.indices where kernel[i].data == nil {
                if let raw = kernel[i].rawData, let v = value(raw[...], as: t) { kernel[i].data = .value(v) }
            }
        }
        if !interval {
            for k in kernel {
                guard let values = splitKey(k.key, fields: fields) else { bad += 1; continue }
                out.append(SetElement(key: values.map { .value($0) }, data: k.data))
            }
        } else if fields.count > 1 {
            for k in kernel {
                guard let low = splitKey(k.key, fields: fields), let highKey = k.keyEnd else { bad += 1; continue }
                var parts: [KeyPart] = []
                var offset = 0
                for (i, f) in fields.enumerated() {
                    let len = (f.byteLength + 3) / 4 * 4
                    guard offset + len <= highKey.count,
                          let p = keyPart(low: fieldBytesOf(low[i], f), high: Array(highKey[offset..<(offset + f.byteLength)]), type: f) else { bad += 1; break }
                    parts.append(p)
                    offset += len
                }
                if parts.count == fields.count { out.append(SetElement(key: parts, data: k.data)) }
            }
        } else {
            // Walk the rbtree's keys in ascending order (an end before a start with the same key,
            // as for two adjacent ranges): each start runs until the next end, minus one.
            let type = fields[0]
            let sorted = kernel.sorted { a, b in
                if a.key != b.key { return a.key.lexicographicallyPrecedes(b.key) }
                return (a.flags & NFT.setElementIntervalEnd) > (b.flags & NFT.setElementIntervalEnd)
            }
            var open: KernelElement?
            func close(_ start: KernelElement, _ high: [UInt8]) {
                if let part = keyPart(low: start.key, high: high, type: type) {
                    out.append(SetElement(key: [part], data: start.data))
                } else { bad += 1 }
            }
            for k in sorted {
                if k.flags & NFT.setElementIntervalEnd != 0 {
                    // nft puts an end element at 0 before a set that does not start at 0: skip it.
                    guard let start = open else { continue }
                    close(start, decrement(k.key))
                    open = nil
                } else {
                    if let start = open { close(start, decrement(k.key)) }
                    open = k
                }
            }
            if let start = open { close(start, [UInt8](repeating: 0xff, count: start.key.count)) }
        }
        return (out, bad)
    }

    static func fieldBytesOf(_ v: Value, _ type: DataType) -> [UInt8] { v.bytes }

    static func decrement(_ bytes: [UInt8]) -> [UInt8] {
        var b = bytes
        var i = b.count - 1
        while i >= 0 {
            if b[i] == 0 { b[i] = 0xff; i -= 1 } else { b[i] -= 1; return b }
        }
        return b
    }
}
