// Issue 4 benchmarks driven from scripts/bench/enforce.sh:
//
//   bulkhead-bench churn DIR...       one container added / removed, per deployment DIR (gen_scale.py)
//   bulkhead-bench forward DIR        new TCP connections/s through the forward path of a lab host
//   bulkhead-bench render DIR OUT BRIDGE_OUT   the cold-apply script of DIR, for nft -f (scripts/bench/shapes.sh)
//   bulkhead-bench tcp-server ADDR PORT...   child: accept and close, forever
//   bulkhead-bench tcp-connect ADDR PORT COUNT OUT   child: COUNT connect/close, JSON result to OUT
import BulkheadCompiler
import BulkheadEngine
import BulkheadLayout
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import Foundation
#if canImport(Glibc)
import Glibc
#endif

func loadDeployment(_ dir: String) -> (PolicySet, Inventory) {
    let loaded = PolicyLoader.load(paths: [dir + "/policies"])
    if loaded.hasErrors { fail("policies in \(dir) do not load") }
    let (inventory, _) = InventoryLoader.load(path: dir + "/inventory.json")
    guard let inventory else { fail("inventory in \(dir) does not load") }
    return (loaded.policies, inventory)
}

func ms(_ d: Duration) -> Double { seconds(d) * 1000 }

/// `count` new replicas of existing services, on the first segment's network at addresses the
/// generator leaves free (host part 150 and up).
func extraContainers(_ inventory: Inventory, count: Int) -> [Container] {
    let base = inventory.containers.filter { $0.name.hasPrefix("seg000-") }
    guard let net = inventory.networks.first(where: { $0.name == "net000" }) else { fail("no net000") }
    let v4 = net.subnets.first { $0.isIPv4 }!.network, v6 = net.subnets.first { !$0.isIPv4 }!.network
    return (0..<count).map { j in
        let template = base[j % base.count]
        guard case .v4(let n4) = v4, case .v6(let n6) = v6 else { fail("unexpected subnet") }
        let att = Attachment(ipv4: .v4(n4 + UInt32(150 + j)), ipv6: .v6(n6 + UInt128(150 + j)))
        return Container(name: "bench-extra-\(j)", labels: template.labels, networks: ["net000": att])
    }
}

func churn(_ dirs: [String]) throws {
    let extras = 100
    for dir in dirs {
        let (policies, inventory) = loadDeployment(dir)
        let ns = freshNamespace()
        let nf = try NetlinkNetfilter(namespace: ns)
        let planner = Planner()
        let coldStart = ContinuousClock.now
        let cold = try planner.plan(policies: policies, inventory: inventory, backend: nf)
        var generation = try planner.apply(cold, to: nf)
        let coldSeconds = seconds(ContinuousClock.now - coldStart)
        let containers = inventory.containers.count
        let added = extraContainers(inventory, count: extras)

        // Incremental path: inventory change -> element-only transaction -> kernel ack.
        var inc = IncrementalPlanner(policies: policies, inventory: inventory, applied: cold.desired)
        var addTimes: [Double] = [], removeTimes: [Double] = [], sendToAck: [Double] = []
        var fallbacks = 0
        for change in added.map(IncrementalPlanner.Change.added) + added.map(IncrementalPlanner.Change.removed) {
            let t0 = ContinuousClock.now
            guard case .transaction(let tx) = inc.transaction(for: change) else {
                fallbacks += 1
                continue
            }
            generation = try nf.apply(tx, expectedGeneration: generation)
            inc.record(change)
            let t = ms(ContinuousClock.now - t0)
            if case .added = change { addTimes.append(t) } else { removeTimes.append(t) }
            sendToAck.append(ms(nf.lastCommit!.sendToAck))
        }
        if fallbacks > 0 { fail("churn: \(fallbacks) changes needed the full plan") }
        // Check against the kernel: the managed set holds exactly the deployment again.
        let dumped = try nf.dump(table: Planner.tableID)
        let managed = dumped?.set(named: SetName.managed(.v4).name)?.elements.count ?? -1
        if managed != inventory.containers.filter({ c in c.addresses.contains { $0.isIPv4 } }).count {
            fail("churn: managed_v4 has \(managed) elements after adding and removing \(extras)")
        }
        addTimes.sort(); removeTimes.sort(); sendToAck.sort()
        json([("bench", "enforce.container_added"), ("impl", "bulkhead incremental"), ("containers", containers),
              ("services", policies.services.count), ("adds", addTimes.count),
              ("median_ms", percentile(addTimes, 0.5)), ("p99_ms", percentile(addTimes, 0.99)),
              ("remove_median_ms", percentile(removeTimes, 0.5)), ("remove_p99_ms", percentile(removeTimes, 0.99)),
              ("send_to_ack_median_ms", percentile(sendToAck, 0.5)), ("send_to_ack_p99_ms", percentile(sendToAck, 0.99)),
              ("target", "<= 1 ms median, <= 3 ms p99, flat within 20% from 100 to 10,000")])

        // The full path the agent takes today (compile + diff against the cached table), a few
        // samples, for comparison; skipped where one cold plan took more than 20 s.
        if coldSeconds < 20 {
            var current = inventory, live = cold.desired
            var full: [Double] = []
            for c in added.prefix(3) {
                current.containers.append(c)
                let t0 = ContinuousClock.now
                let plan = try planner.plan(policies: policies, inventory: current, live: live, bridgeLive: try nf.dump(table: Planner.bridgeTableID), baseline: .kernel(generation: generation))
                generation = try planner.apply(plan, to: nf)
                full.append(ms(ContinuousClock.now - t0))
                live = plan.desired
            }
            full.sort()
            json([("bench", "enforce.container_added"), ("impl", "full plan (compile+diff)"), ("containers", containers),
                  ("adds", full.count), ("median_ms", percentile(full, 0.5)), ("cold_apply_in_process_s", coldSeconds)])
        } else {
            json([("bench", "enforce.container_added"), ("impl", "full plan (compile+diff)"), ("containers", containers),
                  ("skipped", "cold plan took \(String(format: "%.1f", coldSeconds)) s")])
        }
        _ = runChild(["ip", "netns", "del", ns])
        namespaces.removeAll { $0 == ns }
    }
}

