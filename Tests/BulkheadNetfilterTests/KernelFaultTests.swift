import BulkheadRuleset
import Foundation
import Testing
@testable import BulkheadNetfilter

@Suite(.serialized, .enabled(if: Kernel.enabled, "needs root"))
struct KernelFaultTests {
    static let id = TableID(family: .inet, name: "bulkhead")

    /// `uname -r`, to name the kernel that lacks something.
    static var kernelRelease: String {
        ((try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func baseTable() -> Table {
        Table(family: .inet, name: "bulkhead",
              sets: [NFTSet(name: "svc", key: KeyType(.ipv4Addr), elements: [SetElement(.ipv4(v4("10.0.0.1")))])],
              chains: [Chain(name: "forward", base: BaseChain(hook: .forward, priority: 0))],
              rules: [Rule(chain: "forward", [.match(Match(.ipSaddr, .set("svc"))), .verdict(.accept)])])
    }

    /// The k-th operation fails in the kernel: nothing changes, and the error names operation k
    /// and the kernel's reason.
    @Test func invalidOperationChangesNothingAndIsNamed() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            try nf.apply(try creation(of: Self.baseTable()), expectedGeneration: nil)
            let before = try nf.dump(table: Self.id)
            let genBefore = try nf.generation()

            // Queue against a table that claims a chain "ghost" exists, so the transaction
            // validates but the kernel refuses operation 2 (index 2: a rule in a missing chain).
            var lying = before!
            lying.chains.append(Chain(name: "ghost"))
            var tx = Transaction(table: Self.id, current: lying)
            try tx.add(.chain(Chain(name: "in_a")))
            try tx.add(.elements(set: "svc", [SetElement(.ipv4(v4("10.0.0.2")))]))
            try tx.add(.rule(Rule(chain: "ghost", [.verdict(.drop)])))
            try tx.add(.chain(Chain(name: "in_b")))

            do {
                try nf.apply(tx, expectedGeneration: genBefore)
                Issue.record("the batch should have been refused")
            } catch let RulesetError.operationFailed(index, operation, error) {
                #expect(index == 2)
                #expect(operation.contains("ghost"), "\(operation)")
                guard case .kernel(let errno, let message) = error else {
                    Issue.record("expected a kernel error, got \(error)"); return
                }
                #expect(errno == ENOENT)
                #expect(message.contains("No such file or directory"), "\(message)")
                // nf_tables points at the offending attribute: the missing chain's name.
                #expect(message.contains("\"ghost\""), "\(message)")
            }
            #expect(try nf.dump(table: Self.id) == before)
            #expect(try nf.generation() == genBefore)
        }
    }

    /// Another process changes the ruleset between our dump and our commit: the kernel refuses
    /// the batch (generation id in BATCH_BEGIN) and nothing of ours is written.
    @Test func concurrentChangeIsDetectedByGeneration() throws {
        try Kernel.withNamespace { ns in
            // Created by a process that has gone (the socket closes): an orphaned persistent
            // table that other programs may change, the case the generation check is for.
            do {
                let first = try NetlinkNetfilter(namespace: ns)
                try first.apply(try creation(of: Self.baseTable()), expectedGeneration: nil)
            }
            let nf = try NetlinkNetfilter(namespace: ns)
            let gen = try nf.generation()
            let current = try nf.dump(table: Self.id)
            try Kernel.nft(["add", "chain", "inet", "bulkhead", "sneaky"], in: ns)

            var tx = Transaction(table: Self.id, current: current)
            try tx.add(.chain(Chain(name: "ours")))
            #expect {
                try nf.apply(tx, expectedGeneration: gen)
            } throws: { error in
                guard case RulesetError.staleGeneration(let expected, let actual) = error else { return false }
                return expected == gen && actual != gen
            }
            let after = try nf.dump(table: Self.id)
            #expect(after?.chain(named: "sneaky") != nil)
            #expect(after?.chain(named: "ours") == nil)
        }
    }

