#if DEBUG
import BulkheadCompiler
import BulkheadRuleset
@testable import BulkheadNetfilter

/// What a dump of our table hands the decoders once libnftnl has split the netlink attributes:
/// one set (anonymous, `__set0`) with its elements as the kernel stores them, and one rule's
/// expressions and userdata. The kernel accepts far more than Bulkhead writes (issue 8, item 6:
/// a 2-byte load compared with 8 bytes), and someone else may have written our table, so every
/// field is free.
///
/// Input layout (`NetlinkCase.decode`; `encode` writes the seeds, so the two stay inverse):
/// key type id (u32), family, set key fields, interval flag, map data, elements (key, key end,
/// flags, data), expressions (tag + fields), then the userdata.
struct NetlinkCase {
    var keyTypeID: UInt32
    var family: TableFamily
    var fields: [DataType]
    var interval: Bool
    var data: MapData?
    var elements: [KernelElement]
    var expressions: [KernelExpression]
    var userdata: [UInt8]

    static let anonymousName = "__set0"

    static func decode(_ bytes: [UInt8]) -> NetlinkCase {
        var input = FuzzInput(bytes)
        let keyTypeID = input.u32()
        let family = input.pick(TableFamily.allCases)
        let fields = (0...(Int(input.byte()) % 3)).map { _ in input.pick(DataType.allCases) }
        let interval = input.bool()
        let data: MapData? = switch input.byte() % 3 {
        case 0: nil
        case 1: .verdict
        default: .value(input.pick(DataType.allCases))
        }
        let elements = (0..<(Int(input.byte()) % 32)).map { _ in
            let key = input.blob()
            let keyEnd = input.bool() ? input.blob() : nil
            let flags = input.small()
            var element = KernelElement(key: key, keyEnd: keyEnd, flags: flags, data: nil)
            switch input.byte() % 3 {
            case 0: break
            case 1: element.data = .verdict(verdict(&input))
            default: element.rawData = input.blob()
            }
            return element
        }
        let expressions = (0..<(Int(input.byte()) % 32)).map { _ in expression(&input) }
        return NetlinkCase(keyTypeID: keyTypeID, family: family, fields: fields, interval: interval, data: data,
                           elements: elements, expressions: expressions, userdata: Array(input.rest().prefix(256)))
    }

    static func verdict(_ input: inout FuzzInput) -> Verdict {
        switch input.byte() % 6 {
        case 0: .accept
        case 1: .drop
        case 2: .continue
        case 3: .return
        case 4: .jump(input.string())
        default: .goto(input.string())
        }
    }

    static func expression(_ input: inout FuzzInput) -> KernelExpression {
        switch input.byte() % 14 {
        case 0: .payload(base: input.small(), offset: input.small(), length: input.small(), dreg: input.small())
        case 1: .meta(key: input.small(), dreg: input.small())
        case 2: .ct(key: input.small(), dreg: input.small())
        case 3: .cmp(sreg: input.small(), op: input.small(), data: input.blob())
        case 4: .bitwise(sreg: input.small(), dreg: input.small(), length: input.small(), mask: input.blob(), xor: input.blob())
        case 5: .lookup(set: input.bool() ? anonymousName : input.string(), setID: input.bool() ? input.small() : nil,
                        sreg: input.small(), dreg: input.bool() ? input.small() : nil, flags: input.small())
        case 6: .range(sreg: input.small(), op: input.small(), from: input.blob(), to: input.blob())
        case 7: .counter(packets: input.u64(), bytes: input.u64())
        case 8: .log(prefix: input.bool() ? input.string(max: 160) : nil, group: input.bool() ? input.u16() : nil,
                     level: input.bool() ? input.small() : nil)
        case 9: .limit(rate: input.u64(), unit: input.u64(), burst: input.small(), type: input.small(), flags: input.small())
        case 10: .verdict(code: Int32(bitPattern: input.small()), chain: input.bool() ? input.string() : nil)
        case 11: .reject(type: input.small(), code: input.byte())
        case 12: .unknown(name: input.string(), text: input.string())
        default: .metaSet(key: input.small(), sreg: input.small())
        }
    }
}