/// The script of a cold apply of deployment DIR from an empty kernel: `inet bulkhead` to OUT, the
/// bridge table to BRIDGE_OUT, for
/// `nft -f` beside `bulkhead apply`, and one JSON line counting what it holds.
func render(_ dir: String, _ out: String, _ bridgeOut: String) throws {
    let (policies, inventory) = loadDeployment(dir)
    let plan = try Planner().plan(policies: policies, inventory: inventory, live: nil, bridgeLive: nil,
                                  baseline: .empty(reason: "benchmark script"))
    try plan.transaction.description.write(toFile: out, atomically: true, encoding: .utf8)
    try plan.bridgeTransaction.description.write(toFile: bridgeOut, atomically: true, encoding: .utf8)
    let tables = [plan.desired, plan.bridgeDesired]
    let sets = tables.flatMap(\.sets)
    let anonymous = tables.flatMap(\.rules).flatMap(\.statements).filter { s in
        if case .match(let m) = s, case .anonymousSet = m.operand { return true }
        return false
    }.count
    json([("bench", "enforce.shape_script"), ("impl", "script"), ("sets", sets.count),
          ("elements", sets.map(\.elements.count).reduce(0, +)), ("chains", tables.map(\.chains.count).reduce(0, +)),
          ("rules", tables.map(\.rules.count).reduce(0, +)), ("anonymous_sets", anonymous),
          ("v6_objects", sets.filter { $0.name.hasSuffix("_v6") }.count), ("operations", plan.operationCount)])
}

// MARK: TCP connection rate

func tcpServer(_ address: String, _ ports: [UInt16]) -> Never {
    var fds: [pollfd] = []
    for port in ports {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, address, &sa.sin_addr)
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 || listen(fd, 4096) != 0 { fail("tcp-server: cannot listen on \(address):\(port): \(String(cString: strerror(errno)))") }
        fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
    }
    print("listening")
    fflush(nil)
    while true {
        if poll(&fds, nfds_t(fds.count), -1) <= 0 { continue }
        for p in fds where p.revents != 0 {
            let c = accept(p.fd, nil, nil)
            if c >= 0 { close(c) }
        }
    }
}

