// bulkhead-bench: netlink benchmarks for scripts/bench-netfilter.sh (JSON lines on stdout).
//
//   bulkhead-bench netfilter                 all three benchmarks, each in fresh namespaces
//   bulkhead-bench commit100k NS             child: commit 100k concatenated elements in NS
//   bulkhead-bench privilege-check NS        child: exit 1 with the error text when not permitted
//
// Needs root (network namespaces). Never touches the host's ruleset.
import BulkheadNetfilter
import BulkheadRuleset
import BulkheadSpawn
import Foundation
#if canImport(Glibc)
import Glibc
#endif

let tableName = "bench"
let tableID = TableID(family: .inet, name: tableName)
let key = KeyType(.ipv4Addr, .ipv4Addr, .inetService)
let elementCount = 100_000

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(1)
}

/// The i-th benchmark element: distinct source, a few hundred destinations, spread ports.
func element(_ i: Int) -> (UInt32, UInt32, UInt16) {
    (0x0A00_0000 | UInt32(i), 0xAC10_0000 | UInt32(i % 977), UInt16(1 + i % 60000))
}

func dotted(_ a: UInt32) -> String { "\(a >> 24).\(a >> 16 & 0xff).\(a >> 8 & 0xff).\(a & 0xff)" }

func modelElements() -> [SetElement] {
    (0..<elementCount).map { i in
        let (s, d, p) = element(i)
        return SetElement(key: [.value(.ipv4(IPv4Address(s))), .value(.ipv4(IPv4Address(d))), .value(.port(p))])
    }
}

func nftScript() -> String {
    var out = "add table inet \(tableName)\nadd set inet \(tableName) flows { type ipv4_addr . ipv4_addr . inet_service; }\n"
    out += "add element inet \(tableName) flows { "
    out += (0..<elementCount).map { i in
        let (s, d, p) = element(i)
        return "\(dotted(s)) . \(dotted(d)) . \(p)"
    }.joined(separator: ", ")
    return out + " }\n"
}

