import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import Foundation
import Glibc
import Synchronization
import Testing

@Suite(.serialized) struct AgentPolicyReloads {
    /// A FIFO named `x.yaml` once hung the reload in open() for ever while /readyz said ready.
    @Test func fifoIsReportedAndLaterReloadsWork() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        let fifo = dir.path + "/x.yaml"
        // On a loader that blocks in open(), give it a writer and then EOF, so the test ends.
        defer {
            let w = open(fifo, O_RDWR | O_NONBLOCK)
            if w >= 0 { close(w) }
        }
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            #expect(mkfifo(fifo, 0o644) == 0)
            #expect(await eventually(10) { !agent.isReady }, "a FIFO in the policy directory went unnoticed")
            #expect(agent.readinessProblem().contains("x.yaml:1:1: error[unreadable]: a FIFO, not a regular file"))
            #expect(agent.metrics.value("bulkhead_policy_reloads_total", labels: ["result": "invalid"]) == 1)
            // Reloads go on: remove the FIFO, edit a policy, and the edit is enforced.
            #expect(unlink(fifo) == 0)
            let good = try dir.read("shop.yaml")
            try dir.write("shop.yaml", good.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [tcp/5433]"))
            #expect(await eventually { inSync(backend, dir, inventory) && agent.isReady })
        }
    }

    /// StrictModes: a policy file others can write, or another user owns, is refused (the last
    /// good policies stay), and enforced again once its permissions are fixed.
    @Test func insecurePolicyFilesAreRefused() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        let file = dir.path + "/shop.yaml"
        try await withAgent(dir, backend: backend, source: source) { agent in
            #expect(await eventually { agent.isReady })
            let before = try backend.dump(table: Planner.tableID)
            let good = try dir.read("shop.yaml")
            // The file becomes world-writable, and someone edits it in place.
            #expect(chmod(file, 0o666) == 0)
            try dir.write("shop.yaml", good.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [tcp/5433]"), atomically: false)
            #expect(await eventually(10) { !agent.isReady })
            #expect(agent.readinessProblem().contains("policies refused: 1 insecure file permission"))
            #expect(agent.readinessProblem().contains("writable by everyone"))
            #expect(agent.metrics.value("bulkhead_policy_reloads_total", labels: ["result": "refused"]) ?? 0 >= 1)
            #expect(same(before, try backend.dump(table: Planner.tableID)), "a world-writable policy was enforced")

            // Owned by nobody (changed in this order, so the file is never safe in between).
            #expect(chown(file, 65534, 65534) == 0 && chmod(file, 0o644) == 0)
            #expect(await eventually(10) { agent.readinessProblem().contains("owned by uid 65534") })
            #expect(same(before, try backend.dump(table: Planner.tableID)), "a policy owned by nobody was enforced")

            #expect(chown(file, 0, 0) == 0)
            #expect(await eventually { inSync(backend, dir, inventory) && agent.isReady })
        }
    }

    /// A reload that does not finish (a hung filesystem) is reported, does not block the agent,
    /// and its result is taken when it ends.
    @Test func stalledReloadIsReported() async throws {
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        let gate = ReloadGate()
        defer { gate.open() }
        try await withAgent(dir, backend: backend, source: source, configure: { c in
            c.policyReloadTimeout = .milliseconds(200)
            c.loadPolicyFiles = { found in
                gate.passOrWait()
                return PolicyLoader.load(found)
            }
        }) { agent in
            #expect(await eventually { agent.isReady })
            gate.close()
            let good = try dir.read("shop.yaml")
            try dir.write("shop.yaml", good.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [tcp/5433]"))
            #expect(await eventually(10) { !agent.isReady })
            #expect(agent.readinessProblem().contains("policy reload stalled"))
            #expect(agent.metrics.value("bulkhead_policy_reloads_total", labels: ["result": "stalled"]) == 1)
            // The agent's other work goes on meanwhile: Docker churn is still enforced.
            source.remove("shop-api-2")
            let gone = SetElement(.ipv4(IPv4Address("172.20.0.4")!))
            #expect(await eventually { (try? backend.dump(table: Planner.tableID)?.set(named: "svc_shop_api_v4")?.elements.contains(gone)) == false })
            gate.open()
            #expect(await eventually { inSync(backend, dir, source.currentInventory) && agent.isReady })
        }
    }
}

/// Lets reloads through while open; while closed, a reload waits until it opens.
final class ReloadGate: Sendable {
    private let closed = Mutex(false)
    private let released = DispatchSemaphore(value: 0)

    func close() { closed.withLock { $0 = true } }

    func open() {
        let was = closed.withLock { c in
            defer { c = false }
            return c
        }
        if was { for _ in 0..<8 { released.signal() } }
    }

    func passOrWait() {
        if closed.withLock({ $0 }) { released.wait() }
    }
}