    /// 100,000 concatenated elements in one transaction (a batch of several pages, one datagram).
    @Test func hundredThousandElementsInOneTransaction() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            let key = KeyType(.ipv4Addr, .ipv4Addr, .inetService)
            var elements: [SetElement] = []
            elements.reserveCapacity(100_000)
            for i in 0..<100_000 {
                let source = IPv4Address(0x0A00_0000 | UInt32(i))
                let destination = IPv4Address(0xAC10_0000 | UInt32(i % 977))
                let port = UInt16(1 + i % 60000)
                elements.append(SetElement(.ipv4(source), .ipv4(destination), .port(port)))
            }
            var tx = Transaction(table: Self.id, current: nil)
            try tx.add(.table(Table(family: .inet, name: "bulkhead")))
            try tx.add(.set(NFTSet(name: "flows", key: key)))
            try tx.add(.elements(set: "flows", elements))
            let batch = try TransactionEncoder().encode(tx, generation: nil, seq: { 1 })
            #expect(batch.parts.count > 1, "the batch should span several pages")
            try nf.apply(tx, expectedGeneration: try nf.generation())
            let set = try nf.dump(table: Self.id)?.set(named: "flows")
            #expect(set?.elements.count == 100_000)
            // Compare without printing 100k elements on failure.
            let same = set?.elements == NFTSet(name: "flows", key: key, elements: elements).elements
            #expect(same, "the dumped elements differ from the committed ones")
        }
    }

    /// Thousands of messages in one batch: one ack each, all fit the receive buffer.
    @Test func manyRulesInOneTransaction() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns)
            var tx = Transaction(table: Self.id, current: nil)
            try tx.add(.table(Table(family: .inet, name: "bulkhead")))
            try tx.add(.chain(Chain(name: "c")))
            // 2,000, not more: queueing a rule validates the whole table so far (BulkheadRuleset),
            // which makes building the transaction quadratic.
            for i in 0..<2000 {
                try tx.add(.rule(Rule(chain: "c", [.match(Match(.ipSaddr, .value(.ipv4(IPv4Address(0x0A00_0000 + UInt32(i)))))), .verdict(.accept)])))
            }
            try nf.apply(tx, expectedGeneration: nil)
            #expect(nf.lastCommit?.messages == 2002)
            #expect(try nf.dump(table: Self.id)?.rules.count == 2000)
        }
    }

    /// Someone flushes our chain or adds a rule Bulkhead never writes: the dump shows it (and
    /// an unknown expression is read as a foreign rule, not a crash).
    @Test func foreignEditsAreVisibleInTheDump() throws {
        try Kernel.withNamespace { ns in
            let nf = try NetlinkNetfilter(namespace: ns, ownership: .disabled)
            let tx = try creation(of: Self.baseTable())
            try nf.apply(tx, expectedGeneration: nil)
            let want = comparable(tx.expected)
            #expect(comparable(try nf.dump(table: Self.id)) == want)

            try Kernel.nft(["add", "rule", "inet", "bulkhead", "forward", "ip", "ttl", "5", "meta", "mark", "set", "1"], in: ns)
            let edited = try nf.dump(table: Self.id)
            #expect(comparable(edited) != want)
            let foreign = edited?.rules.last
            #expect(foreign?.comment?.hasPrefix(Delinearizer.foreignMarker) == true, "\(String(describing: foreign))")

            try Kernel.nft(["flush", "table", "inet", "bulkhead"], in: ns)
            let flushed = try nf.dump(table: Self.id)
            #expect(flushed?.rules.isEmpty == true)
            #expect(comparable(flushed) != want)

            try Kernel.nft(["delete", "table", "inet", "bulkhead"], in: ns)
            #expect(try nf.dump(table: Self.id) == nil)
        }
    }

    /// owner|persist: while we hold the table nobody else can change it; after we exit it stays
    /// (fail closed) and the next Bulkhead process adopts it.
    @Test func ownedTableIsLockedPersistsAndIsAdopted() throws {
        try Kernel.withNamespace { ns in
            let probe = try NetlinkNetfilter(namespace: ns)
            // Never skipped: a kernel without the flags fails here, saying which it lacks.
            try #require(probe.ownership == .ownerPersist,
                         "this kernel (Linux \(Self.kernelRelease)) lacks nftables table flags owner (NFT_TABLE_F_OWNER, Linux 5.12) and persist (NFT_TABLE_F_PERSIST, Linux 6.9): detected \(probe.ownership)")
            do {
                let holder = try NetlinkNetfilter(namespace: ns)
                try holder.apply(try creation(of: Self.baseTable()), expectedGeneration: nil)
                #expect(try holder.dump(table: Self.id)?.flags == [.owner, .persist])
                // The kernel refuses everyone but the owner with EPERM.
                #expect {
                    try Kernel.nft(["add", "chain", "inet", "bulkhead", "x"], in: ns)
                } throws: { "\($0)".contains("Operation not permitted") }
            }
            // The holder's socket is closed: the table survives, orphaned.
            #expect(try probe.dump(table: Self.id)?.chain(named: "forward") != nil)
            try Kernel.nft(["add", "chain", "inet", "bulkhead", "x"], in: ns)

            // A new process adopts it by re-sending NEWTABLE with the flags in its next transaction.
            let adopter = try NetlinkNetfilter(namespace: ns)
            var tx = Transaction(table: Self.id, current: try adopter.dump(table: Self.id))
            try tx.delete(.chain(Chain(name: "x")))
            try adopter.apply(tx, expectedGeneration: nil)
            #expect {
                try Kernel.nft(["add", "chain", "inet", "bulkhead", "y"], in: ns)
            } throws: { "\($0)".contains("Operation not permitted") }
            // And a second live Bulkhead process is told who holds it.
            let other = try NetlinkNetfilter(namespace: ns)
            var tx2 = Transaction(table: Self.id, current: try other.dump(table: Self.id))
            try tx2.add(.chain(Chain(name: "z")))
            do {
                try other.apply(tx2, expectedGeneration: nil)
                Issue.record("a second process changed an owned table")
            } catch RulesetError.tableOwnedByAnotherProcess(let table) {
                #expect(table.contains("bulkhead"), "\(table)")
                #expect("\(RulesetError.tableOwnedByAnotherProcess(table: table))".contains("another running process"))
            } catch {
                Issue.record("expected tableOwnedByAnotherProcess, got \(error)")
            }
        }
    }

    /// Without CAP_NET_ADMIN the error says which privilege is missing.
    @Test func missingCapabilityIsNamed() throws {
        let bench = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("bulkhead-bench").path
        try #require(FileManager.default.isExecutableFile(atPath: bench), "build bulkhead-bench first (swift build --product bulkhead-bench)")
        try Kernel.withNamespace { ns in
            // setpriv (util-linux): drop CAP_NET_ADMIN from the bounding set, so even root lacks it
            // after exec; CAP_SYS_ADMIN stays, so entering the namespace still works.
            let r = try Kernel.run(["setpriv", "--inh-caps=-all", "--bounding-set=-net_admin", "--", bench, "privilege-check", ns])
            #expect(r.status != 0)
            #expect(r.err.contains("needs CAP_NET_ADMIN"), "stderr: \(r.err)")
        }
    }
}

