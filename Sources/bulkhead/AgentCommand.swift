import ArgumentParser
import BulkheadAgent
import BulkheadDocker
import BulkheadNetfilter
import BulkheadSource
import Glibc
import Logging
import ServiceLifecycle

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the host agent: keep the kernel in step with the policies and Docker, repair drift, serve metrics.",
        discussion: """
        Needs root (CAP_NET_ADMIN). Reconciles on container events (Docker's, or edits of the --inventory file),
        policy edits, foreign ruleset changes and every --resync seconds. Logs to stderr, one line per reconcile. Serves /metrics, /healthz and /readyz.
        SIGTERM or SIGINT stops it gracefully; the rules stay in the kernel (`bulkhead uninstall` removes them).
        """
    )

    @Option(name: .customLong("policies"), help: "Policy file or directory (repeatable).")
    var policyPaths: [String] = ["policies"]

    @Option(help: "Docker Engine API socket (unix:///path); the default source. Not with --inventory.")
    var docker: String?

    @Option(help: ArgumentHelp("Follow this inventory snapshot file instead of Docker (its edits are enforced as they are saved). Not with --docker.", valueName: "file"))
    var inventory: String?

    @Option(help: "Address for /metrics, /healthz and /readyz.")
    var listen: String = "127.0.0.1:9641"

    @Option(help: "Seconds between full compares with the kernel.")
    var resync: Int = 30

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Option(help: "Program the nftables of this network namespace (a name under /var/run/netns).")
    var netns: String?

    func validate() throws {
        if docker != nil && inventory != nil {
            throw ValidationError("--docker and --inventory are two container sources: give one of them")
        }
        guard let colon = listen.lastIndex(of: ":"), Int(listen[listen.index(after: colon)...]) != nil else {
            throw ValidationError("--listen must be HOST:PORT, such as 127.0.0.1:9641")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
        guard resync > 0 else { throw ValidationError("--resync must be a positive number of seconds") }
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            // Log lines quote Docker labels, policy names and errors: escaped so none can forge a line.
            return SanitizingLogHandler(wrapping: handler)
        }
        // The soft file descriptor limit is often 1,024; the hard one is what the host allows. The
        // HTTP port may use a quarter of it (see HTTPEndpoint.Limits); the rest is the agent's own.
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        let logger = Logger(label: "bulkhead.agent")
        let colon = listen.lastIndex(of: ":")!
        var config = AgentConfiguration(policyPaths: policyPaths)
        config.listenHost = String(listen[..<colon])
        config.listenPort = Int(listen[listen.index(after: colon)...])!
        config.resyncInterval = .seconds(resync)
        let backend: NetlinkNetfilter
        let source: any ContainerSource
        do {
            backend = try NetlinkNetfilter(namespace: netns)
            _ = try backend.generation()
            for line in try BridgeNetfilter.ensureEnabled(namespace: netns) { logger.notice("\(line)") }
            if let inventory {
                source = InventoryFileSource(path: inventory)
            } else {
                source = try DockerClient(endpoint: docker ?? "unix://" + DockerEndpoint.defaultSocketPath)
            }
        } catch {
            Inputs.printError("\(error)")
            throw ExitCode(ExitStatus.failure)
        }
        logger.info("table ownership: \(backend.ownership)")
        // Without connection tracking the agent still enforces; only established connections outlive a deny.
        var connections: NetlinkConntrack?
        do {
            connections = try NetlinkConntrack(namespace: netns)
        } catch {
            logger.error("cannot open connection tracking: established connections will outlive a deny until they end", metadata: ["error": "\(error)"])
        }
        let agent = Agent(configuration: config, backend: backend, source: HostAwareSource(source, portFinder: NetlinkPortFinder(namespace: netns), logger: logger), logger: logger,
                          connections: connections)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: agent)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}
