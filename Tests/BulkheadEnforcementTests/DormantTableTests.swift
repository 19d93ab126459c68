import BulkheadEngine
import BulkheadInventory
import BulkheadLab
import BulkheadNetfilter
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Testing

/// A dormant table enforces nothing: proved by traffic, and repaired by the next apply.
///
/// The policies are applied by a process that then exits (the table stays, orphaned); an
/// administrator saves the ruleset and restores it with `flags dormant`. A denied flow then gets
/// through. Planning against that table used to say "No changes" (the planner copied the live
/// flags into the desired table) — now the plan replaces the table and the flow is dropped again.
@Test func dormantTableIsRepairedAndEnforcesAgain() throws {
    try TestSystem.requireRoot("an enforcement test")
    var inventory = try exampleInventory()
    let lab = try Lab(inventory: inventory)
    let runner = ProbeRunner(lab: lab)
    defer {
        runner.stopServers()
        _ = lab.destroy()
    }
    inventory.hostAddresses = lab.addresses(of: .host)
    _ = try BridgeNetfilter.ensureEnabled(namespace: lab.hostNamespace)
    let policies = try examplePolicies()
    do {
        let first = try NetlinkNetfilter(namespace: lab.hostNamespace)
        let plan = try Planner().plan(policies: policies, inventory: inventory, backend: first)
        try Planner().apply(plan, to: first)
    }
    let db = IPAddress("172.20.0.6")!
    let denied = Probe(from: .container("shop-frontend-1"), to: db, traffic: .tcp(5432))
    let allowed = Probe(from: .container("shop-api-1"), to: db, traffic: .tcp(5432))
    try runner.startServers(for: [denied, allowed])
    #expect(try runner.run([denied, allowed]).map(\.outcome) == [.timedOut, .answered])

    // Save and restore the table with `flags dormant`.
    let ns = lab.hostNamespace
    var lines = try TestSystem.nft(["list", "table", "inet", "bulkhead"], in: ns).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines[1].trimmingCharacters(in: .whitespaces).hasPrefix("flags") { lines[1] = "\tflags dormant" } else { lines.insert("\tflags dormant", at: 1) }
    try TestSystem.nft(["delete", "table", "inet", "bulkhead"], in: ns)
    try TestSystem.nft(["-f", "-"], in: ns, stdin: lines.joined(separator: "\n"))
    #expect(try runner.run([denied]).map(\.outcome) == [.answered], "a dormant table lets the denied flow through")

    let backend = try NetlinkNetfilter(namespace: ns)
    let plan = try Planner().plan(policies: policies, inventory: inventory, backend: backend)
    #expect(plan.hasChanges, "a dormant table is not 'No changes'")
    #expect(plan.live?.flags.contains(.dormant) == true)
    switch plan.tableChange {
    case .replace(let was, let now)?:
        #expect(was == [.dormant] && now == backend.managedTableFlags)
    case .flags(let was, let now)?:
        #expect(was.contains(.dormant) && !now.contains(.dormant) && backend.managedTableFlags.isEmpty)
    default:
        Issue.record("expected the table to be replaced or its flags repaired, got \(String(describing: plan.tableChange))")
    }
    try Planner().apply(plan, to: backend)
    #expect(try backend.dump(table: Planner.tableID)?.flags.contains(.dormant) == false)
    #expect(try runner.run([denied, allowed]).map(\.outcome) == [.timedOut, .answered])
    #expect(try Planner().plan(policies: policies, inventory: inventory, backend: backend).hasChanges == false)
}
