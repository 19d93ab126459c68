// Issue 10, item 2: what one container event costs the agent's reconcile, driven from the
// command line (not yet from scripts/bench.sh):
//
//   bulkhead-bench reconcile DIR...   per deployment DIR (gen_scale.py), in a fresh namespace:
//     the reconciler's element step + commit + record per container added / removed, and the
//     full plan the agent ran per event before it (compile, diff, semantic diff) + commit.
import BulkheadEngine
import BulkheadInventory
import BulkheadNetfilter
import BulkheadRuleset
import BulkheadSource
import Foundation

func reconcileBench(_ dirs: [String]) throws {
    let extras = 100
    for dir in dirs {
        let (policies, inventory) = loadDeployment(dir)
        let ns = freshNamespace()
        let nf = try NetlinkNetfilter(namespace: ns)
        var index = EndpointIndex(inventory)
        var reconciler = Reconciler()
        let live: Reconciler.Change = .kernel(live: try nf.dump(table: Planner.tableID), bridgeLive: try nf.dump(table: Planner.bridgeTableID),
                                              generation: try nf.generation())
        let cold = try reconciler.step(policies: policies, index: index, change: live)
        reconciler.record(cold, generation: try nf.apply(cold.transactions, expectedGeneration: cold.expectedGeneration))
        let added = extraContainers(inventory, count: extras)
        var addTimes: [Double] = [], removeTimes: [Double] = []
        var fallbacks = 0
        for (i, c) in (added + added).enumerated() {
            let adding = i < extras
            let t0 = ContinuousClock.now
            index.update(c.name, to: adding ? c : nil)
            let step = try reconciler.step(policies: policies, index: index, change: .containers([c.name]))
            if step.kind == .full { fallbacks += 1 }
            let g = try nf.apply(step.transactions, expectedGeneration: nil)
            reconciler.record(step, generation: g)
            let t = ms(ContinuousClock.now - t0)
            if adding { addTimes.append(t) } else { removeTimes.append(t) }
        }
        addTimes.sort(); removeTimes.sort()
        json([("bench", "agent.reconcile_container_event"), ("impl", "reconciler (elements)"), ("containers", inventory.containers.count),
              ("services", policies.services.count), ("events", addTimes.count + removeTimes.count), ("fallbacks", fallbacks),
              ("add_median_ms", percentile(addTimes, 0.5)), ("add_p99_ms", percentile(addTimes, 0.99)),
              ("remove_median_ms", percentile(removeTimes, 0.5)), ("remove_p99_ms", percentile(removeTimes, 0.99))])

        // Before: every event ran the full plan (with its semantic diff) against the last commit.
        var full: [Double] = []
        var current = inventory, applied = reconciler.applied!.table, bridge = reconciler.applied!.bridge
        var generation = try nf.generation()
        for c in added.prefix(3) {
            current.containers.append(c)
            let t0 = ContinuousClock.now
            let plan = try Planner().plan(policies: policies, inventory: current, live: applied, bridgeLive: bridge, baseline: .kernel(generation: generation))
            generation = try nf.apply(plan.transactions, expectedGeneration: nil)
            full.append(ms(ContinuousClock.now - t0))
            (applied, bridge) = (plan.desired, plan.bridgeDesired)
        }
        full.sort()
        json([("bench", "agent.reconcile_container_event"), ("impl", "full plan per event (before)"), ("containers", inventory.containers.count),
              ("events", full.count), ("median_ms", percentile(full, 0.5))])
        _ = runChild(["ip", "netns", "del", ns])
        namespaces.removeAll { $0 == ns }
    }
}
