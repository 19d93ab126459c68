import BulkheadCompiler
import BulkheadConntrack
import BulkheadEngine
import BulkheadEscaping
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset
import BulkheadSource
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
    /// A read of the source (a full list, or one container for an event) that has not answered
    /// within this long is reported (readiness) and another one starts beside it, up to
    /// `maximumConcurrentLists`; the first answer wins.
    public var listHedgeInterval: Duration = .seconds(1)
    public var maximumConcurrentLists = 3
    /// Timeouts, size and connection limits of the HTTP port.
    public var http = HTTPEndpoint.Limits()
    /// A policy reload still running after this long is reported as stalled (log, metric, /readyz).
    public var policyReloadTimeout: Duration = .seconds(10)
    /// The clock of the agent's timers: resync period, generation watch, retry backoffs, hedged
    /// reads, pending ports, counter refresh (tests inject a manual one and advance it instead
    /// of waiting real time). Policy files are polled on real time: they are read on a thread.
    public var clock: any Clock<Duration> = ContinuousClock()
    /// Reads the policy files a walk found (tests inject a slow one).
    public var loadPolicyFiles: @Sendable (PolicyFiles) -> PolicyLoader.Result = { PolicyLoader.load($0) }

    public init(policyPaths: [String]) {
        self.policyPaths = policyPaths
    }
}

