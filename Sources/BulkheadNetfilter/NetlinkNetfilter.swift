import BulkheadRuleset
import CNetfilter
import CNetfilterShim
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How Bulkhead protects its table from other programs, as found on this kernel.
public enum TableOwnership: String, Sendable, Codable, CustomStringConvertible {
    /// `flags owner,persist` (Linux ≥ 6.9): while Bulkhead's socket is open no other process can
    /// change the table; after it closes the table stays (fail closed) and the next Bulkhead
    /// process adopts it.
    case ownerPersist = "owner-persist"
    /// No ownership flags: the kernel lacks `persist`, and `owner` alone would delete the table
    /// (and every drop rule in it) when Bulkhead exits, so it is not used. Other root processes
    /// can change the table; drift is detected by dumping it.
    case unowned = "unowned"

    /// The flags this backend puts on the table.
    public var tableFlags: TableFlags { self == .ownerPersist ? [.owner, .persist] : [] }

    public var description: String {
        switch self {
        case .ownerPersist: "owner,persist (table locked to this process while it runs; kept after exit)"
        case .unowned: "unowned (kernel lacks NFT_TABLE_F_PERSIST; table not locked against other programs)"
        }
    }
}

/// What the last successful commit cost.
public struct CommitStatistics: Sendable, Equatable {
    /// Transaction operations (plus an implicit table adoption, if any).
    public var operations: Int
    /// Netlink messages in the batch, BATCH_BEGIN/END excluded.
    public var messages: Int
    /// Bytes sent in the single sendmsg.
    public var bytes: Int
    /// Batch pages (iovec entries) of that sendmsg.
    public var pages: Int
    /// From just before sendmsg until the last ack was read.
    public var sendToAck: Duration
}

/// What the last `dump` cost.
public struct DumpStatistics: Sendable, Equatable {
    /// Whole-table reads (more than one when someone committed during the read).
    public var tableReads: Int
    /// Set element dumps read again because the kernel's hash table was resized mid-dump.
    public var tornElementDumps: Int
    /// Wall time of the whole dump, re-reads included.
    public var duration: Duration
}

/// Whether to use table ownership flags.
public enum OwnershipPreference: Sendable {
    /// Probe the kernel and use owner|persist when it has both.
    case automatic
    /// Never set ownership flags.
    case disabled
}

/// The netlink `NetfilterBackend`: reads and atomically changes one nftables table through
/// libnftnl/libmnl, in the caller's or a named network namespace.
///
/// ```swift
/// let nf = try NetlinkNetfilter(namespace: "bh-test")        // nil: current namespace
/// let gen = try nf.generation()
/// var tx = Transaction(table: id, current: try nf.dump(table: id))
/// try tx.add(.table(Table(family: .inet, name: "bulkhead", flags: nf.ownership.tableFlags)))
/// try nf.apply(tx, expectedGeneration: gen)                   // RulesetError.staleGeneration if raced
/// let live = try nf.dump(table: id)
/// ```
///
/// One netlink socket per instance, used under a lock. With `ownerPersist` the table belongs to
/// this socket: keep the instance alive as long as the process should hold the table.
@available(macOS 15.0, *)
public final class NetlinkNetfilter: NetfilterBackend, TableFlagsManaging, @unchecked Sendable {
    // @unchecked: `conn` (a socket and its sequence counter) is only touched under `lock`.
    private let conn: NetlinkConnection
    private let lock = Mutex<Void>(())
    /// The ownership mode in use (probed at init).
    public let ownership: TableOwnership
    /// Network namespace the socket talks to (nil: the creating thread's).
    public let namespace: String?
    private var _lastCommit: CommitStatistics?
    /// Statistics of the last successful `apply`.
    public var lastCommit: CommitStatistics? { try? locked { _lastCommit } }
    private var _lastDump: DumpStatistics?
    /// Statistics of the last successful `dump`.
    public var lastDump: DumpStatistics? { try? locked { _lastDump } }

    /// Opens a socket (in `namespace`, a name under /var/run/netns or a path) and probes
    /// table ownership support.
    public convenience init(namespace: String? = nil, ownership: OwnershipPreference = .automatic) throws {
        try self.init(transport: NetfilterSocket(namespace: namespace), namespace: namespace, ownership: ownership)
    }

    /// Uses an existing transport (tests pass a double).
    public init(transport: NetlinkTransport, namespace: String? = nil, ownership: OwnershipPreference = .automatic) throws {
        let conn = NetlinkConnection(transport: transport)
        self.namespace = namespace
        switch ownership {
        case .disabled: self.ownership = .unowned
        case .automatic: self.ownership = try Self.probeOwnership(conn)
        }
        self.conn = conn
    }

