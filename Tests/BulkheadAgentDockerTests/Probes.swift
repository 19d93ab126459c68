import BulkheadInventory
import BulkheadPolicy
import BulkheadTestSupport
import Foundation

/// What a probe tries.
enum ProbeKind: String, Sendable, Hashable, CaseIterable {
    case db = "tcp/5432"
    case web = "tcp/8080"
    case ping = "icmp"

    var traffic: Traffic {
        switch self {
        case .db: .tcp(5432)
        case .web: .tcp(8080)
        case .ping: .icmp
        }
    }

    /// A busybox command that succeeds only when the server (or the echo) answered.
    func command(_ address: IPAddress) -> String {
        switch self {
        case .db: "nc -w 1 \(address) 5432 </dev/null 2>/dev/null | grep -q ok5432"
        case .web: "nc -w 1 \(address) 8080 </dev/null 2>/dev/null | grep -q ok8080"
        case .ping: "ping -c 1 -W 1 \(address) >/dev/null 2>&1"
        }
    }
}

/// One connection attempt from inside a container (`docker exec`) to another's address.
struct Probe: Sendable, Hashable, CustomStringConvertible {
    var source: String
    var sourceAddress: IPAddress
    var destination: String
    var address: IPAddress
    var kind: ProbeKind

    var description: String { "\(source) → \(destination) \(address) \(kind.rawValue)" }
}

/// Runs probes, one `docker exec` per source container, all of its probes in parallel inside it
/// (a denied probe costs the 1 s timeout: the table drops, it does not reject).
func run(_ probes: [Probe]) async throws -> [Probe: Bool] {
    let bySource = Dictionary(grouping: probes, by: \.source)
    return try await withThrowingTaskGroup(of: [Probe: Bool].self) { group in
        for (source, list) in bySource {
            group.addTask {
                let script = list.enumerated().map { i, p in "(\(p.kind.command(p.address)) && echo 'P\(i) 1' || echo 'P\(i) 0') &" }
                    .joined(separator: "\n") + "\nwait\n"
                let out = try await Command.check(["docker", "exec", source, "sh", "-c", script])
                var results: [Probe: Bool] = [:]
                for line in out.split(separator: "\n") {
                    let f = line.split(separator: " ")
                    guard f.count == 2, f[0].hasPrefix("P"), let i = Int(f[0].dropFirst()), list.indices.contains(i) else { continue }
                    results[list[i]] = f[1] == "1"
                }
                guard results.count == list.count else {
                    throw TestSystem.Failure("probes from \(source): \(results.count) of \(list.count) answered; output: \(out.prefix(500))")
                }
                return results
            }
        }
        var all: [Probe: Bool] = [:]
        for try await part in group { all.merge(part) { a, _ in a } }
        return all
    }
}

/// The outcome of one probe matrix against the evaluator.
struct MatrixOutcome: Sendable, CustomStringConvertible {
    var probes = 0
    var allowed = 0
    /// Probes the evaluator denies that connected: a hole. Never retried.
    var openButDenied: [String] = []
    /// Probes the evaluator allows that failed twice (the first failure is retried once: a busy
    /// 2-core host can miss a 1 s timeout).
    var closedButAllowed: [String] = []
    var retried = 0
    var duration: Duration = .zero

    var matches: Bool { openButDenied.isEmpty && closedButAllowed.isEmpty }

    var description: String {
        "\(probes) probes (\(allowed) allowed, \(probes - allowed) denied) in \(ms(duration))"
            + (retried > 0 ? ", \(retried) allowed probe(s) retried once" : "")
            + (matches ? ", all equal to the evaluator" : ", MISMATCHES: open but denied \(openButDenied), closed but allowed \(closedButAllowed)")
    }
}

/// Probes from each of `sources` to every other container of the network, v4 and v6, on
/// tcp/5432, tcp/8080 and icmp, and compares each answer with the evaluator's decision over
/// `policies` and Docker's inventory now.
func probeMatrix(from sources: [String], network: TestNetwork, policies: PolicySet, inventory: Inventory) async throws -> MatrixOutcome {
    let clock = ContinuousClock(), start = clock.now
    let evaluator = Evaluator(policies: policies, inventory: inventory)
    let members = inventory.containers.filter { $0.networks[network.name] != nil }
    var probes: [Probe] = []
    for name in sources {
        guard let source = members.first(where: { $0.name == name }), let from = source.networks[network.name] else {
            throw TestSystem.Failure("probe source \(name) is not on \(network.name) in Docker's inventory")
        }
        for destination in members where destination.name != name {
            guard let to = destination.networks[network.name] else { continue }
            for (a, b) in [(from.ipv4, to.ipv4), (from.ipv6, to.ipv6)] {
                guard let a, let b else { continue }
                for kind in ProbeKind.allCases {
                    probes.append(Probe(source: name, sourceAddress: a, destination: destination.name, address: b, kind: kind))
                }
            }
        }
    }
    func expected(_ p: Probe) -> Bool {
        evaluator.evaluate(from: .address(p.sourceAddress), to: .address(p.address), p.kind.traffic).passes
    }
    var outcome = MatrixOutcome()
    let observed = try await run(probes)
    var retry: [Probe] = []
    for p in probes {
        let want = expected(p), got = observed[p] ?? false
        outcome.probes += 1
        if want { outcome.allowed += 1 }
        if got && !want { outcome.openButDenied.append("\(p): \(evaluator.evaluate(from: .address(p.sourceAddress), to: .address(p.address), p.kind.traffic).reason)") }
        if want && !got { retry.append(p) }
    }
    if !retry.isEmpty {
        outcome.retried = retry.count
        let again = try await run(retry)
        outcome.closedButAllowed = retry.filter { again[$0] != true }.map { "\($0)" }
    }
    outcome.duration = clock.now - start
    return outcome
}
