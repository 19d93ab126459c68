import BulkheadCompiler
import BulkheadConntrack
import BulkheadDocker
import BulkheadEngine
import BulkheadEscaping
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset
import BulkheadYAML
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Settings of `bulkhead agent`.
public struct AgentConfiguration: Sendable {
    public var policyPaths: [String]
    public var listenHost: String = "127.0.0.1"
    /// 0 picks a free port (tests).
    public var listenPort: Int = 9641
    /// Full compare with the kernel (drift repair) at least this often.
    public var resyncInterval: Duration = .seconds(30)
    /// How often the ruleset generation is read to notice other writers. It bounds how long a
    /// table deleted behind our back (`nft flush ruleset` on a kernel without table ownership, or
    /// while no agent held it) stays open before the repair: one GETGEN round trip, cheap at 10/s.
    public var generationPollInterval: Duration = .milliseconds(100)
    public var policyPollInterval: Duration = .milliseconds(500)
    /// Backoff after a failure (Docker unreachable, kernel refused): doubles from min to max. The
    /// cap bounds how long the agent takes to notice that Docker answers again.
    public var minimumBackoff: Duration = .milliseconds(100)
    public var maximumBackoff: Duration = .milliseconds(500)
    /// A container list that has not answered within this long is reported (readiness) and
    /// another one starts beside it, up to `maximumConcurrentLists`; the first answer wins.
    public var listHedgeInterval: Duration = .seconds(1)
    public var maximumConcurrentLists = 3
    /// Timeouts, size and connection limits of the HTTP port.
    public var http = HTTPEndpoint.Limits()
    /// A policy reload still running after this long is reported as stalled (log, metric, /readyz).
    public var policyReloadTimeout: Duration = .seconds(10)
    /// Reads the policy files a walk found (tests inject a slow one).
    public var loadPolicyFiles: @Sendable (PolicyFiles) -> PolicyLoader.Result = { PolicyLoader.load($0) }

    public init(policyPaths: [String]) {
        self.policyPaths = policyPaths
    }
}

/// The host agent: keeps the kernel's `inet bulkhead` table equal to what the policies say about
/// the containers Docker runs, within milliseconds of each change.
///
/// - It reconciles on Docker events, on policy file changes, when the ruleset generation moves
///   without it, and periodically; reasons that arrive during a reconcile coalesce.
/// - An invalid policy edit is reported with the same diagnostics as `validate`; the last good
///   policies stay enforced.
/// - It never programs from an empty or partial container list: while Docker is unreachable the
///   rules stay as they are, readiness is false, and it retries with backoff.
/// - When it stops, the rules stay in the kernel (fail static); `bulkhead uninstall` removes them.
public final class Agent: ServiceLifecycle.Service, Sendable {
    public let configuration: AgentConfiguration
    public let metrics = MetricsRegistry()
    let backend: any NetfilterBackend
    /// Connection tracking of the namespace `backend` programs: after a commit, established
    /// connections the policies now deny are cut there (nil: nothing is cut).
    let connections: (any ConnectionTracking)?
    let source: any ContainerSource
    let logger: Logger
    let triggers = TriggerBox()
    /// Woken when a list leaves some container's bridge port unfound (`bindPendingPorts`).
    let portTriggers = TriggerBox()
    let planner: Planner
    private let state = Mutex(State())
    /// Called with the bound HTTP port once listening (tests use port 0).
    let onListening: @Sendable (Int) -> Void
    /// Called after every successful reconcile (benchmarks and tests time commits with it).
    let onReconciled: @Sendable (ReconcileReport) -> Void

    struct State {
        var policies: PolicySet?
        var policySignature: [String] = []
        /// Why the policies on disk are not the ones enforced (reload failed, refused or stalled).
        var policyProblem: String?
        var inventory: Inventory?
        /// Counts what may have changed Docker's state (events, stream gaps, resyncs); the list
        /// is fresh while `listedChanges` equals it. A count, not a flag: an event that arrives
        /// while a list is on its way leaves it stale, and clearing a flag at the list's answer
        /// would lose that event.
        var changes: UInt64 = 1
        var listedChanges: UInt64 = 0
        /// Containers whose latest event is `die` or `destroy`. Docker's list lags its events: a
        /// re-list right after `die` can still show the container running with its addresses,
        /// and when no event follows, those addresses would stay members of its services.
        var departed: Set<String> = []
        var dockerUp = false
        var lastApplied: Table?
        /// `bridge bulkhead` as we last wrote it (nil with `lastApplied`).
        var lastAppliedBridge: Table?
        var lastGeneration: UInt32?
        var reconciledOnce = false
        /// Whether this process has claimed the table (owner flag) since it started.
        var adopted = false
        var lastCounters: (time: ContinuousClock.Instant, table: Table?)?
        /// Identities the last reconcile could not program (their containers are quarantined):
        /// readiness says so until they compile again.
        var failures: [Compiler.IdentityFailure] = []
        /// Addresses the last inventory gave containers that are not enrolled (logged on change).
        var rejectedAddresses: [RejectedAddress] = []
        /// The last list has a container on a bridged network whose port was not found yet.
        var portsPending = false
    }