/// Why a large batch goes out as ONE datagram of several pages: nf_tables runs a batch over a
/// single datagram (nfnetlink_rcv_batch), and a datagram without BATCH_END is aborted. This
/// test sends a valid batch split in two datagrams and shows that nothing is created.
@Suite(.serialized, .enabled(if: Kernel.enabled, "needs root"))
struct KernelBatchSplitTests {
    @Test func batchSplitAcrossDatagramsIsNotCommitted() throws {
        try Kernel.withNamespace { ns in
            let socket = try NetfilterSocket(namespace: ns)
            let conn = NetlinkConnection(transport: socket)
            var tx = Transaction(table: TableID(family: .inet, name: "split"), current: nil)
            try tx.add(.table(Table(family: .inet, name: "split")))
            try tx.add(.chain(Chain(name: "c")))
            let batch = try TransactionEncoder().encode(tx, generation: nil, seq: { conn.allocateSeq() })
            let whole = batch.parts.flatMap { Array($0) }
            // Cut after BATCH_BEGIN and the NEWTABLE message.
            let beginLength = Int(whole[0]) | Int(whole[1]) << 8
            let tableOffset = (beginLength + 3) & ~3
            let tableLength = Int(whole[tableOffset]) | Int(whole[tableOffset + 1]) << 8
            let cut = tableOffset + ((tableLength + 3) & ~3)
            let first = Array(whole[..<cut]), second = Array(whole[cut...])
            try first.withUnsafeBytes { try socket.send([$0]) }
            try second.withUnsafeBytes { try socket.send([$0]) }
            // Drain whatever the kernel answered.
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
            defer { buffer.deallocate() }
            while try socket.receive(into: buffer, timeoutMilliseconds: 200) != nil {}
            let tables = try Kernel.nft(["list", "tables"], in: ns)
            #expect(!tables.contains("split"), "a half batch must not be committed: \(tables)")
        }
    }
}