/// One blocking connect; closes with RST (linger 0) so the client keeps no TIME_WAIT.
func connectOnce(_ sa: sockaddr_in, timeoutMs: Int32? = nil) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    if let timeoutMs {
        var tv = timeval(tv_sec: Int(timeoutMs / 1000), tv_usec: Int(timeoutMs % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
    var a = sa
    let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    return rc == 0
}

func tcpConnect(_ address: String, _ port: UInt16, _ count: Int, _ out: String) throws {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    inet_pton(AF_INET, address, &sa.sin_addr)
    if count == 0 {  // probe: does one connection get through within 1 s?
        try (connectOnce(sa, timeoutMs: 1000) ? "open" : "blocked").write(toFile: out, atomically: true, encoding: .utf8)
        return
    }
    var failures = 0
    let t0 = ContinuousClock.now
    for _ in 0..<count where !connectOnce(sa) { failures += 1 }
    let wall = seconds(ContinuousClock.now - t0)
    try "{\"connections\":\(count),\"failures\":\(failures),\"seconds\":\(wall)}".write(toFile: out, atomically: true, encoding: .utf8)
}

func forward(_ dir: String) throws {
    let (policies, deployment) = loadDeployment(dir)
    var inventory = deployment
    let me = selfPath()
    // Client and server: replicas in the last segment, svc0 -> svc9 on tcp/1099 (allowed), the
    // last flow of the policy, so the linear ruleset reaches it only near its end.
    let lastSeg = inventory.containers.map { String($0.name.prefix(6)) }.max()!
    guard let client = inventory.containers.first(where: { $0.name == "\(lastSeg)-svc0-0" }),
          let server = inventory.containers.first(where: { $0.name == "\(lastSeg)-svc9-0" }),
          let netName = client.networks.keys.first,
          let net = inventory.networks.first(where: { $0.name == netName }),
          case .v4(let sv4)? = server.networks[netName]?.ipv4 else { fail("forward: no client/server in \(dir)") }
    let serverAddr = dotted(sv4), port: UInt16 = 1099, deniedPort: UInt16 = 5000
    let lab = try Lab(inventory: Inventory(networks: [net], containers: [client, server]))
    defer { _ = lab.destroy() }
    // Client and server bound to their lab ports (port binding in the path, as with Docker).
    for c in lab.inventory.containers {
        if let i = inventory.containers.firstIndex(where: { $0.name == c.name }) { inventory.containers[i] = c }
    }
    let clientNS = lab.namespace(ofContainer: client.name)!, serverNS = lab.namespace(ofContainer: server.name)!
    let host = lab.hostNamespace

    // The server, a child in the server's namespace.
    let pid = startChild(["ip", "netns", "exec", serverNS, me, "tcp-server", serverAddr, "\(port)", "\(deniedPort)"])
    defer { stopChild(pid) }
    usleep(300_000)

    let out = NSTemporaryDirectory() + "bh-bench-tcp-\(getpid())"
    defer { unlink(out) }
    func probe(_ p: UInt16) -> String {
        _ = runChild(["ip", "netns", "exec", clientNS, me, "tcp-connect", serverAddr, "\(p)", "0", out])
        return (try? String(contentsOfFile: out, encoding: .utf8)) ?? "?"
    }
    func rate(_ count: Int) -> (Double, Int) {
        _ = runChild(["ip", "netns", "exec", clientNS, me, "tcp-connect", serverAddr, "\(port)", "200", out])  // warm-up
        var rates: [Double] = []
        var failures = 0
        for _ in 0..<3 {
            let r = runChild(["ip", "netns", "exec", clientNS, me, "tcp-connect", serverAddr, "\(port)", "\(count)", out])
            guard r.status == 0, let data = FileManager.default.contents(atPath: out),
                  let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let secs = o["seconds"] as? Double, let f = o["failures"] as? Int else { fail("tcp-connect failed") }
            rates.append(Double(count) / secs)
            failures += f
        }
        rates.sort()
        return (rates[1], failures)
    }

    // 1. No ruleset at all in the lab host.
    let (none, noneFail) = rate(20_000)
    json([("bench", "enforce.tcp_connections_per_s"), ("impl", "no ruleset"), ("conn_per_s", none), ("failures", noneFail)])

    // 1b. Connection tracking alone (what any stateful ruleset costs): one forward chain with
    //     `ct state established,related accept` and nothing else.
    let ctFile = out + ".ct.nft"
    try "table inet bench_ct {\n\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n\t\tct state established,related accept\n\t}\n}\n"
        .write(toFile: ctFile, atomically: true, encoding: .utf8)
    defer { unlink(ctFile) }
    guard runChild(["ip", "netns", "exec", host, "nft", "-f", ctFile]).status == 0 else { fail("nft -f (conntrack-only table) failed") }
    let (ctOnly, ctFail) = rate(20_000)
    json([("bench", "enforce.tcp_connections_per_s"), ("impl", "conntrack only (ct state rule)"), ("conn_per_s", ctOnly),
          ("failures", ctFail), ("fraction_of_no_ruleset", ctOnly / none)])
    _ = runChild(["ip", "netns", "exec", host, "nft", "delete", "table", "inet", "bench_ct"])

    // 2. Our table of the whole deployment.
    let nf = try NetlinkNetfilter(namespace: host)
    let planner = Planner()
    let plan = try planner.plan(policies: policies, inventory: inventory, backend: nf)
    try planner.apply(plan, to: nf)
    let allowed = probe(port), denied = probe(deniedPort)
    guard allowed == "open", denied == "blocked" else { fail("forward: our ruleset is not in the path (allowed \(allowed), denied \(denied))") }
    let (ours, oursFail) = rate(20_000)
    json([("bench", "enforce.tcp_connections_per_s"), ("impl", "bulkhead"), ("containers", inventory.containers.count),
          ("conn_per_s", ours), ("failures", oursFail), ("denied_port_blocked", true), ("fraction_of_no_ruleset", ours / none),
          ("bound_ports", plan.bridgeDesired.set(named: SetName.ports.name)?.elements.count ?? 0),
          ("fraction_of_conntrack_only", ours / ctOnly),
          ("target", ">= 0.9 of no ruleset")])
    // 2b. What port binding costs: the same, without the bridge table, right after (same load).
    var btx = Transaction(table: Planner.bridgeTableID, current: Table(family: TableLayout.bridge.family, name: TableLayout.bridge.name))
    try btx.delete(.table(Table(family: TableLayout.bridge.family, name: TableLayout.bridge.name)))
    _ = try nf.apply(btx, expectedGeneration: nil)
    let (inetOnly, inetOnlyFail) = rate(20_000)
    json([("bench", "enforce.tcp_connections_per_s"), ("impl", "bulkhead without port binding (inet table only)"),
          ("conn_per_s", inetOnly), ("failures", inetOnlyFail), ("with_port_binding_over_without", ours / inetOnly)])
    var tx = Transaction(table: Planner.tableID, current: Table(family: TableLayout.inet.family, name: TableLayout.inet.name))
    try tx.delete(.table(Table(family: TableLayout.inet.family, name: TableLayout.inet.name)))
    _ = try nf.apply(tx, expectedGeneration: nil)

    // 3. The same policy as linear rules (nft -f linear.nft).
    // The range form when enforce.sh made it (same rules; the anonymous-set form loads very slowly).
    let linearFile = FileManager.default.fileExists(atPath: dir + "/linear-ranges.nft") ? dir + "/linear-ranges.nft" : dir + "/linear.nft"
    let load = runChild(["ip", "netns", "exec", host, "nft", "-f", linearFile])
    guard load.status == 0 else { fail("nft -f linear.nft failed") }
    let rules = (try? String(contentsOfFile: linearFile, encoding: .utf8))?.split(separator: "\n").filter { $0.contains("tcp dport") }.count ?? 0
    let linearDenied = probe(deniedPort)
    let (linear, linearFail) = rate(2_000)
    json([("bench", "enforce.tcp_connections_per_s"), ("impl", "nft linear rules"), ("file", (linearFile as NSString).lastPathComponent), ("rules", rules), ("conn_per_s", linear),
          ("failures", linearFail), ("denied_port_blocked", linearDenied == "blocked"), ("fraction_of_no_ruleset", linear / none)])
    json([("bench", "enforce.tcp_connections_per_s"), ("impl", "ratio"), ("bulkhead_over_linear", ours / linear),
          ("bulkhead_over_none", ours / none), ("target", ">= 0.9 of no ruleset")])
}

func selfPath() -> String {
    CommandLine.arguments[0].hasPrefix("/") ? CommandLine.arguments[0]
        : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
}