    public init(configuration: AgentConfiguration, backend: any NetfilterBackend, source: any ContainerSource,
                logger: Logger = Logger(label: "bulkhead.agent"), planner: Planner = Planner(),
                connections: (any ConnectionTracking)? = nil,
                onListening: @escaping @Sendable (Int) -> Void = { _ in },
                onReconciled: @escaping @Sendable (ReconcileReport) -> Void = { _ in }) {
        self.configuration = configuration
        self.backend = backend
        self.connections = connections
        self.source = source
        self.logger = logger
        // The backend's ownership flags decide whether a table someone else created is adopted
        // or replaced (see `Planner.ownershipFlags`).
        var planner = planner
        if planner.ownershipFlags.isEmpty, let managing = backend as? any TableFlagsManaging {
            planner.ownershipFlags = managing.managedTableFlags
        }
        self.planner = planner
        self.onListening = onListening
        self.onReconciled = onReconciled
        describeMetrics()
    }

    /// True once a reconcile has succeeded while Docker is reachable, the policies on disk are the
    /// ones loaded (a reload that failed, was refused or stalls makes it false), and every identity
    /// is programmed.
    public var isReady: Bool {
        state.withLock { $0.reconciledOnce && $0.dockerUp && $0.policies != nil && $0.failures.isEmpty && $0.policyProblem == nil }
    }