    private func locked<T>(_ body: () throws -> T) throws -> T {
        try lock.withLock { _ in try body() }
    }

    // MARK: NetfilterBackend

    /// The flags this backend keeps on the table (`owner,persist`, or none when unowned).
    public var managedTableFlags: TableFlags { ownership.tableFlags }

    public func generation() throws -> UInt32 {
        try Self.backendErrors { try locked { try conn.readGeneration() } }
    }

    /// The `NetfilterBackend` methods throw `RulesetError` only, like the fake: netlink errors
    /// are mapped here, at the boundary (see `RulesetError`'s classification helpers).
    static func backendErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as NetfilterError {
            throw rulesetError(error)
        }
    }

    /// A netlink error in the backend vocabulary.
    public static func rulesetError(_ error: NetfilterError) -> RulesetError {
        switch error {
        case .permissionDenied(let op): return .permissionDenied(operation: op)
        case .tableOwnedByAnotherProcess(let table): return .tableOwnedByAnotherProcess(table: table)
        case .generationChanged(let expected): return .staleGeneration(expected: expected, actual: expected)
        case .operationFailed(let index, let op, let err, let message):
            return .operationFailed(index: index, operation: op, error: .kernel(errno: err, message: message ?? errnoText(err)))
        case .tableNotFound(let family, let name):
            return .noSuchTable(TableID(family: TableFamily(rawValue: family) ?? .inet, name: name))
        default: return .backendFailure(error.description)
        }
    }

    @discardableResult
    public func apply(_ transactions: [Transaction], expectedGeneration: UInt32?) throws -> UInt32 {
        try Self.backendErrors { try locked {
            let txs = transactions.filter { !$0.isEmpty }
            if txs.isEmpty { return try conn.readGeneration() }
            let encoder = TransactionEncoder(ownershipFlags: ownership.tableFlags, recordMessages: false)
            let batch = try encoder.encode(txs, generation: expectedGeneration, seq: { [conn] in conn.allocateSeq() })
            do {
                let clock = ContinuousClock()
                let start = clock.now
                let echoed = try conn.commit(batch)
                _lastCommit = CommitStatistics(operations: batch.operationCount, messages: batch.messageCount,
                                               bytes: batch.byteCount, pages: batch.parts.count, sendToAck: clock.now - start)
                if let echoed { return echoed }
                return try conn.readGeneration()
            } catch let error as NetfilterError {
                throw Self.map(error, batch: batch, conn: conn)
            }
        } }
    }

    public func dump(table: TableID) throws -> Table? {
        try Self.backendErrors { try locked {
            // Several dumps (table, chains, sets, elements, rules) are only consistent if nobody
            // committed in between: compare the generation before and after, and retry.
            var attempt = 0
            let clock = ContinuousClock()
            let start = clock.now
            while true {
                let before = try conn.readGeneration()
                let dumper = TableDumper(conn: conn, id: table)
                let result = try dumper.dump()
                let after = try conn.readGeneration()
                if before == after {
                    _lastDump = DumpStatistics(tableReads: attempt + 1, tornElementDumps: dumper.torn.count, duration: clock.now - start)
                    return result
                }
                attempt += 1
                if attempt >= 5 {
                    throw NetfilterError.malformedReply("the ruleset kept changing while table \(table) was read (5 attempts)")
                }
            }
        } }
    }

    /// Sends an already-encoded batch (benchmarks use it to time send → ack alone).
    func commit(_ batch: EncodedBatch) throws -> UInt32? {
        try locked { try conn.commit(batch) }
    }

    /// Runs `body` with the connection (tests and benchmarks).
    func withConnection<T>(_ body: (NetlinkConnection) throws -> T) throws -> T {
        try locked { try body(conn) }
    }

    // MARK: errors

    static func map(_ error: NetfilterError, batch: EncodedBatch, conn: NetlinkConnection) -> Error {
        switch error {
        case .generationChanged(let expected):
            let actual = (try? conn.readGeneration()) ?? expected
            return RulesetError.staleGeneration(expected: expected, actual: actual)
        case .operationFailed(let index, let op, let err, let message):
            let txIndex = index - batch.implicitOperations
            var text = errnoText(err)
            if let message, !message.isEmpty { text += ": " + message }
            if err == EPERM {
                text += " (the table is owned by another running process, e.g. the bulkhead agent; "
                    + "stop it or make the change through it)"
            }
            if txIndex < 0 {
                if err == EPERM { return RulesetError.tableOwnedByAnotherProcess(table: batch.operationDescription(index)) }
                return RulesetError.kernel(errno: err, message: "\(op): \(text)")
            }
            return RulesetError.operationFailed(index: txIndex, operation: op, error: .kernel(errno: err, message: text))
        default:
            return rulesetError(error)
        }
    }

    // MARK: ownership probe

    /// Asks the kernel whether it accepts `owner|persist`, without changing anything: the probe
    /// batch creates a scratch table with those flags and then deletes a table that does not
    /// exist, so the batch always aborts (no generation bump, nothing visible) and only the
    /// first message's ack tells whether the flags are known (EOPNOTSUPP when not).
    static func probeOwnership(_ conn: NetlinkConnection) throws -> TableOwnership {
        let flags = TableFlags([.owner, .persist]).rawValue
        let suffix = "\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
        let probe = TableID(family: .inet, name: "bulkhead_probe_\(suffix)")
        let batch = try EncodedBatch(generation: nil, seq: { [conn] in conn.allocateSeq() })
        let enc = MessageEncoder(table: probe)
        let i0 = batch.beginOperation("probe owner|persist")
        try enc.newTable(Table(family: .inet, name: probe.name), flags: flags, exclusive: true, into: batch, operation: i0)
        let i1 = batch.beginOperation("force abort")
        try MessageEncoder(table: TableID(family: .inet, name: "bulkhead_absent_\(suffix)")).deleteTable(into: batch, operation: i1)
        try batch.end()
        do {
            try conn.commit(batch)
            // Cannot happen (the second message must fail); if it did, undo the scratch table.
            let undo = try EncodedBatch(generation: nil, seq: { [conn] in conn.allocateSeq() })
            try enc.deleteTable(into: undo, operation: undo.beginOperation("remove probe table"))
            try undo.end()
            _ = try? conn.commit(undo)
            return .ownerPersist
        } catch NetfilterError.operationFailed(let index, _, _, _) {
            return index == i1 ? .ownerPersist : .unowned
        }
    }
}

