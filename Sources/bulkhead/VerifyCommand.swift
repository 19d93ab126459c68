import ArgumentParser
import BulkheadEngine
import BulkheadEscaping
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import Foundation

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Prove the policies by traffic: build a lab of network namespaces from the inventory, apply, probe every pair, compare with the evaluator.",
        discussion: """
        Each container of the inventory becomes a network namespace on a bridge per network, with a
        'world' namespace routed through the lab's host namespace, where the policies are applied through
        netlink. Every party then probes every address of every other party (TCP connect, UDP echo, ICMP
        echo; IPv4 and IPv6) on each port the policies name plus tcp/22, and each answer is compared with
        what `bulkhead explain` would say. The lab is removed afterwards. Needs root. Touches nothing outside
        the lab's namespaces.

        Exit codes: 0 every probe matches; 1 a mismatch or an error; 64 usage; 66 unreadable input.
        """
    )

    @OptionGroup var source: SourceOptions

    @Flag(help: "Print what each party may reach (the allowed/denied matrix).")
    var matrix = false

    @Flag(help: "Print the plan applied to the lab (flows opened, nftables operations).")
    var showPlan = false

    @Option(help: "Probe timeout in milliseconds (a dropped probe waits this long).")
    var timeout: Int = 300

    func validate() throws {
        if source.netns != nil { throw ValidationError("verify builds its own lab namespaces; --netns does not apply") }
    }

    func run() throws {
        do {
            let policies = try Inputs.policies(source)
            var inventory = try Inputs.inventory(source)
            _ = try? Lab.cleanupStale()
            Inputs.note("building a lab of \(inventory.containers.count) containers on \(inventory.networks.count) networks…")
            let lab = try Lab(inventory: inventory)
            defer { _ = lab.destroy() }
            // The lab's view adds each network's bridge and each container's MAC and port (port binding).
            inventory = lab.inventory
            inventory.hostAddresses = lab.addresses(of: .host)
            let backend = try NetlinkNetfilter(namespace: lab.hostNamespace)
            for line in try BridgeNetfilter.ensureEnabled(namespace: lab.hostNamespace) { Inputs.note(line) }
            let planner = Planner()
            let plan = try planner.plan(policies: policies, inventory: inventory, backend: backend)
            if showPlan { print(Escape.terminalLines(PlanOutput.text(plan, nft: false))) }
            try planner.apply(plan, to: backend)
            try TestHooks.UnenforcedLab()?.removeTables(backend)
            print("Applied to lab \(lab.name): \(plan.operationCount) operations, \(plan.opened.count) flows.")

            let runner = ProbeRunner(lab: lab, options: .init(timeout: .milliseconds(timeout)))
            defer { runner.stopServers() }
            let evaluator = Evaluator(policies: policies, inventory: inventory)
            let traffic = probeTraffic(for: policies)
            let started = Date()
            let rows = try runner.verify(evaluator, traffic: traffic, linkLocal: true)
            let seconds = Date().timeIntervalSince(started)
            let mismatches = rows.filter { !$0.matches }
            let passed = rows.filter(\.passed).count
            let dropped = rows.filter(\.dropped).count
            // Refused (a reset, port unreachable) or another ICMP error: the packet got somewhere, so
            // it is neither an answer nor a drop, and always a mismatch.
            let other = rows.count - passed - dropped
            if matrix { print(Self.matrix(rows, lab: lab)) }
            print("Probed \(rows.count) connections (\(traffic.map(\.description).joined(separator: ", ")); IPv4, IPv6 and link-local) in \(String(format: "%.1f", seconds)) s: \(passed) answered, \(dropped) dropped"
                  + (other > 0 ? ", \(other) refused or unreachable." : "."))
            if mismatches.isEmpty {
                print("Every probe matches the policies.")
            } else {
                print("\(mismatches.count) probes disagree with the policies:")
                for m in mismatches { print("  \(m)") }
                throw ExitCode(ExitStatus.failure)
            }
        } catch let r as Reported {
            throw ExitCode(r.status)
        } catch let e as NetfilterError {
            throw Inputs.kernelFailure(e)
        } catch let e as RulesetError {
            throw Inputs.kernelFailure(e)
        } catch let e as LabError {
            Inputs.printError("\(e)")
            throw ExitCode(ExitStatus.failure)
        }
    }

    /// For each source, the destinations and ports it reached (IPv4 probes; IPv6 agree or show as mismatches).
    static func matrix(_ rows: [TruthTableRow], lab: Lab) -> String {
        var lines = ["", "What each party reaches (IPv4; + answered, - dropped, ! refused or unreachable):"]
        let v4 = rows.filter { $0.result.probe.to.isIPv4 }
        let bySource = Dictionary(grouping: v4) { $0.result.probe.from }
        for from in bySource.keys.sorted() {
            lines.append("  \(from):")
            let byTarget = Dictionary(grouping: bySource[from]!) { lab.owner(of: $0.result.probe.to)?.description ?? $0.result.probe.to.description }
            for to in byTarget.keys.sorted() {
                var seen = Set<String>()
                let marks = byTarget[to]!.sorted { $0.result.probe.traffic.description < $1.result.probe.traffic.description }.compactMap { r -> String? in
                    let t = r.result.probe.traffic.description
                    guard seen.insert(t).inserted else { return nil }
                    return (r.passed ? "+" : r.dropped ? "-" : "!") + t
                }
                let allowed = marks.filter { !$0.hasPrefix("-") }  // what got there, answered or not
                lines.append("    → \(to.padding(toLength: 24, withPad: " ", startingAt: 0)) \(allowed.isEmpty ? "(nothing)" : allowed.joined(separator: " "))")
            }
        }
        return lines.joined(separator: "\n")
    }
}