extension NetlinkCase {
    /// The bytes `decode` reads back as this case (seeds; values past a field's range are clipped).
    func encode() -> [UInt8] {
        var out: [UInt8] = []
        func byte(_ b: UInt8) { out.append(b) }
        func u16(_ v: UInt16) { out += [UInt8(v >> 8), UInt8(v & 0xff)] }
        func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xffff)) }
        func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(v & 0xffff_ffff)) }
        func small(_ v: UInt32) { if v < 0xff { byte(UInt8(v)) } else { byte(0xff); u32(v) } }
        func blob(_ b: [UInt8], max: Int = 64) { let b = b.prefix(max); byte(UInt8(b.count)); out += b }
        func string(_ s: String, max: Int = 32) { blob(Array(s.utf8), max: max) }
        func index<T: Equatable>(_ v: T, in all: [T]) { byte(UInt8(all.firstIndex(of: v)!)) }
        func verdict(_ v: Verdict) {
            switch v {
            case .accept: byte(0)
            case .drop: byte(1)
            case .continue: byte(2)
            case .return: byte(3)
            case .jump(let c): byte(4); string(c)
            case .goto(let c): byte(5); string(c)
            }
        }
        u32(keyTypeID)
        index(family, in: TableFamily.allCases)
        byte(UInt8(fields.count - 1))
        for f in fields { index(f, in: DataType.allCases) }
        byte(interval ? 1 : 0)
        switch data {
        case nil: byte(0)
        case .verdict?: byte(1)
        case .value(let t)?: byte(2); index(t, in: DataType.allCases)
        }
        byte(UInt8(elements.count))
        for e in elements {
            blob(e.key)
            if let end = e.keyEnd { byte(1); blob(end) } else { byte(0) }
            small(e.flags)
            switch (e.data, e.rawData) {
            case (.verdict(let v)?, _): byte(1); verdict(v)
            case (.value(let v)?, _): byte(2); blob(v.bytes)
            case (nil, let raw?): byte(2); blob(raw)
            case (nil, nil): byte(0)
            }
        }
        byte(UInt8(expressions.count))
        for e in expressions {
            switch e {
            case .payload(let base, let offset, let length, let dreg): byte(0); small(base); small(offset); small(length); small(dreg)
            case .meta(let key, let dreg): byte(1); small(key); small(dreg)
            case .ct(let key, let dreg): byte(2); small(key); small(dreg)
            case .cmp(let sreg, let op, let data): byte(3); small(sreg); small(op); blob(data)
            case .bitwise(let sreg, let dreg, let length, let mask, let xor):
                byte(4); small(sreg); small(dreg); small(length); blob(mask); blob(xor)
            case .lookup(let set, let setID, let sreg, let dreg, let flags):
                byte(5)
                if set == Self.anonymousName { byte(1) } else { byte(0); string(set) }
                if let setID { byte(1); small(setID) } else { byte(0) }
                small(sreg)
                if let dreg { byte(1); small(dreg) } else { byte(0) }
                small(flags)
            case .range(let sreg, let op, let from, let to): byte(6); small(sreg); small(op); blob(from); blob(to)
            case .counter(let packets, let bytes): byte(7); u64(packets); u64(bytes)
            case .log(let prefix, let group, let level):
                byte(8)
                if let prefix { byte(1); string(prefix, max: 160) } else { byte(0) }
                if let group { byte(1); u16(group) } else { byte(0) }
                if let level { byte(1); small(level) } else { byte(0) }
            case .limit(let rate, let unit, let burst, let type, let flags):
                byte(9); u64(rate); u64(unit); small(burst); small(type); small(flags)
            case .verdict(let code, let chain):
                byte(10); small(UInt32(bitPattern: code))
                if let chain { byte(1); string(chain) } else { byte(0) }
            case .reject(let type, let code): byte(11); small(type); byte(code)
            case .unknown(let name, let text): byte(12); string(name); string(text)
            case .metaSet(let key, let sreg): byte(13); small(key); small(sreg)
            }
        }
        out += userdata.prefix(256)
        return out
    }
}