/// Reads one table over netlink into the model.
@available(macOS 15.0, *)
struct TableDumper {
    let conn: NetlinkConnection
    let id: TableID
    final class Counter { var count = 0 }
    let torn = Counter()
    /// Element dumps read again when torn; 1 for a recorded dump, which reads the same every time.
    var elementReads = 8
    var family: UInt16 { UInt16(id.family.number) }

    func dump() throws -> Table? {
        guard let flags = try tableFlags() else { return nil }
        let chains = try dumpChains()
        var sets: [NFTSet] = []
        var anonymous: [String: NFTSet] = [:]
        for (set, isAnonymous) in try dumpSets() {
            var s = set
            s.setElements(try dumpElements(of: set))
            if isAnonymous { anonymous[s.name] = s } else { sets.append(s) }
        }
        let rules = try dumpRules(anonymous: anonymous)
        return Table(family: id.family, name: id.name, flags: TableFlags(rawValue: flags), sets: sets, chains: chains, rules: rules)
    }

    private func context(_ what: String) -> String { "reading \(what) of table \(id) (\(what == "table" ? "NFT_MSG_GETTABLE" : "dump"))" }

    func tableFlags() throws -> UInt32? {
        let obj = try NftnlTable()
        nftnl_table_set_str(obj.handle, nla(NFTNL_TABLE_NAME), id.name)
        var flags: UInt32?
        do {
            try conn.request(context: context("table"), build: { buf, seq in
                let nlh = nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), msgType(NFT_MSG_GETTABLE), family, UInt16(NLM_F_ACK), seq)!
                nftnl_table_nlmsg_build_payload(nlh, obj.handle)
                return nlh
            }, onData: { nlh in
                let t = try NftnlTable()
                if nftnl_table_nlmsg_parse(nlh, t.handle) < 0 { throw NetfilterError.malformedReply("NEWTABLE does not parse") }
                guard let n = nftnl_table_get_str(t.handle, nla(NFTNL_TABLE_NAME)), String(cString: n) == id.name else { return }
                flags = nftnl_table_get_u32(t.handle, nla(NFTNL_TABLE_FLAGS))
            })
        } catch NetfilterError.systemCall(_, let err, _) where err == ENOENT {
            return nil
        }
        return flags
    }

    func dumpChains() throws -> [Chain] {
        let filter = try NftnlChain()
        nftnl_chain_set_str(filter.handle, nla(NFTNL_CHAIN_TABLE), id.name)
        var chains: [Chain] = []
        try conn.request(context: context("chains"), build: { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), msgType(NFT_MSG_GETCHAIN), family, UInt16(NLM_F_DUMP), seq)!
            nftnl_chain_nlmsg_build_payload(nlh, filter.handle)
            return nlh
        }, onData: { nlh in
            let c = try NftnlChain()
            if nftnl_chain_nlmsg_parse(nlh, c.handle) < 0 { throw NetfilterError.malformedReply("NEWCHAIN does not parse") }
            guard let t = nftnl_chain_get_str(c.handle, nla(NFTNL_CHAIN_TABLE)), String(cString: t) == id.name,
                  let n = nftnl_chain_get_str(c.handle, nla(NFTNL_CHAIN_NAME)) else { return }
            var chain = Chain(name: String(cString: n))
            // A hook or chain type Bulkhead does not know reads as a regular chain: it then differs
            // from any base chain we want under that name, and the diff re-creates it.
            if nftnl_chain_is_set(c.handle, nla(NFTNL_CHAIN_HOOKNUM)),
               let hook = Hook.allCases.first(where: { $0.number == nftnl_chain_get_u32(c.handle, nla(NFTNL_CHAIN_HOOKNUM)) }),
               let type = nftnl_chain_get_str(c.handle, nla(NFTNL_CHAIN_TYPE)).flatMap({ ChainType(rawValue: String(cString: $0)) }) {
                let policy: Policy = nftnl_chain_get_u32(c.handle, nla(NFTNL_CHAIN_POLICY)) == 0 ? .drop : .accept
                chain.base = BaseChain(type: type, hook: hook, priority: nftnl_chain_get_s32(c.handle, nla(NFTNL_CHAIN_PRIO)), policy: policy)
            }
            chains.append(chain)
        })
        return chains
    }

    /// Sets of the table; the flag says whether it is an anonymous set (`__set0`) of a rule.
    func dumpSets() throws -> [(NFTSet, Bool)] {
        let filter = try NftnlSet()
        nftnl_set_set_str(filter.handle, nla(NFTNL_SET_TABLE), id.name)
        var sets: [(NFTSet, Bool)] = []
        try conn.request(context: context("sets"), build: { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), msgType(NFT_MSG_GETSET), family, UInt16(NLM_F_DUMP), seq)!
            nftnl_set_nlmsg_build_payload(nlh, filter.handle)
            return nlh
        }, onData: { nlh in
            let s = try NftnlSet()
            if nftnl_set_nlmsg_parse(nlh, s.handle) < 0 { throw NetfilterError.malformedReply("NEWSET does not parse") }
            guard let t = nftnl_set_get_str(s.handle, nla(NFTNL_SET_TABLE)), String(cString: t) == id.name,
                  let n = nftnl_set_get_str(s.handle, nla(NFTNL_SET_NAME)) else { return }
            sets.append((Self.modelSet(name: String(cString: n), s.handle), nftnl_set_get_u32(s.handle, nla(NFTNL_SET_FLAGS)) & 0x1 != 0))
        })
        return sets
    }

    static func keyType(_ id: UInt32) -> KeyType? {
        var parts: [DataType] = []
        var t = id
        repeat {
            guard let d = DataType.allCases.first(where: { $0.typeID == t & 0x3f }) else { return nil }
            parts.insert(d, at: 0)
            t >>= 6
        } while t != 0
        return KeyType(parts)
    }

    /// The key given to a set whose kernel key Bulkhead cannot read: a concatenation it never
    /// creates, so such a set always differs from the desired one.
    static let foreignKey = KeyType(.icmpType, .icmpv6Type, .nfProto)

    static func modelSet(name: String, _ s: OpaquePointer) -> NFTSet {
        let kflags = nftnl_set_get_u32(s, nla(NFTNL_SET_FLAGS))
        // A key type Bulkhead does not know (someone else's set) still has to come back as
        // *something* that differs from every set we would create, so the diff replaces it.
        // The type id is nft's userspace label; the kernel only checks the length. A set whose
        // length disagrees with its label (written by another tool) is not one of ours either.
        var key = keyType(nftnl_set_get_u32(s, nla(NFTNL_SET_KEY_TYPE))) ?? foreignKey
        if nftnl_set_get_u32(s, nla(NFTNL_SET_KEY_LEN)) != UInt32(key.byteLength) { key = foreignKey }
        var data: MapData?
        if kflags & 0x8 != 0 {
            let dt = nftnl_set_get_u32(s, nla(NFTNL_SET_DATA_TYPE))
            if dt == MapData.verdict.typeID { data = .verdict } else { data = DataType.allCases.first { $0.typeID == dt }.map { .value($0) } ?? .value(.mark) }
            if case .value(let t)? = data, nftnl_set_get_u32(s, nla(NFTNL_SET_DATA_LEN)) != UInt32(t.byteLength) { data = .value(.icmpType) }
        }
        let timeout: UInt64? = nftnl_set_is_set(s, nla(NFTNL_SET_TIMEOUT)) ? nftnl_set_get_u64(s, nla(NFTNL_SET_TIMEOUT)) : nil
        var flags = SetFlags(rawValue: kflags & (SetFlags.constant.rawValue | SetFlags.interval.rawValue | SetFlags.timeout.rawValue))
        if timeout != nil { flags.remove(.timeout) }
        return NFTSet(name: name, key: key, flags: flags, data: data, timeoutMilliseconds: timeout)
    }

    /// Elements of one set. A large dump takes many datagrams and the kernel resumes each one by
    /// skipping the elements it already sent in hash-table order; if the hash table is resized
    /// in between (the kernel grows it in the background after a big insert) elements shift,
    /// so some come twice and others never. Duplicates are the visible symptom: read again.
    func dumpElements(of set: NFTSet) throws -> [SetElement] {
        var attempt = 0
        while true {
            if let elements = try dumpElementsOnce(of: set) { return elements }
            torn.count += 1
            attempt += 1
            if attempt >= elementReads {
                throw NetfilterError.malformedReply("set \(set.name) kept changing shape while it was read (\(attempt) attempts)")
            }
            usleep(useconds_t(20_000 * attempt))
        }
    }

    /// One element dump; nil when it saw the same element twice (a torn dump, read again).
    private func dumpElementsOnce(of set: NFTSet) throws -> [SetElement]? {
        let filter = try NftnlSet()
        nftnl_set_set_str(filter.handle, nla(NFTNL_SET_TABLE), id.name)
        nftnl_set_set_str(filter.handle, nla(NFTNL_SET_NAME), set.name)
        // Interval sets need all elements before they can be paired up; plain sets and maps are
        // decoded element by element straight from libnftnl's buffers (the 100k-element path).
        final class Acc {
            let fields: [DataType]
            let data: MapData?
            let direct: Bool
            var kernel: [KernelElement] = []
            var elements: [SetElement] = []
            var seen = Set<Int>()
            var torn = false
            init(_ set: NFTSet) {
                fields = set.key.fields
                data = set.data
                direct = !set.flags.contains(.interval)
            }
        }
        let acc = Acc(set)
        try conn.request(context: context("elements of set \(set.name)"), build: { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), msgType(NFT_MSG_GETSETELEM), family, UInt16(NLM_F_DUMP), seq)!
            nftnl_set_elems_nlmsg_build_payload(nlh, filter.handle)
            return nlh
        }, onData: { nlh in
            let s = try NftnlSet()
            if nftnl_set_elems_nlmsg_parse(nlh, s.handle) < 0 { throw NetfilterError.malformedReply("NEWSETELEM does not parse") }
            _ = nftnl_set_elem_foreach(s.handle, { e, data in
                let acc = Unmanaged<Acc>.fromOpaque(data!).takeUnretainedValue()
                if acc.direct {
                    TableDumper.decodeDirect(e!, into: acc.fields, data: acc.data, elements: &acc.elements, seen: &acc.seen, torn: &acc.torn)
                } else {
                    acc.kernel.append(TableDumper.kernelElement(e!))
                }
                return 0
            }, Unmanaged.passUnretained(acc).toOpaque())
        })
        if acc.direct { return acc.torn ? nil : acc.elements }
        var seen = Set<KernelElement>(minimumCapacity: acc.kernel.count)
        if acc.kernel.contains(where: { !seen.insert($0).inserted }) { return nil }
        return ElementEncoding.modelElements(acc.kernel, of: set).elements
    }

    /// Decodes one element of a non-interval set. A key seen twice marks the dump as torn
    /// (compared by 64-bit hash: a collision costs one needless re-read, nothing worse).
    static func decodeDirect(_ e: OpaquePointer, into fields: [DataType], data mapData: MapData?,
                             elements: inout [SetElement], seen: inout Set<Int>, torn: inout Bool) {
        var len: UInt32 = 0
        guard let p = nftnl_set_elem_get(e, nla(NFTNL_SET_ELEM_KEY), &len) else { return }
        let key = UnsafeRawBufferPointer(start: p, count: Int(len))
        var hasher = Hasher()
        hasher.combine(bytes: key)
        if !seen.insert(hasher.finalize()).inserted { torn = true }
        guard let parts = ElementEncoding.splitKey(key, fields: fields) else { return }
        var data: ElementData?
        if mapData != nil {
            let k = kernelElement(e)
            data = k.data
            if data == nil, case .value(let t)? = mapData, let raw = k.rawData {
                data = ElementEncoding.value(raw[...], as: t).map { .value($0) }
            }
        }
        elements.append(SetElement(key: parts, data: data))
    }

    static func kernelElement(_ e: OpaquePointer) -> KernelElement {
        func bytes(_ a: Int) -> [UInt8]? {
            guard nftnl_set_elem_is_set(e, nla(a)) else { return nil }
            var len: UInt32 = 0
            guard let p = nftnl_set_elem_get(e, nla(a), &len) else { return nil }
            return Array(UnsafeRawBufferPointer(start: p, count: Int(len)))
        }
        var data: ElementData?
        if nftnl_set_elem_is_set(e, nla(NFTNL_SET_ELEM_VERDICT)) {
            let code = Int32(bitPattern: nftnl_set_elem_get_u32(e, nla(NFTNL_SET_ELEM_VERDICT)))
            let chain = nftnl_set_elem_get_str(e, nla(NFTNL_SET_ELEM_CHAIN)).map { String(cString: $0) }
            switch code {
            case 1: data = .verdict(.accept)
            case 0: data = .verdict(.drop)
            case -1: data = .verdict(.continue)
            case -5: data = .verdict(.return)
            case -3: data = chain.map { .verdict(.jump($0)) }
            case -4: data = chain.map { .verdict(.goto($0)) }
            default: data = nil
            }
        }
        return KernelElement(key: bytes(NFTNL_SET_ELEM_KEY) ?? [], keyEnd: bytes(NFTNL_SET_ELEM_KEY_END),
                             flags: nftnl_set_elem_is_set(e, nla(NFTNL_SET_ELEM_FLAGS)) ? nftnl_set_elem_get_u32(e, nla(NFTNL_SET_ELEM_FLAGS)) : 0,
                             data: data, rawData: bytes(NFTNL_SET_ELEM_DATA))
    }

    func dumpRules(anonymous: [String: NFTSet]) throws -> [Rule] {
        let filter = try NftnlRule()
        nftnl_rule_set_str(filter.handle, nla(NFTNL_RULE_TABLE), id.name)
        var rules: [Rule] = []
        let delin = Delinearizer(family: id.family, anonymousSets: anonymous)
        try conn.request(context: context("rules"), build: { buf, seq in
            let nlh = nftnl_nlmsg_build_hdr(buf.assumingMemoryBound(to: CChar.self), msgType(NFT_MSG_GETRULE), family, UInt16(NLM_F_DUMP), seq)!
            nftnl_rule_nlmsg_build_payload(nlh, filter.handle)
            return nlh
        }, onData: { nlh in
            guard let raw = nftnl_rule_alloc() else { throw NetfilterError.malformedReply("out of memory") }
            let r = NftnlRule(adopting: raw)
            if nftnl_rule_nlmsg_parse(nlh, r.handle) < 0 { throw NetfilterError.malformedReply("NEWRULE does not parse") }
            guard let t = nftnl_rule_get_str(r.handle, nla(NFTNL_RULE_TABLE)), String(cString: t) == id.name,
                  let c = nftnl_rule_get_str(r.handle, nla(NFTNL_RULE_CHAIN)) else { return }
            var ud: [UInt8] = []
            if nftnl_rule_is_set(r.handle, nla(NFTNL_RULE_USERDATA)) {
                var len: UInt32 = 0
                if let p = nftnl_rule_get_data(r.handle, nla(NFTNL_RULE_USERDATA), &len) {
                    ud = Array(UnsafeRawBufferPointer(start: p, count: Int(len)))
                }
            }
            let handle = nftnl_rule_get_u64(r.handle, nla(NFTNL_RULE_HANDLE))
            rules.append(delin.rule(chain: String(cString: c), handle: handle, expressions: r.expressions(), userdata: ud))
        })
        return rules
    }
}