/// The host agent: keeps the kernel's `inet bulkhead` table equal to what the policies say about
/// the containers a source (Docker, an inventory file) reports, within milliseconds of each change.
///
/// - It keeps an endpoint index (container → labels, addresses) from one full snapshot at
///   start-up, after a gap in the event stream and on each resync, and updates it per event by
///   reading the one container the event names.
/// - It reconciles on source events, on policy file changes, when the ruleset generation moves
///   without it, and periodically; reasons that arrive during a reconcile coalesce. What each
///   reconcile commits is decided by a `Reconciler` (pure): element operations for the containers
///   whose index entries changed, a full compile only for policies, snapshots, resyncs and drift.
///   The agent itself is the loops and the I/O: source reads, netlink (on `NetlinkQueue`), logs,
///   metrics, HTTP.
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
    /// Woken when a read leaves some container's bridge port unfound (`bindPendingPorts`).
    let portTriggers = TriggerBox()
    /// Requests to the source follower: `.resync` takes a full snapshot; `.docker` reads again the
    /// containers whose ports are pending.
    let sourceRequests = TriggerBox()
    /// Scrapes of `/metrics` ask for the kernel's rule counters here; `refreshCounters` reads them.
    let counterRequests = TriggerBox()
    /// Every netlink call (commit, dump, generation, conntrack) runs here: never on the
    /// cooperative pool nor on an event loop (`NetlinkQueue`).
    let netlink = NetlinkQueue()
    let planner: Planner
    private let state = Mutex(State())
    /// What was last committed and the decisions made from it (`Reconciler`: pure). Only the
    /// reconcile loop uses it, one reconcile at a time; kept apart from `state` so its tables
    /// are changed in place, never copied.
    private let reconciler: Mutex<Reconciler>
    /// Called with the bound HTTP port once listening (tests use port 0).
    let onListening: @Sendable (Int) -> Void
    /// Called after every successful reconcile (benchmarks and tests time commits with it).
    let onReconciled: @Sendable (ReconcileReport) -> Void

    struct State {
        var policies: PolicySet?
        var policySignature: [String] = []
        /// Why the policies on disk are not the ones enforced (reload failed, refused or stalled).
        var policyProblem: String?
        /// Every endpoint the source reported, per container: nil until the first snapshot.
        var index: EndpointIndex?
        var inventory: Inventory? { index?.inventory }
        /// Containers whose latest event removed them (Docker: `die`, `destroy`). Docker's list
        /// lags its events: a resync's list right after `die` can still show the container running
        /// with its addresses, and when no event follows, those addresses would stay members of
        /// its services. Cleared by a list after a gap (earlier events say nothing then).
        var departed: Set<String> = []
        /// Whether the source answers (Docker reachable, the inventory file valid).
        var dockerUp = false
        /// What `/readyz` says while it does not.
        var sourceOutage: String?
        /// Keys of the index entries that changed since the last reconcile took them.
        var dirty: Set<String> = []
        /// Whether a full snapshot replaced the index since the last reconcile took it.
        var indexReplaced = false
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
        /// Containers on a bridged network whose port was not found yet (read again soon).
        var pendingPorts: Set<String> = []
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
        self.reconciler = Mutex(Reconciler(planner: planner))
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
                    group.addTask { await self.followSource() }
                    group.addTask { await self.watchPolicies() }
                    group.addTask { await self.watchGeneration() }
                    group.addTask { await self.periodicResync() }
                    group.addTask { await self.reconcileLoop() }
                    group.addTask { await self.bindPendingPorts() }
                    group.addTask { await self.refreshCounters() }
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
                // From the last snapshot of the counters: a scrape never waits on netlink.
                counterRequests.signal(.resync)
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
            if !s.dockerUp { return "not ready: \(s.sourceOutage ?? source.outageDescription(nil))" }
            if !s.reconciledOnce { return "not ready: first reconcile has not succeeded yet" }
            if let f = s.failures.first {
                return "not ready: \(s.failures.count) identit\(s.failures.count == 1 ? "y" : "ies") cannot be programmed (the rest is enforced); first: \(f)"
            }
            return "ready"
        }
    }

    /// What reaches the source follower: an event, the end of the event stream, or a request.
    enum FollowerInput: Sendable {
        case event(SourceEvent)
        case ended((any Error)?)
        case request(Set<ReconcileReason>)
    }

    /// Follows the source: subscribe to events, take a full snapshot into the endpoint index, then
    /// per event read the one container it names and update the index. A gap (the stream ends or
    /// a read fails) marks the source down, and after a backoff starts over with a new
    /// subscription and a full snapshot; the rules are never touched meanwhile. All reads of the
    /// source happen here, one at a time, so a snapshot's answer can never overwrite a newer
    /// per-event read.
    func followSource() async {
        var backoff = configuration.minimumBackoff
        var afterGap = false
        while !Task.isCancelled {
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    let (inbox, feed) = AsyncStream<FollowerInput>.makeStream()
                    let events = source.events()
                    group.addTask {
                        do {
                            for try await event in events { feed.yield(.event(event)) }
                            feed.yield(.ended(nil))
                        } catch {
                            feed.yield(.ended(error))
                        }
                    }
                    group.addTask { [sourceRequests] in
                        while true {
                            let reasons = await sourceRequests.next()
                            if reasons.isEmpty { return }  // cancelled
                            feed.yield(.request(reasons))
                        }
                    }
                    // This snapshot serves whatever was asked for before it.
                    let asked = sourceRequests.take()
                    try await takeSnapshot(reason: asked.contains(.resync) ? .resync : .docker, afterGap: afterGap)
                    afterGap = true
                    backoff = configuration.minimumBackoff
                    for await input in inbox {
                        switch input {
                        case .event(let event):
                            try await handle(event)
                        case .ended(let error):
                            throw error ?? SourceGap.streamEnded
                        case .request(let reasons):
                            if reasons.contains(.resync) {
                                try await takeSnapshot(reason: .resync, afterGap: false)
                            } else {
                                try await readPendingPorts()
                            }
                        }
                    }
                    throw CancellationError()
                }
            } catch {
                if Task.isCancelled { return }
                // Events in the gap are lost: the next snapshot starts over.
                let outage = source.outageDescription(error)
                state.withLock { s in
                    s.dockerUp = false
                    s.sourceOutage = outage
                }
                metrics.set("bulkhead_docker_up", 0)
                metrics.increment("bulkhead_source_gaps_total")
                logger.warning("container source unusable; keeping the last rules, retrying", metadata: ["error": "\(error)", "retry_in": "\(backoff)"])
                try? await configuration.clock.sleep(for: backoff)
                backoff = min(backoff * 2, configuration.maximumBackoff)
            }
        }
    }

    /// A full snapshot replaces the index: at start-up, after a gap, on resync.
    func takeSnapshot(reason: ReconcileReason, afterGap: Bool) async throws {
        metrics.increment("bulkhead_source_reads_total", labels: ["kind": "snapshot"])
        let source = self.source
        var inventory = try await hedged("list") { try await source.snapshot() }
        let (wasDown, pending) = state.withLock { s in
            if afterGap {
                s.departed = []
            } else {
                // Trust the events over a list that has not caught up with them yet; forget the
                // ones the list no longer shows.
                s.departed.formIntersection(inventory.containers.map(EndpointIndex.key(of:)))
                inventory.containers.removeAll { s.departed.contains(EndpointIndex.key(of: $0)) }
            }
            // What the snapshot changed, container by container, when only containers changed:
            // a resync or a gap then costs what it found (element operations), not a compile.
            let fresh = EndpointIndex(inventory)
            if !s.indexReplaced, let earlier = s.index, let changed = fresh.changedKeys(since: earlier) {
                s.dirty.formUnion(changed)
            } else {
                s.indexReplaced = true
            }
            s.index = fresh
            s.pendingPorts = Self.pendingPorts(inventory)
            defer { s.dockerUp = true; s.sourceOutage = nil }
            return (!s.dockerUp, !s.pendingPorts.isEmpty)
        }
        if pending { portTriggers.signal(.docker) }
        metrics.set("bulkhead_docker_up", 1)
        if wasDown { logger.info("container source answers", metadata: ["containers": "\(inventory.containers.count)"]) }
        triggers.signal(wasDown ? .reachable : reason)
    }

    /// One event: read the container it names (one read; a removal needs none) and update the
    /// index. A `.resynced` event, or a container on a network the index does not know, takes a
    /// full snapshot instead.
    func handle(_ event: SourceEvent) async throws {
        logger.debug("source event", metadata: ["event": "\(event)"])
        guard let key = event.containerID, event.kind != .resynced else {
            try await takeSnapshot(reason: .docker, afterGap: true)
            return
        }
        let container: Container?
        if event.kind == .removed {
            // Not read back: Docker's view lags its `die` and would still show it running.
            container = nil
        } else {
            metrics.increment("bulkhead_source_reads_total", labels: ["kind": "inspect"])
            let source = self.source
            container = try await hedged("read of \(event.containerName ?? key)") { try await source.inspect(id: key) }
            if let container, !(state.withLock { $0.index?.knowsNetworks(of: container) } ?? true) {
                logger.info("container on a network the last snapshot did not list; taking a new one", metadata: ["container": "\(container.name)"])
                try await takeSnapshot(reason: .docker, afterGap: false)
                return
            }
        }
        let changed = state.withLock { s -> Bool in
            if container == nil { s.departed.insert(key) } else { s.departed.remove(key) }
            s.pendingPorts.remove(key)
            if let container, Self.hasPendingPorts(container, s.index?.networks ?? []) { s.pendingPorts.insert(key) }
            let changed = s.index?.update(key, to: container) ?? false
            if changed { s.dirty.insert(key) }
            return changed
        }
        if state.withLock({ !$0.pendingPorts.isEmpty }) { portTriggers.signal(.docker) }
        if changed { triggers.signal(.docker) }
    }

    /// Reads again each container whose bridge port was not found yet. Past a handful, one
    /// snapshot (one list) replaces a read per container: with ports that cannot be found at all
    /// (a bridge in another namespace than `--netns`), 200 reads every 10 s kept the agent at 0.6
    /// of a core while idle (`scripts/bench/agent.sh`), where one list costs about nothing.
    func readPendingPorts() async throws {
        let keys = state.withLock { $0.pendingPorts.sorted() }
        if keys.count > Self.pendingReadsBeforeSnapshot {
            try await takeSnapshot(reason: .docker, afterGap: false)
            return
        }
        for key in keys { try await handle(SourceEvent(.changed, containerID: key)) }
    }

    public static let pendingReadsBeforeSnapshot = 8

    /// Runs one read of the source. A source that is slow is not a source that is gone (under a
    /// burst of starts, dockerd 20.10 took over 10 s to answer a list): when an attempt has not
    /// answered within `listHedgeInterval`, readiness says so and another attempt starts beside it
    /// (at most `maximumConcurrentLists` at once); the first answer wins. So the agent converges
    /// as soon as the source answers any of them — the old request once dockerd gets to it, or a
    /// new one on a fresh connection when the old one hangs. Throws when every attempt failed.
    func hedged<T: Sendable>(_ what: String, _ read: @escaping @Sendable () async throws -> T) async throws -> T {
        let interval = configuration.listHedgeInterval
        let clock = configuration.clock
        typealias Step = HedgeStep<T>
        return try await withThrowingTaskGroup(of: Step.self) { group in
            let attempt: @Sendable () async -> Step = {
                do { return .answer(.success(try await read())) } catch { return .answer(.failure(error)) }
            }
            let tick: @Sendable () async -> Step = {
                try? await clock.sleep(for: interval)
                return .tick
            }
            group.addTask(operation: attempt)
            group.addTask(operation: tick)
            var running = 1, waited = 0
            while let step = try await group.next() {
                switch step {
                case .answer(.success(let value)):
                    group.cancelAll()
                    return value
                case .answer(.failure(let error)):
                    running -= 1
                    if running == 0 || Task.isCancelled {
                        group.cancelAll()
                        throw error
                    }
                case .tick:
                    if Task.isCancelled { group.cancelAll(); throw CancellationError() }
                    waited += 1
                    let outage = source.outageDescription(nil)
                    let wasUp = state.withLock { s in
                        defer { s.dockerUp = false; s.sourceOutage = outage }
                        return s.dockerUp
                    }
                    metrics.set("bulkhead_docker_up", 0)
                    if wasUp || waited == 1 {
                        logger.warning("the container source has not answered yet; keeping the last rules, asking again beside it",
                                       metadata: ["request": "\(what)", "waited": "\(interval * waited)", "attempts": "\(running)"])
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

    enum SourceGap: Error { case streamEnded }

    /// One step of a hedged read: an attempt's answer, or the hedge interval passing.
    enum HedgeStep<T: Sendable>: Sendable { case answer(Result<T, Error>), tick }

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
            try? await configuration.clock.sleep(for: configuration.generationPollInterval)
            if Task.isCancelled { return }
            // Read and compared on the netlink queue, where our own commits record their
            // generation: compared after the queue returned, a commit in between made the watch
            // take our own commit for another writer's (a needless comparison with the kernel).
            let moved = try? await netlink.run { [self] in
                let generation = try backend.generation()
                return state.withLock { s in s.lastGeneration != nil && s.lastGeneration != generation }
            }
            if moved == true { triggers.signal(.generation) }
        }
    }

    /// A container's veth can join its bridge a moment after Docker reports the container, and no
    /// Docker event follows (seen: the last of 20 `docker run`s stayed unbound, so its frames were
    /// dropped until the next resync). While some container's port is pending, read those
    /// containers again soon: 50 ms, doubling to at most 10 s (a port that cannot be found at all —
    /// a bridge in another namespace than `--netns` — must not cost a read every second), until
    /// every port is found. Idle, it waits for a signal.
    func bindPendingPorts() async {
        while !Task.isCancelled {
            if await portTriggers.next().isEmpty { return }  // cancelled
            var delay = Duration.milliseconds(50)
            while !Task.isCancelled {
                try? await configuration.clock.sleep(for: delay)
                if Task.isCancelled { return }
                guard state.withLock({ !$0.pendingPorts.isEmpty }) else { break }
                sourceRequests.signal(.docker)
                delay = min(delay * 2, .seconds(10))
            }
        }
    }

    /// The keys of containers with an attachment to a bridged network that has a MAC but no port yet.
    static func pendingPorts(_ inventory: Inventory) -> Set<String> {
        Set(inventory.containers.filter { hasPendingPorts($0, inventory.networks) }.map(EndpointIndex.key(of:)))
    }

    static func hasPendingPorts(_ c: Container, _ networks: [Network]) -> Bool {
        let bridged = Set(networks.filter { $0.bridge != nil }.map(\.name))
        return c.networks.contains { bridged.contains($0.key) && $0.value.mac != nil && $0.value.port == nil }
    }

    func periodicResync() async {
        while !Task.isCancelled {
            try? await configuration.clock.sleep(for: configuration.resyncInterval)
            if Task.isCancelled { return }
            // A full snapshot first (an event stream may have gone quiet without ending); the
            // follower then asks for the reconcile that compares with the kernel.
            sourceRequests.signal(.resync)
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
                attempt = await triggers.next(afterBackoff: backoff, unless: [.reachable, .policy], clock: configuration.clock)
                backoff = min(backoff * 2, configuration.maximumBackoff)
            }
            backoff = configuration.minimumBackoff
        }
    }

    // MARK: - Reconcile

    /// One reconcile: the I/O around one `Reconciler` step. Returns false when it should be retried.
    ///
    /// What it asks the reconciler for: a comparison with the kernel (tables dumped here) at
    /// start-up, on resync, when another program committed and after a failure; a full compile
    /// against what it last committed when the policies changed or a snapshot replaced the
    /// index; otherwise the element operations for the containers whose index entries changed
    /// (no compile). The semantic diff (grants read back out of both tables) runs only when its
    /// result is logged: a policy change, the first reconcile, drift.
    @discardableResult
    func reconcile(_ reasons: Set<ReconcileReason>) async -> Bool {
        let clock = ContinuousClock()
        let started = clock.now
        let reasonText = reasons.map(\.rawValue).sorted().joined(separator: ",")

        // The endpoint index is kept by `followSource` (per event, or from a full snapshot at
        // start-up, after a gap and on resync): a reconcile never reads the source itself.
        let taken = state.withLock { s -> (PolicySet, EndpointIndex, Set<String>, Bool, UInt32?)? in
            guard let policies = s.policies, let index = s.index else { return nil }
            defer { s.dirty = []; s.indexReplaced = false }
            return (policies, index, s.dirty, s.indexReplaced, s.lastGeneration)
        }
        guard let (policies, index, dirty, replaced, lastGeneration) = taken else {
            let (p, i) = state.withLock { ($0.policies != nil, $0.index != nil) }
            logger.info("waiting before programming anything", metadata: ["policies": "\(p)", "inventory": "\(i)"])
            return true
        }
        // Compare with the kernel itself at start-up, when someone else committed, after a failure,
        // and on a resync that finds the kernel's generation moved since our last commit;
        // otherwise with what we last wrote (the table is ours: owner flag). Every commit to
        // nf_tables in the namespace, by anyone, moves the generation: a resync that finds it where
        // our last commit left it knows the kernel holds what we recorded, and needs no dump.
        let hasRecord = reconciler.withLock { $0.hasRecord }
        // A reload that gives the policies already compiled (the start-up's first load, which the
        // first reconcile already used) changes nothing: no compile for it.
        let policiesChanged = reasons.contains(.policy) && reconciler.withLock { $0.applied?.policies != policies }
        var compareWithKernel = !hasRecord || !reasons.isDisjoint(with: [.startup, .generation, .retry])
        do {
            if !compareWithKernel && reasons.contains(.resync) {
                let backend = self.backend
                let generation = try await netlink.run { try backend.generation() }
                compareWithKernel = lastGeneration == nil || generation != lastGeneration
            }
            let change: Reconciler.Change
            if compareWithKernel {
                let adopted = state.withLock { $0.adopted }
                // Claim an existing table once per process. Not tied to the `startup` reason: that
                // one is usually spent waiting for the first container list, and a table that
                // needs no change would then stay orphaned (writable by anyone) indefinitely.
                // Claimed before any change, not in the change's batch: a batch that changes only
                // the bridge table (a port binding) re-sends only that table's header, and the
                // inet table stayed orphaned — deletable by anyone — for as long as the agent ran.
                let (live, bridgeLive, generation) = try await netlink.run { [self] () throws -> (Table?, Table?, UInt32) in
                    var generation = try backend.generation()
                    let live = try backend.dump(table: Planner.tableID)
                    let bridgeLive = try backend.dump(table: Planner.bridgeTableID)
                    if !adopted, let claimed = try adoptTable(live: live, bridgeLive: bridgeLive) {
                        state.withLock { s in
                            s.adopted = true
                            if s.lastGeneration != nil { s.lastGeneration = claimed }
                        }
                        generation = claimed
                    }
                    return (live, bridgeLive, generation)
                }
                change = .kernel(live: live, bridgeLive: bridgeLive, generation: generation)
            } else if policiesChanged {
                change = .policiesChanged
            } else if replaced {
                change = .snapshot
            } else {
                change = .containers(dirty)
            }
            let describing = !hasRecord || policiesChanged
            let step = try reconciler.withLock { try $0.step(policies: policies, index: index, change: change, describing: describing) }
            if step.kind == .full {
                metrics.increment("bulkhead_full_compiles_total", labels: ["cause": Self.compileCause(change, fallback: step.fallback != nil)])
            }
            if let reason = step.fallback {
                logger.debug("container change needs the full plan", metadata: ["reason": "\(reason)"])
            }
            var generation = lastGeneration
            if step.hasChanges {
                // With a kernel read, the generation check makes a concurrent writer fail the commit
                // (we retry); with our own record the table's owner flag already excludes others.
                let (backend, transactions, expected) = (self.backend, step.transactions, step.expectedGeneration)
                generation = try await netlink.run { [self] in
                    let committed = try backend.apply(transactions, expectedGeneration: expected)
                    // Before the queue reads the generation again: the watch must not take our
                    // own commit for another writer's (that would cost a comparison with the kernel).
                    state.withLock { $0.lastGeneration = committed }
                    return committed
                }
            } else if compareWithKernel {
                generation = step.expectedGeneration
            }
            let (managed, failures, rejected) = reconciler.withLock { r in
                r.record(step, generation: generation)
                return (r.applied?.managed ?? 0, r.applied?.failures ?? [], r.applied?.rejectedAddresses ?? [])
            }
            if !state.withLock({ $0.reconciledOnce }) {
                // The first scrape after readiness has the counters (later ones: `refreshCounters`).
                await netlink.run { [self] in refreshKernelCounters() }
            }
            let (failuresChanged, rejectionsChanged) = state.withLock { s in
                s.lastGeneration = generation
                s.reconciledOnce = true
                s.adopted = true
                let changed = (s.failures != failures, s.rejectedAddresses != rejected)
                (s.failures, s.rejectedAddresses) = (failures, rejected)
                return changed
            }
            reportEnrolment(failures: failures, rejected: rejected, failuresChanged: failuresChanged, rejectionsChanged: rejectionsChanged)
            let seconds = Double((clock.now - started).components.attoseconds) / 1e18 + Double((clock.now - started).components.seconds)
            metrics.increment("bulkhead_reconciles_total", labels: ["result": "success"])
            metrics.observe("bulkhead_reconcile_duration_seconds", seconds, buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
            metrics.set("bulkhead_last_success_timestamp_seconds", Date().timeIntervalSince1970)
            metrics.increment("bulkhead_operations_applied_total", by: Double(step.operationCount))
            metrics.set("bulkhead_managed_containers", Double(managed))
            let plan = step.plan
            for (table, change) in [(Planner.tableID, plan?.tableChange), (Planner.bridgeTableID, plan?.bridgeTableChange)] {
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
            if step.drift, let drift = plan, drift.hasChanges {
                metrics.increment("bulkhead_drift_repairs_total")
                logger.warning("drift repaired: our table had been changed behind our back", metadata: [
                    "operations": "\(drift.operationCount)",
                    "changes": "\(drift.operationCounts.map { "\($0.1) \($0.0)" }.joined(separator: ", "))",
                    "reopened": "\(drift.opened.map(\.grant.description).joined(separator: "; "))",
                    "foreign_rules": "\(drift.foreignRules.count)",
                ])
            }
            onReconciled(ReconcileReport(reasons: reasons, operations: step.operationCount, containers: index.containers.values.map(\.name),
                                         finishedAt: Date(), seconds: seconds,
                                         script: step.operationCount > 0 && step.operationCount <= 20 ? step.transactions.map(\.description).joined() : "",
                                         fullCompile: step.kind == .full))
            logger.info("reconciled", metadata: [
                "reasons": "\(reasonText)",
                "operations": "\(step.operationCount)",
                "opened": "\(plan?.opened.count ?? 0)", "closed": "\(plan?.closed.count ?? 0)",
                "membership_changes": "\(plan.map { $0.membership.count } ?? step.membershipChanges)",
                "duration_ms": "\(String(format: "%.2f", seconds * 1000))",
            ])
            // After the kernel's ack (cut earlier, a connection would re-open under the old rules)
            // and outside the measured commit, only when the change can close a flow: the
            // policies changed, a container left or changed its service or addresses, or the
            // kernel held something else. A container that only arrived closes nothing, so a
            // burst of starts never dumps connection tracking.
            if step.hasChanges, step.mayCloseFlows, let connections {
                let evaluator = Evaluator(policies: policies, inventory: index.inventory)
                await netlink.run { [self] in revokeConnections(connections, evaluator: evaluator) }
            }
            return true
        } catch {
            reconciler.withLock { $0.forget() }  // read the kernel next time
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

    /// The `cause` label of `bulkhead_full_compiles_total`.
    static func compileCause(_ change: Reconciler.Change, fallback: Bool) -> String {
        switch change {
        case .kernel: return "kernel"
        case .policiesChanged: return "policy"
        case .snapshot: return "snapshot"
        case .containers: return fallback ? "container_fallback" : "container"
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
    func reportEnrolment(failures: [Compiler.IdentityFailure], rejected: [RejectedAddress], failuresChanged: Bool, rejectionsChanged: Bool) {
        metrics.set("bulkhead_identity_failures", Double(failures.count))
        metrics.set("bulkhead_rejected_addresses", Double(rejected.count))
        if failuresChanged {
            for f in failures { logger.error("identity quarantined", metadata: ["failure": "\(f)"]) }
            if failures.isEmpty { logger.info("every identity is programmed again") }
        }
        if rejectionsChanged {
            for r in rejected {
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
        metrics.describe("bulkhead_full_compiles_total", type: "counter", "Full compiles (compile and diff of the whole table) by cause: kernel (start-up, resync, another writer, retry), policy, snapshot, container_fallback (a container change that was more than elements).")
        metrics.describe("bulkhead_reconciles_total", type: "counter", "Reconciles by result (success, error, stale: another program committed first and the reconcile is read again).")
        metrics.describe("bulkhead_reconcile_duration_seconds", type: "histogram", "Time from trigger to the kernel's ack.")
        metrics.describe("bulkhead_last_success_timestamp_seconds", type: "gauge", "Unix time of the last successful reconcile.")
        metrics.describe("bulkhead_operations_applied_total", type: "counter", "nftables operations committed.")
        metrics.describe("bulkhead_drift_repairs_total", type: "counter", "Times our table was found changed behind our back and repaired.")
        metrics.describe("bulkhead_table_repairs_total", type: "counter", "Times the table itself was repaired: replaced (it lacked the ownership flags) or its flags fixed (dormant).")
        metrics.describe("bulkhead_managed_containers", type: "gauge", "Containers that match some service.")
        metrics.describe("bulkhead_docker_up", type: "gauge", "1 while the container source answers (the Docker API, or a valid inventory file).")
        metrics.describe("bulkhead_source_reads_total", type: "counter", "Reads of the container source: full snapshots (start-up, after a gap, resync) and per-event reads of one container.")
        metrics.describe("bulkhead_source_gaps_total", type: "counter", "Times the source's event stream ended or a read failed (then a full snapshot follows).")
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
        metrics.set("bulkhead_source_gaps_total", 0)
        for cause in ["kernel", "policy", "snapshot", "container", "container_fallback"] { metrics.set("bulkhead_full_compiles_total", 0, labels: ["cause": cause]) }
        for kind in ["snapshot", "inspect"] { metrics.set("bulkhead_source_reads_total", 0, labels: ["kind": kind]) }
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

    /// Keeps the kernel's rule counters in the metrics while someone scrapes: a scrape asks, and
    /// from then on the counters are read once a second (on the netlink queue) until a minute
    /// passes without a scrape. A scrape answers from the last reading, at most about a second
    /// old, and never waits on netlink; an agent nobody scrapes reads nothing.
    func refreshCounters() async {
        while !Task.isCancelled {
            if await counterRequests.next().isEmpty { return }  // cancelled
            var secondsSinceAsked = 0
            while !Task.isCancelled {
                await netlink.run { [self] in refreshKernelCounters() }
                secondsSinceAsked = counterRequests.take().isEmpty ? secondsSinceAsked + 1 : 0
                if secondsSinceAsked > 60 { break }
                try? await configuration.clock.sleep(for: .seconds(1))
            }
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
    /// Names of the containers in the index it enforced, in no particular order (not sorted: at
    /// 10,000 containers that would cost more than the element commit; and not the index itself,
    /// whose copy a kept report would hold, making the next event's index update copy it all).
    public var containers: [String]
    /// Wall-clock time of the kernel's ack.
    public var finishedAt: Date
    /// From the start of the reconcile to the ack.
    public var seconds: Double
    /// The nft script of a small change (at most 20 operations; empty otherwise), for logs and tests.
    public var script: String = ""
    /// Whether it compiled the whole table (false: element operations for container changes only).
    public var fullCompile: Bool = false
}