enum DelinearizeFuzz {
    static func run(_ bytes: [UInt8]) {
        let c = NetlinkCase.decode(bytes)
        _ = TableDumper.keyType(c.keyTypeID)
        for e in c.elements {
            e.key.withUnsafeBytes { _ = ElementEncoding.splitKey($0, fields: c.fields) }
        }
        let shell = NFTSet(name: NetlinkCase.anonymousName, key: KeyType(c.fields),
                           flags: c.interval ? [.constant, .interval] : [.constant], data: c.data)
        let decoded = ElementEncoding.modelElements(c.elements, of: shell)
        let set = NFTSet(name: shell.name, key: shell.key, flags: shell.flags, data: shell.data, elements: decoded.elements)
        _ = NFTText.setBlock(set)
        let delinearizer = Delinearizer(family: c.family, anonymousSets: [set.name: set])
        let rule = delinearizer.rule(chain: "fuzz", handle: 1, expressions: c.expressions, userdata: c.userdata)
        _ = NFTText.rule(rule)
    }

    /// Seeds from the table the example policies compile to: each rule as nft linearizes it (its
    /// anonymous set as the kernel names it in a dump), and each named set with its elements.
    static func seeds() -> [[UInt8]] {
        let table = Compiler.compile(Examples.policies, Examples.inventory).table
        var seeds: [[UInt8]] = []
        var shapes = Set<String>()
        for rule in table.rules {
            var lin = Linearizer(family: table.family)
            guard let linearized = try? lin.linearize(rule) else { continue }
            let expressions = linearized.expressions.map { e -> KernelExpression in
                if case .lookup(_, let id?, let sreg, let dreg, let flags) = e, id == linearized.anonymousSets.first?.id {
                    return .lookup(set: NetlinkCase.anonymousName, setID: nil, sreg: sreg, dreg: dreg, flags: flags)
                }
                return e
            }
            var c = NetlinkCase(keyTypeID: 0, family: table.family, fields: [.ipv4Addr], interval: false, data: nil,
                                elements: [], expressions: expressions, userdata: rule.userdata)
            if let anon = linearized.anonymousSets.first {
                let set = NFTSet(name: NetlinkCase.anonymousName, key: anon.key,
                                 flags: anon.interval ? [.constant, .interval] : [.constant], data: anon.data, elements: anon.elements)
                c.fields = anon.key.fields
                c.interval = anon.interval
                c.data = anon.data
                c.keyTypeID = anon.key.typeID
                c.elements = Array(((try? ElementEncoding.kernelElements(set.elements, of: set)) ?? []).prefix(31))
            }
            // One seed per shape of rule (the example table repeats each shape per service).
            let shape = expressions.map { "\($0)".prefix { $0 != "(" } }.joined(separator: " ") + " \(c.fields)"
            if shapes.insert(shape).inserted { seeds.append(c.encode()) }
        }
        for set in table.sets where shapes.insert("set \(set.key) \(set.flags.rawValue) \(String(describing: set.data))").inserted {
            let elements = (try? ElementEncoding.kernelElements(set.elements, of: set)) ?? []
            let c = NetlinkCase(keyTypeID: set.key.typeID, family: table.family, fields: set.key.fields,
                                interval: set.flags.contains(.interval), data: set.data,
                                elements: Array(elements.prefix(31)), expressions: [], userdata: [])
            seeds.append(c.encode())
        }
        return seeds
    }
}
#else
enum DelinearizeFuzz {
    /// The dump decoders are internal to BulkheadNetfilter: only a debug build (testable) reaches them.
    static func run(_ bytes: [UInt8]) {}
    static func seeds() -> [[UInt8]] { [] }
}
#endif