/// The benchmark's triples as 100k iptables rules (what an iptables-based tool would load).
func iptablesScript() -> String {
    var out = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    out.reserveCapacity(elementCount * 80)
    for i in 0..<elementCount {
        let (s, d, p) = element(i)
        out += "-A FORWARD -s \(dotted(s))/32 -d \(dotted(d))/32 -p tcp -m tcp --dport \(p) -j ACCEPT\n"
    }
    return out + "COMMIT\n"
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func json(_ fields: [(String, Any)]) {
    let body = fields.map { k, v -> String in
        switch v {
        case let s as String: return "\"\(k)\":\"\(s)\""
        case let d as Double: return "\"\(k)\":\(String(format: "%.6f", d))"
        default: return "\"\(k)\":\(v)"
        }
    }.joined(separator: ",")
    FileHandle.standardOutput.write(Data("{\(body)}\n".utf8))
}

// MARK: processes

struct ChildResult {
    var status: Int32
    var wall: Double
    var maxRSSKiB: Int
}

/// Starts a child with a clean signal setup (`Spawn`: so SIGTERM stops the agent and tcp-server).
func startChild(_ args: [String], stdout: Spawn.Redirect = .inherit, stderr: Spawn.Redirect = .inherit) -> pid_t {
    do {
        return try Spawn.start(args, stdout: stdout, stderr: stderr)
    } catch {
        fail("\(error)")
    }
}

/// Sends SIGTERM, then SIGKILL if the child has not exited within `grace`, and reaps it.
func stopChild(_ pid: pid_t, grace: Double = 5) {
    kill(pid, SIGTERM)
    var status: Int32 = 0
    let deadline = Date().addingTimeInterval(grace)
    while Date() < deadline {
        if waitpid(pid, &status, WNOHANG) == pid { return }
        usleep(20_000)
    }
    FileHandle.standardError.write(Data("child \(pid) ignored SIGTERM for \(grace) s; killing it\n".utf8))
    kill(pid, SIGKILL)
    waitpid(pid, &status, 0)
}

/// Runs a child and reports its own peak RSS (wait4 rusage: the child and what it waited for).
func runChild(_ args: [String], stdout toNull: Bool = true) -> ChildResult {
    let start = ContinuousClock.now
    let pid = startChild(args, stdout: toNull ? .null : .inherit)
    let ended = Spawn.wait(pid)
    let wall = seconds(ContinuousClock.now - start)
    return ChildResult(status: ended.status, wall: wall, maxRSSKiB: Int(ended.usage.ru_maxrss))
}

func sh(_ args: [String]) {
    let r = runChild(args)
    if r.status != 0 { fail("\(args.joined(separator: " ")) failed (exit \(r.status))") }
}

/// Creates a fresh namespace and removes it when the benchmark ends (also on failure exits
/// through `fail`, via atexit).
nonisolated(unsafe) var namespaces: [String] = []
func freshNamespace() -> String {
    let ns = "bh-nf-bench-\(getpid())-\(namespaces.count)"
    sh(["ip", "netns", "add", ns])
    namespaces.append(ns)
    return ns
}
atexit {
    for ns in namespaces { _ = runChild(["ip", "netns", "del", ns]) }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

// MARK: benchmarks

/// Child: build the model, encode and commit 100k elements in one transaction.
func maxRSSMiB() -> Int {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Int(u.ru_maxrss) / 1024
}

func commit100k(namespace: String) throws {
    let clock = ContinuousClock()
    var rss: [Int] = [maxRSSMiB()]
    let start = clock.now
    let nf = try NetlinkNetfilter(namespace: namespace)
    let opened = clock.now
    rss.append(maxRSSMiB())
    let elements = modelElements()
    let built = clock.now
    rss.append(maxRSSMiB())
    var tx = Transaction(table: tableID, current: nil)
    try tx.add(.table(Table(family: .inet, name: tableName, flags: nf.ownership.tableFlags)))
    try tx.add(.set(NFTSet(name: "flows", key: key)))
    try tx.add(.elements(set: "flows", elements))
    let queued = clock.now
    rss.append(maxRSSMiB())
    try nf.apply(tx, expectedGeneration: try nf.generation())
    let done = clock.now
    let stats = nf.lastCommit!
    rss.append(maxRSSMiB())
    // Where the child's time and memory go, for the report (the parent measures the totals).
    json([("bench", "netfilter.commit_100k_concat.phases"), ("impl", "bulkhead"),
          ("messages", stats.messages), ("bytes", stats.bytes), ("pages", stats.pages),
          ("open_and_probe_s", seconds(opened - start)), ("build_elements_s", seconds(built - opened)),
          ("transaction_validation_s", seconds(queued - built)), ("apply_s", seconds(done - queued)),
          ("encode_s", seconds(done - queued) - seconds(stats.sendToAck)), ("send_to_ack_s", seconds(stats.sendToAck)),
          ("rss_mb_after_elements", rss[2]), ("rss_mb_after_transaction", rss[3]), ("rss_mb_end", rss[4])])
}

func benchmarkAll() throws {
    let me = CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
        : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]

    // (a) commit 100k concatenated elements: us vs nft -f, each a child process in a fresh netns.
    let nsOurs = freshNamespace()
    let ours = runChild([me, "commit100k", nsOurs], stdout: false)
    guard ours.status == 0 else { fail("commit100k child failed (exit \(ours.status))") }
    let nsNft = freshNamespace()
    let script = NSTemporaryDirectory() + "bh-bench-\(getpid()).nft"
    try nftScript().write(toFile: script, atomically: true, encoding: .utf8)
    defer { unlink(script) }
    let nft = runChild(["ip", "netns", "exec", nsNft, "nft", "-f", script])
    guard nft.status == 0 else { fail("nft -f failed (exit \(nft.status))") }
    json([("bench", "netfilter.commit_100k_concat"), ("impl", "bulkhead"), ("wall_s", ours.wall), ("peak_rss_mb", Double(ours.maxRSSKiB) / 1024)])
    json([("bench", "netfilter.commit_100k_concat"), ("impl", "nft -f"), ("wall_s", nft.wall), ("peak_rss_mb", Double(nft.maxRSSKiB) / 1024)])
    // iptables-restore of the same 100k (source, destination, port) triples as plain rules, in
    // fresh namespaces: the nf_tables backend (Debian's default) and the legacy one.
    let iptFile = NSTemporaryDirectory() + "bh-bench-\(getpid()).iptables"
    try iptablesScript().write(toFile: iptFile, atomically: true, encoding: .utf8)
    defer { unlink(iptFile) }
    for (tool, label) in [("iptables-nft-restore", "iptables-restore (nf_tables)"), ("iptables-legacy-restore", "iptables-restore (legacy)")] {
        let r = runChild(["ip", "netns", "exec", freshNamespace(), tool, iptFile])
        if r.status != 0 {
            json([("bench", "netfilter.commit_100k_concat"), ("impl", label), ("skipped", "\(tool) exit \(r.status)")])
            continue
        }
        json([("bench", "netfilter.commit_100k_concat"), ("impl", label), ("rules", elementCount), ("wall_s", r.wall), ("peak_rss_mb", Double(r.maxRSSKiB) / 1024)])
    }
    json([("bench", "netfilter.commit_100k_concat"), ("impl", "ratio"), ("speedup", nft.wall / ours.wall),
          ("rss_fraction", Double(ours.maxRSSKiB) / Double(nft.maxRSSKiB)), ("target", ">=3x faster, <=0.5 of nft's peak RSS")])

    // (b) add / remove one element in the 100k set: send → ack, and the whole apply().
    let nf = try NetlinkNetfilter(namespace: nsOurs)
    let definition = NFTSet(name: "flows", key: key)
    let base = Table(family: .inet, name: tableName, flags: nf.ownership.tableFlags, sets: [definition])
    var sendToAck: [Double] = [], applyTotal: [Double] = []
    for i in 0..<200 {
        let e = SetElement(.ipv4(IPv4Address(0xC0A8_0000 | UInt32(i))), .ipv4(IPv4Address(0x0808_0808)), .port(53))
        var withElement = base
        withElement.sets[0].setElements([e])
        // The transaction is validated against just the set definition (+ the element for the
        // delete): this measures the netlink path, not the model's validation of a 100k set.
        var add = Transaction(table: tableID, current: base)
        try add.add(.elements(set: "flows", [e]))
        var del = Transaction(table: tableID, current: withElement)
        try del.delete(.elements(set: "flows", [e]))
        for tx in [add, del] {
            let t0 = ContinuousClock.now
            try nf.apply(tx, expectedGeneration: nil)
            applyTotal.append(seconds(ContinuousClock.now - t0) * 1000)
            sendToAck.append(seconds(nf.lastCommit!.sendToAck) * 1000)
        }
    }
    sendToAck.sort(); applyTotal.sort()
    json([("bench", "netfilter.element_op_in_100k_set"), ("impl", "bulkhead"), ("ops", sendToAck.count),
          ("send_to_ack_median_ms", percentile(sendToAck, 0.5)), ("send_to_ack_p99_ms", percentile(sendToAck, 0.99)),
          ("apply_median_ms", percentile(applyTotal, 0.5)), ("apply_p99_ms", percentile(applyTotal, 0.99)),
          ("target", "median <= 1 ms send->ack")])

    // (c) dump the 100k table: our netlink dump into the model vs `nft -j list table`.
    var dumps: [Double] = []
    var torn = 0
    for _ in 0..<7 {
        let t0 = ContinuousClock.now
        guard let t = try nf.dump(table: tableID), t.sets.first?.elements.count == elementCount else { fail("dump lost elements") }
        dumps.append(seconds(ContinuousClock.now - t0))
        torn += nf.lastDump?.tornElementDumps ?? 0
    }
    var nftDumps: [Double] = []
    var nftRSS = 0
    for _ in 0..<7 {
        let r = runChild(["ip", "netns", "exec", nsOurs, "nft", "-j", "list", "table", "inet", tableName])
        guard r.status == 0 else { fail("nft -j list table failed") }
        nftDumps.append(r.wall)
        nftRSS = max(nftRSS, r.maxRSSKiB)
    }
    dumps.sort(); nftDumps.sort()
    json([("bench", "netfilter.dump_100k"), ("impl", "bulkhead"), ("median_s", percentile(dumps, 0.5)), ("min_s", dumps.first!),
          ("max_s", dumps.last!), ("torn_rereads", torn),
          ("target", "<= 0.5 s")])
    json([("bench", "netfilter.dump_100k"), ("impl", "nft -j"), ("median_s", percentile(nftDumps, 0.5)), ("min_s", nftDumps.first!),
          ("max_s", nftDumps.last!),
          ("peak_rss_mb", Double(nftRSS) / 1024)])
}

// MARK: main

let args = Array(CommandLine.arguments.dropFirst())
do {
    switch args.first {
    case "netfilter"?, nil:
        guard getuid() == 0 else { fail("bulkhead-bench netfilter needs root (it creates network namespaces)") }
        try benchmarkAll()
    case "commit100k"?:
        guard args.count == 2 else { fail("usage: bulkhead-bench commit100k NETNS") }
        try commit100k(namespace: args[1])
    case "dump"?:
        // bulkhead-bench dump NETNS [N]: time N dumps of the benchmark table.
        let nf = try NetlinkNetfilter(namespace: args[1])
        for _ in 0..<(args.count > 2 ? Int(args[2]) ?? 1 : 1) {
            let t0 = ContinuousClock.now
            let t = try nf.dump(table: tableID)
            print("sets \(t?.sets.map { "\($0.name):\($0.elements.count)" } ?? []) in \(ContinuousClock.now - t0), torn re-reads \(nf.lastDump?.tornElementDumps ?? 0)")
        }
    case "churn"?:
        guard getuid() == 0, args.count >= 2 else { fail("usage: bulkhead-bench churn DIR... (root)") }
        try churn(Array(args.dropFirst()))
    case "reconcile"?:
        guard getuid() == 0, args.count >= 2 else { fail("usage: bulkhead-bench reconcile DIR... (root)") }
        try reconcileBench(Array(args.dropFirst()))
    case "forward"?:
        guard getuid() == 0, args.count == 2 else { fail("usage: bulkhead-bench forward DIR (root)") }
        try forward(args[1])
    case "render"?:
        guard args.count == 4 else { fail("usage: bulkhead-bench render DIR OUT BRIDGE_OUT") }
        try render(args[1], args[2], args[3])
    case "tcp-server"?:
        guard args.count >= 3 else { fail("usage: bulkhead-bench tcp-server ADDR PORT...") }
        tcpServer(args[1], args.dropFirst(2).map { UInt16($0)! })
    case "tcp-connect"?:
        guard args.count == 5, let port = UInt16(args[2]), let count = Int(args[3]) else { fail("usage: bulkhead-bench tcp-connect ADDR PORT COUNT OUT") }
        try tcpConnect(args[1], port, count, args[4])
    case "docker"?:
        guard getuid() == 0 else { fail("bulkhead-bench docker needs root") }
        try await dockerBenchmarks(Array(args.dropFirst()))
    case "agent-scale"?:
        guard getuid() == 0 else { fail("bulkhead-bench agent-scale needs root (it creates a network namespace)") }
        try await agentScale(Array(args.dropFirst()))
    case "privilege-check"?:
        guard args.count == 2 else { fail("usage: bulkhead-bench privilege-check NETNS") }
        let nf = try NetlinkNetfilter(namespace: args[1])
        _ = try nf.generation()
        print("ok: ownership \(nf.ownership)")
    default:
        fail("usage: bulkhead-bench [netfilter | commit100k NETNS | churn DIR... | forward DIR | render DIR OUT BRIDGE_OUT | docker ... | agent-scale [EVENTS [SEED]] | privilege-check NETNS]")
    }
} catch {
    fail("bulkhead-bench: \(error)")
}