    public func run() async throws {
        logger.info("agent starting", metadata: ["policies": "\(configuration.policyPaths.joined(separator: ","))",
                                                 "listen": "\(configuration.listenHost):\(configuration.listenPort)"])
        triggers.signal(.startup)
        // Graceful shutdown (SIGTERM, SIGINT) cancels every loop: the event stream, the HTTP
        // server and the sleeps all end on cancellation, so the process exits promptly. A reconcile
        // already sending its batch finishes first (the commit is one synchronous call).
        do {
            try await cancelWhenGracefulShutdown {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask { try await self.serveHTTP() }
                    group.addTask { await self.followDocker() }
                    group.addTask { await self.watchPolicies() }
                    group.addTask { await self.watchGeneration() }
                    group.addTask { await self.periodicResync() }
                    group.addTask { await self.reconcileLoop() }
                    group.addTask { await self.bindPendingPorts() }
                }
            }
        } catch is CancellationError {
            // Stopping is not a failure.
        }
        logger.info("agent stopped; the rules stay in the kernel (run `bulkhead uninstall` to remove them)")
    }

    // MARK: - Loops

    func serveHTTP() async throws {
        let endpoint = HTTPEndpoint(host: configuration.listenHost, port: configuration.listenPort, limits: configuration.http,
                                    onClose: { [metrics] reason in metrics.increment("bulkhead_http_connections_closed_total", labels: ["reason": reason.rawValue]) },
                                    onOpenCount: { [metrics] open in metrics.set("bulkhead_http_connections", Double(open)) }) { [self] path in
            switch path {
            case "/metrics":
                refreshKernelCounters()
                return .init(contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render())
            case "/healthz":
                return .init(body: "ok\n")
            case "/readyz":
                return isReady ? .init(body: "ready\n") : .init(status: .serviceUnavailable, body: Escape.terminal(readinessProblem()) + "\n")  // quotes policy file names
            default:
                return .init(status: .notFound, body: "not found: try /metrics, /healthz or /readyz\n")
            }
        }
        try await endpoint.run(onBound: { [self] port in
            logger.info("listening", metadata: ["address": "\(configuration.listenHost):\(port)"])
            onListening(port)
        })
    }

    /// Why `isReady` is false ("ready" when it is true): the body of a 503 from `/readyz`.
    public func readinessProblem() -> String {
        state.withLock { s in
            if let problem = s.policyProblem { return "not ready: \(problem)" }
            if s.policies == nil { return "not ready: no valid policies loaded" }
            if !s.dockerUp { return "not ready: Docker is unreachable (the last rules stay enforced)" }
            if !s.reconciledOnce { return "not ready: first reconcile has not succeeded yet" }
            if let f = s.failures.first {
                return "not ready: \(s.failures.count) identit\(s.failures.count == 1 ? "y" : "ies") cannot be programmed (the rest is enforced); first: \(f)"
            }
            return "ready"
        }
    }

    /// Follows Docker: subscribe to events, list, then count a change on every event.
    /// Any gap (stream error) re-lists after a backoff; the rules are never touched meanwhile.
    func followDocker() async {
        var backoff = configuration.minimumBackoff
        while !Task.isCancelled {
            let since = Date()
            let events = source.events(since: since.addingTimeInterval(-1))
            do {
                let mark = state.withLock { $0.changes }
                let inventory = try await listInventory()
                let wasDown = state.withLock { s in
                    let was = !s.dockerUp
                    // A reconcile's list asked later may have answered first: keep the newer one.
                    guard mark >= s.listedChanges else { s.dockerUp = true; return was }
                    s.inventory = inventory
                    s.portsPending = Self.hasPendingPorts(inventory)
                    if s.portsPending { portTriggers.signal(.docker) }
                    s.listedChanges = mark
                    s.departed = []  // a full list after a gap: earlier events say nothing now
                    s.dockerUp = true
                    return was
                }
                metrics.set("bulkhead_docker_up", 1)
                if wasDown { logger.info("docker reachable", metadata: ["containers": "\(inventory.containers.count)"]) }
                backoff = configuration.minimumBackoff
                triggers.signal(wasDown ? .reachable : .docker)
                for try await event in events {
                    logger.debug("docker event", metadata: ["event": "\(event)"])
                    state.withLock { s in
                        s.changes &+= 1
                        switch event.action {
                        case .die, .destroy: s.departed.insert(event.containerID)
                        case .create, .start: s.departed.remove(event.containerID)
                        case .connect, .disconnect: break
                        }
                    }
                    triggers.signal(.docker)
                }
                if Task.isCancelled { return }
                throw DockerGap.streamEnded
            } catch {
                if Task.isCancelled { return }
                // Events in the gap are lost: whatever lists next must not trust the last list.
                state.withLock { s in
                    s.dockerUp = false
                    s.changes &+= 1
                }
                metrics.set("bulkhead_docker_up", 0)
                logger.warning("docker unreachable; keeping the last rules, retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maximumBackoff)
            }
        }
    }

    /// Lists containers. A dockerd that is slow is not a dockerd that is gone (under a burst of
    /// starts, dockerd 20.10 took over 10 s to answer a list): when an attempt has not answered
    /// within `listHedgeInterval`, readiness says so and another attempt starts beside it (at most
    /// `maximumConcurrentLists` at once); the first answer wins. So the agent converges as soon as
    /// Docker answers any of them — the old request once dockerd gets to it, or a new one on a
    /// fresh connection when the old one hangs. Throws when every attempt failed.
    func listInventory() async throws -> Inventory {
        enum Step: Sendable { case answer(Result<Inventory, Error>), tick }
        let source = self.source, interval = configuration.listHedgeInterval
        return try await withThrowingTaskGroup(of: Step.self) { group in
            let attempt: @Sendable () async -> Step = {
                do { return .answer(.success(try await source.inventory())) } catch { return .answer(.failure(error)) }
            }
            let tick: @Sendable () async -> Step = {
                try? await Task.sleep(for: interval)
                return .tick
            }
            group.addTask(operation: attempt)
            group.addTask(operation: tick)
            var running = 1, waited = 0
            while let step = try await group.next() {
                switch step {
                case .answer(.success(let inventory)):
                    group.cancelAll()
                    return inventory
                case .answer(.failure(let error)):
                    running -= 1
                    if running == 0 || Task.isCancelled {
                        group.cancelAll()
                        throw error
                    }
                case .tick:
                    if Task.isCancelled { group.cancelAll(); throw CancellationError() }
                    waited += 1
                    let wasUp = state.withLock { s in defer { s.dockerUp = false }; return s.dockerUp }
                    metrics.set("bulkhead_docker_up", 0)
                    if wasUp || waited == 1 {
                        logger.warning("docker has not answered the container list yet; keeping the last rules, asking again beside it",
                                       metadata: ["waited": "\(interval * waited)", "attempts": "\(running)"])
                    }
                    if running < configuration.maximumConcurrentLists {
                        running += 1
                        group.addTask(operation: attempt)
                    }
                    group.addTask(operation: tick)
                }
            }
            throw CancellationError()
        }
    }

    enum DockerGap: Error { case streamEnded }

    /// Reloads policies when their files change. Each reload runs on a thread of its own
    /// (`BlockingJob`): one overdue by `policyReloadTimeout` is reported as stalled and no other
    /// starts until it ends, so a hung filesystem never blocks the agent's other loops.
    func watchPolicies() async {
        let job = BlockingJob<PolicyWatcher.Outcome>()
        let watcher = PolicyWatcher(paths: configuration.policyPaths, load: configuration.loadPolicyFiles)
        /// Set while a stall is reported: the problem it replaced, given back if nothing changed.
        var beforeStall: String??
        while !Task.isCancelled {
            if let outcome = job.take() {
                if let previous = beforeStall {
                    logger.notice("policy reload finished after stalling")
                    if case .unchanged = outcome { state.withLock { $0.policyProblem = previous } }
                }
                beforeStall = nil
                if case .loaded(let signature, let result) = outcome { applyPolicies(result, signature: signature) }
            } else if let elapsed = job.elapsed {
                if elapsed > configuration.policyReloadTimeout, beforeStall == nil {
                    let problem = "policy reload stalled: reading \(configuration.policyPaths.joined(separator: ", ")) has not finished after \(elapsed); the last good policies stay enforced"
                    metrics.increment("bulkhead_policy_reloads_total", labels: ["result": "stalled"])
                    beforeStall = state.withLock { s in
                        defer { s.policyProblem = problem }
                        return s.policyProblem
                    }
                    logger.error("policy reload stalled; the last good policies stay enforced", metadata: [
                        "paths": "\(configuration.policyPaths.joined(separator: ","))", "elapsed": "\(elapsed)"])
                }
                // Poll a running reload often: the first load gates the first reconcile.
                try? await Task.sleep(for: min(configuration.policyPollInterval, .milliseconds(10)))
                continue
            } else {
                let known = state.withLock { $0.policySignature }
                _ = job.start { watcher.reload(unless: known) }
                continue
            }
            try? await Task.sleep(for: configuration.policyPollInterval)
        }
    }

    /// Takes a finished reload: enforces it when it is valid and its files are safe; otherwise keeps
    /// the last good policies and says why (log, metric, /readyz).
    func applyPolicies(_ loaded: PolicyLoader.Result, signature: [String]) {
        state.withLock { $0.policySignature = signature }
        let errors = loaded.diagnostics.filter { $0.severity == .error }
        // sshd's StrictModes: whoever can write a policy can open any flow, so a policy file or
        // directory that others can write (or that another user owns) is refused, not enforced.
        let insecure = loaded.diagnostics.filter { $0.code == .insecurePermissions }
        let kept = state.withLock { $0.policies != nil }
        let keeping = kept ? "the last good policies stay enforced" : "nothing is programmed until they are fixed"
        if !errors.isEmpty || !insecure.isEmpty {
            let refused = errors.isEmpty
            metrics.set("bulkhead_policy_errors", Double(errors.count + insecure.count))
            metrics.increment("bulkhead_policy_reloads_total", labels: ["result": refused ? "refused" : "invalid"])
            for d in errors + insecure { logger.error(refused ? "insecure policy file" : "invalid policy", metadata: ["diagnostic": "\(d.formatted)"]) }
            let first = (errors.first ?? insecure[0]).formatted
            let problem = refused
                ? "policies refused: \(insecure.count) insecure file permission\(insecure.count == 1 ? "" : "s") (first: \(first)); \(keeping)"
                : "policy reload failed: \(errors.count) error\(errors.count == 1 ? "" : "s") (first: \(first)); \(keeping)"
            state.withLock { $0.policyProblem = problem }
            logger.error(refused ? "policies refused: insecure permissions; \(keeping)" : "policy edit rejected; \(keeping)",
                         metadata: ["errors": "\(errors.count + insecure.count)"])
            return
        }
        metrics.set("bulkhead_policy_errors", 0)
        metrics.increment("bulkhead_policy_reloads_total", labels: ["result": "loaded"])
        state.withLock {
            $0.policies = loaded.policies
            $0.policyProblem = nil
        }
        for d in loaded.diagnostics where d.code == .skippedEntry { logger.warning("policy directory entry skipped", metadata: ["diagnostic": "\(d.formatted)"]) }
        logger.info("policies loaded", metadata: ["files": "\(loaded.files.count)", "segments": "\(loaded.policies.segments.count)"])
        triggers.signal(.policy)
    }

    func watchGeneration() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.generationPollInterval)
            if Task.isCancelled { return }
            guard let generation = try? backend.generation() else { continue }
            let moved = state.withLock { s in s.lastGeneration != nil && s.lastGeneration != generation }
            if moved { triggers.signal(.generation) }
        }
    }

    /// A container's veth can join its bridge a moment after Docker reports the container, and no
    /// Docker event follows (seen: the last of 20 `docker run`s stayed unbound, so its frames were
    /// dropped until the next resync). While the last list has such a container, list again soon:
    /// 50 ms, doubling to at most 10 s (a port that cannot be found at all — a bridge in another
    /// namespace than `--netns` — must not cost a full list every second), until every port is
    /// found. Idle, it waits for a signal.
    func bindPendingPorts() async {
        while !Task.isCancelled {
            if await portTriggers.next().isEmpty { return }  // cancelled
            var delay = Duration.milliseconds(50)
            while !Task.isCancelled {
                try? await Task.sleep(for: delay)
                if Task.isCancelled { return }
                let pending = state.withLock { s in
                    guard s.portsPending else { return false }
                    s.changes &+= 1
                    return true
                }
                guard pending else { break }
                triggers.signal(.docker)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }

    /// Whether some attachment to a bridged network has a MAC but no port yet.
    static func hasPendingPorts(_ inventory: Inventory) -> Bool {
        let bridged = Set(inventory.networks.filter { $0.bridge != nil }.map(\.name))
        guard !bridged.isEmpty else { return false }
        return inventory.containers.contains { c in
            c.networks.contains { bridged.contains($0.key) && $0.value.mac != nil && $0.value.port == nil }
        }
    }

    func periodicResync() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.resyncInterval)
            if Task.isCancelled { return }
            triggers.signal(.resync)
        }
    }

    func reconcileLoop() async {
        var backoff = configuration.minimumBackoff
        while !Task.isCancelled {
            let reasons = await triggers.next()
            if Task.isCancelled || reasons.isEmpty { return }
            var attempt = reasons
            // Retries wait out the backoff, unless Docker answers again or the policies change
            // meanwhile: those reconcile at once (the backoff is capped for the same reason).
            while !Task.isCancelled, await !reconcile(attempt) {
                attempt = await triggers.next(afterBackoff: backoff, unless: [.reachable, .policy])
                backoff = min(backoff * 2, configuration.maximumBackoff)
            }
            backoff = configuration.minimumBackoff
        }
    }

    // MARK: - Reconcile

    /// One reconcile. Returns false when it should be retried.
    @discardableResult
    func reconcile(_ reasons: Set<ReconcileReason>) async -> Bool {
        let clock = ContinuousClock()
        let started = clock.now
        let reasonText = reasons.map(\.rawValue).sorted().joined(separator: ",")

        // Re-list when Docker said something changed (or may have: a resync re-lists too, in case
        // an event stream went quiet without ending); never fall back to an empty list. Whether
        // Docker was reachable last time does not matter: asking is how we find out it is again.
        let mark: UInt64? = state.withLock { s in
            if reasons.contains(.resync) { s.changes &+= 1 }
            return s.changes != s.listedChanges ? s.changes : nil
        }
        if let mark {
            do {
                var inventory = try await listInventory()
                let wasDown = state.withLock { s in
                    defer { s.dockerUp = true }
                    // A list asked later (by the event follower) may have answered first: keep it.
                    guard mark >= s.listedChanges else { return !s.dockerUp }
                    // Trust the events over a list that has not caught up with them yet; forget
                    // the ones the list no longer shows.
                    let listed = Set(inventory.containers.compactMap(\.id))
                    s.departed.formIntersection(listed)
                    inventory.containers.removeAll { $0.id.map(s.departed.contains) ?? false }
                    s.inventory = inventory
                    s.portsPending = Self.hasPendingPorts(inventory)
                    if s.portsPending { portTriggers.signal(.docker) }
                    s.listedChanges = mark  // events counted since the list was asked for re-list next time
                    return !s.dockerUp
                }
                metrics.set("bulkhead_docker_up", 1)
                if wasDown { logger.info("docker answers again", metadata: ["containers": "\(inventory.containers.count)"]) }
                // A change counted while the list was on its way: make sure another reconcile follows.
                if state.withLock({ $0.changes != $0.listedChanges }) { triggers.signal(.docker) }
            } catch {
                state.withLock { $0.dockerUp = false }
                metrics.set("bulkhead_docker_up", 0)
                logger.warning("cannot list containers; keeping the last rules", metadata: ["error": "\(error)"])
                return false
            }
        }
        let (policies, inventory, cached, cachedBridge, lastGeneration) = state.withLock {
            ($0.policies, $0.inventory, $0.lastApplied, $0.lastAppliedBridge, $0.lastGeneration)
        }
        guard let policies, let inventory else {
            logger.info("waiting before programming anything", metadata: ["policies": "\(policies != nil)", "inventory": "\(inventory != nil)"])
            return true
        }
        // Compare with the kernel itself at start-up, on resync, when someone else committed, and
        // after a failure; otherwise with what we last wrote (the table is ours: owner flag).
        let compareWithKernel = cached == nil || !reasons.isDisjoint(with: [.startup, .resync, .generation, .retry])
        do {
            var plan: Plan
            var drift: Plan?
            if compareWithKernel {
                let generation = try backend.generation()
                let live = try backend.dump(table: Planner.tableID)
                let bridgeLive = try backend.dump(table: Planner.bridgeTableID)
                plan = try planner.plan(policies: policies, inventory: inventory, live: live, bridgeLive: bridgeLive,
                                        baseline: .kernel(generation: generation))
                if let cached, lastGeneration != nil {
                    let expected = try Diff.between(desired: cached, live: live, table: Planner.tableID)
                    let expectedBridge = try Diff.between(desired: cachedBridge, live: bridgeLive, table: Planner.bridgeTableID)
                    if !expected.isEmpty || !expectedBridge.isEmpty { drift = plan }
                }
                // Claim an existing table once per process. Not tied to the `startup` reason: that
                // one is usually spent waiting for the first container list, and a table that
                // needs no change would then stay orphaned (writable by anyone) indefinitely.
                // Claimed before any change, not in the change's batch: a batch that changes only
                // the bridge table (a port binding) re-sends only that table's header, and the
                // inet table stayed orphaned — deletable by anyone — for as long as the agent ran.
                if !state.withLock({ $0.adopted }), let adopted = try adoptTable(live: live, bridgeLive: bridgeLive) {
                    state.withLock { $0.adopted = true }
                    plan.baseline = .kernel(generation: adopted)
                }
            } else {
                plan = try planner.plan(policies: policies, inventory: inventory, live: cached, bridgeLive: cachedBridge,
                                        baseline: .kernel(generation: lastGeneration ?? 0))
            }
            var generation = lastGeneration
            if plan.hasChanges {
                // With a kernel read, the generation check makes a concurrent writer fail the commit
                // (we retry); with our own cached view the table's owner flag already excludes others.
                generation = try backend.apply(plan.transactions, expectedGeneration: compareWithKernel ? plan.baselineGeneration : nil)
            } else if compareWithKernel {
                generation = plan.baselineGeneration
            }
            let desired = plan.desired, desiredBridge = plan.bridgeDesired
            let evaluator = Evaluator(policies: policies, inventory: inventory)
            let membership = evaluator.membership
            let managed = inventory.containers.filter { !(membership[$0.name] ?? []).isEmpty }.count
            let (failures, rejected) = (plan.failures, plan.rejectedAddresses)
            let (failuresChanged, rejectionsChanged) = state.withLock { s in
                s.lastApplied = desired
                s.lastAppliedBridge = desiredBridge
                s.lastGeneration = generation
                s.reconciledOnce = true
                s.adopted = true
                let changed = (s.failures != failures, s.rejectedAddresses != rejected)
                (s.failures, s.rejectedAddresses) = (failures, rejected)
                return changed
            }
            reportEnrolment(plan, failuresChanged: failuresChanged, rejectionsChanged: rejectionsChanged)
            let seconds = Double((clock.now - started).components.attoseconds) / 1e18 + Double((clock.now - started).components.seconds)
            metrics.increment("bulkhead_reconciles_total", labels: ["result": "success"])
            metrics.observe("bulkhead_reconcile_duration_seconds", seconds, buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
            metrics.set("bulkhead_last_success_timestamp_seconds", Date().timeIntervalSince1970)
            metrics.increment("bulkhead_operations_applied_total", by: Double(plan.operationCount))
            metrics.set("bulkhead_managed_containers", Double(managed))
            for (table, change) in [(Planner.tableID, plan.tableChange), (Planner.bridgeTableID, plan.bridgeTableChange)] {
                switch change {
                case .replace(let was, let now)?:
                    metrics.increment("bulkhead_table_repairs_total", labels: ["kind": "replaced"])
                    logger.warning("table replaced: it lacked the ownership flags (created by another program or restored with nft -f); deleted and re-created with everything in it in one transaction", metadata: [
                        "table": "\(table)", "live_flags": "\(Plan.flagNames(was))", "flags": "\(Plan.flagNames(now))",
                    ])
                case .flags(let was, let now)?:
                    metrics.increment("bulkhead_table_repairs_total", labels: ["kind": "flags"])
                    logger.warning("table flags repaired\(was.contains(.dormant) && !now.contains(.dormant) ? ": the table was dormant and enforced nothing" : "")", metadata: [
                        "table": "\(table)", "live_flags": "\(Plan.flagNames(was))", "flags": "\(Plan.flagNames(now))",
                    ])
                case .create?, nil:
                    break
                }
            }
            if let drift, drift.hasChanges {
                metrics.increment("bulkhead_drift_repairs_total")
                logger.warning("drift repaired: our table had been changed behind our back", metadata: [
                    "operations": "\(drift.operationCount)",
                    "changes": "\(drift.operationCounts.map { "\($0.1) \($0.0)" }.joined(separator: ", "))",
                    "reopened": "\(drift.opened.map(\.grant.description).joined(separator: "; "))",
                    "foreign_rules": "\(drift.foreignRules.count)",
                ])
            }
            onReconciled(ReconcileReport(reasons: reasons, operations: plan.operationCount,
                                         containers: inventory.containers.map(\.name), finishedAt: Date(), seconds: seconds,
                                         script: plan.operationCount > 0 && plan.operationCount <= 20 ? plan.transactions.map(\.description).joined() : ""))
            logger.info("reconciled", metadata: [
                "reasons": "\(reasonText)",
                "operations": "\(plan.operationCount)",
                "opened": "\(plan.opened.count)", "closed": "\(plan.closed.count)",
                "membership_changes": "\(plan.membership.count)",
                "duration_ms": "\(String(format: "%.2f", seconds * 1000))",
            ])
            // After the kernel's ack (cut earlier, a connection would re-open under the old rules)
            // and outside the measured commit, only when something changed: a flow closed, a
            // container left or changed service.
            if plan.hasChanges, let connections {
                revokeConnections(connections, evaluator: evaluator)
            }
            return true
        } catch {
            state.withLock { $0.lastApplied = nil; $0.lastAppliedBridge = nil }  // read the kernel next time
            if RulesetError.isStaleGeneration(error) {
                // Another program committed between our read and our write: the kernel refused the
                // batch and nothing was written. Not a failure: read again now, without backoff.
                metrics.increment("bulkhead_reconciles_total", labels: ["result": "stale"])
                logger.info("the ruleset changed while we reconciled; reading it again", metadata: ["reasons": "\(reasonText)"])
                triggers.signal(.generation)
                return true
            }
            metrics.increment("bulkhead_reconciles_total", labels: ["result": "error"])
            logger.error("reconcile failed; the rules in the kernel are unchanged", metadata: [
                "error": "\(error)", "reasons": "\(reasonText)", "kind": "\(Self.failureKind(error))",
            ])
            return false
        }
    }

    /// Cuts the established connections the new rules deny. A failure never undoes the commit:
    /// it is logged with what to do and counted.
    func revokeConnections(_ connections: any ConnectionTracking, evaluator: Evaluator) {
        let report = Revocation.revoke(connections, evaluator: evaluator)
        metrics.increment("bulkhead_connections_revoked_total", by: Double(report.cut.count))
        if !report.cut.isEmpty {
            logger.info("cut connections the policies now deny", metadata: [
                "cut": "\(report.cut.count)", "tracked": "\(report.tracked)",
                "first": "\(report.cut.prefix(3).map(\.description).joined(separator: "; "))",
            ])
        }
        if let problem = report.problem {
            metrics.increment("bulkhead_connection_revocation_errors_total")
            logger.error("connections not cut", metadata: ["problem": "\(problem)"])
        }
    }

    /// Never silent: identities that could not be programmed and addresses that are not enrolled
    /// are logged when they change, and counted in gauges.
    func reportEnrolment(_ plan: Plan, failuresChanged: Bool, rejectionsChanged: Bool) {
        metrics.set("bulkhead_identity_failures", Double(plan.failures.count))
        metrics.set("bulkhead_rejected_addresses", Double(plan.rejectedAddresses.count))
        if failuresChanged {
            for f in plan.failures { logger.error("identity quarantined", metadata: ["failure": "\(f)"]) }
            if plan.failures.isEmpty { logger.info("every identity is programmed again") }
        }
        if rejectionsChanged {
            for r in plan.rejectedAddresses {
                logger.warning("address not enrolled", metadata: ["container": "\(r.container)", "address": "\(r.address)",
                                                                 "network": "\(r.network)", "reason": "\(r.reasonText)"])
            }
        }
    }

    /// A short name for the kind of a reconcile failure (log field `kind`).
    static func failureKind(_ error: any Error) -> String {
        guard let e = error as? RulesetError else { return "other" }
        if e.isPermissionDenied { return "permission_denied" }
        if e.isOwnedByAnotherProcess { return "table_owned_by_another_process" }
        if e.isNotFound { return "not_found" }
        if e.isAlreadyExists { return "already_exists" }
        if e.isBackendFailure { return "backend" }
        return "refused"
    }

    /// Re-sends the table header so the backend's ownership flags (owner,persist) make the table
    /// ours again after a restart (the kernel lets a process adopt an orphaned persistent table).
    /// Returns the generation after the claim, nil when there is no table to claim.
    func adoptTable(live: Table?, bridgeLive: Table? = nil) throws -> UInt32? {
        var txs: [Transaction] = []
        // Only an orphaned table of ours (persist, owner cleared when its agent exited) can be
        // claimed; the kernel refuses to add ownership to any other, which the plan replaces.
        for table in [live, bridgeLive].compactMap({ $0 }) where table.flags.contains(.persist) && !table.flags.contains(.dormant) {
            var tx = Transaction(table: table.id, current: table)
            try tx.add(.table(table.header))
            txs.append(tx)
        }
        guard !txs.isEmpty else { return nil }
        return try backend.apply(txs, expectedGeneration: nil)
    }

    // MARK: - Metrics

    func describeMetrics() {
        metrics.describe("bulkhead_reconciles_total", type: "counter", "Reconciles by result (success, error, stale: another program committed first and the reconcile is read again).")
        metrics.describe("bulkhead_reconcile_duration_seconds", type: "histogram", "Time from trigger to the kernel's ack.")
        metrics.describe("bulkhead_last_success_timestamp_seconds", type: "gauge", "Unix time of the last successful reconcile.")
        metrics.describe("bulkhead_operations_applied_total", type: "counter", "nftables operations committed.")
        metrics.describe("bulkhead_drift_repairs_total", type: "counter", "Times our table was found changed behind our back and repaired.")
        metrics.describe("bulkhead_table_repairs_total", type: "counter", "Times the table itself was repaired: replaced (it lacked the ownership flags) or its flags fixed (dormant).")
        metrics.describe("bulkhead_managed_containers", type: "gauge", "Containers that match some service.")
        metrics.describe("bulkhead_docker_up", type: "gauge", "1 while the Docker API answers.")
        metrics.describe("bulkhead_policy_errors", type: "gauge", "Errors in the policy files on disk (the last good policies stay enforced).")
        metrics.describe("bulkhead_policy_reloads_total", type: "counter", "Policy reloads by result (loaded, invalid, refused, stalled).")
        metrics.describe("bulkhead_http_connections", type: "gauge", "Open connections to the agent's HTTP port.")
        metrics.describe("bulkhead_http_connections_closed_total", type: "counter", "Connections the HTTP port closed, by reason (evicted, refused, idle_timeout, header_timeout, too_large, method_not_allowed).")
        metrics.describe("bulkhead_flow_packets_total", type: "counter", "Packets of new connections allowed, per flow (file:line), from the kernel's counters.")
        metrics.describe("bulkhead_port_binding_dropped_packets_total", type: "counter", "Frames dropped at a container's bridge port, per reason (spoofed source, tagged frame, link-local), from the kernel's counters.")
        metrics.describe("bulkhead_denied_packets_total", type: "counter", "Packets denied (or audited), per identity, from the kernel's counters.")
        metrics.describe("bulkhead_connections_revoked_total", type: "counter", "Established connections cut (deleted from connection tracking) because the policies no longer allow them.")
        metrics.describe("bulkhead_connection_revocation_errors_total", type: "counter", "Reconciles whose commit stood but whose connection cut failed (conntrack unreadable, or a delete refused).")
        metrics.describe("bulkhead_identity_failures", type: "gauge", "Identities that cannot be programmed; their containers are quarantined (all denied).")
        metrics.describe("bulkhead_rejected_addresses", type: "gauge", "Container addresses not enrolled: outside their network's subnets, the host's, or claimed twice.")
        metrics.set("bulkhead_docker_up", 0)
        metrics.set("bulkhead_policy_errors", 0)
        metrics.set("bulkhead_identity_failures", 0)
        metrics.set("bulkhead_rejected_addresses", 0)
        metrics.set("bulkhead_drift_repairs_total", 0)
        metrics.set("bulkhead_connections_revoked_total", 0)
        metrics.set("bulkhead_connection_revocation_errors_total", 0)
        metrics.set("bulkhead_http_connections", 0)
        for reason in HTTPEndpoint.CloseReason.allCases {
            metrics.set("bulkhead_http_connections_closed_total", 0, labels: ["reason": reason.rawValue])
        }
    }

    /// Reads the kernel's rule counters into the flow and denial metrics (at most once a second).
    func refreshKernelCounters() {
        let clock = ContinuousClock()
        let fresh = state.withLock { s in s.lastCounters.map { clock.now - $0.time < .seconds(1) } ?? false }
        guard !fresh, let table = try? backend.dump(table: Planner.tableID) else { return }
        state.withLock { $0.lastCounters = (clock.now, table) }
        var allowed: [String: Double] = [:], denied: [String: Double] = [:]
        for rule in table.rules {
            guard let role = rule.comment.flatMap(RuleRole.init(parsing:)) else { continue }
            for case .counter(let packets, _) in rule.statements {
                switch role {
                case .allow(let reference) where rule.statements.last == .verdict(.accept):
                    allowed[reference.text, default: 0] += Double(packets)
                case .deny(let who), .audit(let who): denied[who.description, default: 0] += Double(packets)
                case .sharedDenial: denied["shared", default: 0] += Double(packets)
                case .unclassified: denied["unclassified", default: 0] += Double(packets)
                case .quarantine: denied["quarantined", default: 0] += Double(packets)
                case .allow, .routerAdvertisements, .portBinding: break
                }
            }
        }
        metrics.replaceAll("bulkhead_flow_packets_total", allowed.map { (["flow": $0.key], $0.value) })
        metrics.replaceAll("bulkhead_denied_packets_total", denied.map { (["identity": $0.key], $0.value) })
        // Port binding (`bridge bulkhead`): frames dropped per reason (spoofed source, tagged, link-local…).
        if let bridge = try? backend.dump(table: Planner.bridgeTableID) {
            var dropped: [String: Double] = [:]
            for rule in bridge.rules {
                guard case .portBinding(let reason)? = rule.comment.flatMap(RuleRole.init(parsing:)) else { continue }
                for case .counter(let packets, _) in rule.statements {
                    dropped[reason.rawValue, default: 0] += Double(packets)
                }
            }
            metrics.replaceAll("bulkhead_port_binding_dropped_packets_total", dropped.map { (["reason": $0.key], $0.value) })
        }
    }
}

/// What one successful reconcile did.
public struct ReconcileReport: Sendable {
    public var reasons: Set<ReconcileReason>
    /// nftables operations committed (0: the kernel already matched).
    public var operations: Int
    /// Containers in the inventory it enforced.
    public var containers: [String]
    /// Wall-clock time of the kernel's ack.
    public var finishedAt: Date
    /// From the start of the reconcile to the ack.
    public var seconds: Double
    /// The nft script of a small change (at most 20 operations; empty otherwise), for logs and tests.
    public var script: String = ""
}

extension Plan {
    var baselineGeneration: UInt32? {
        if case .kernel(let g) = baseline { return g }
        return nil
    }
}
