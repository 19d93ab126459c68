import ArgumentParser
import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadEscaping
import BulkheadInventory
import BulkheadNetfilter
import BulkheadPolicy
import BulkheadRuleset
import BulkheadYAML
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Where policies, container metadata and the kernel come from: shared by plan, apply, explain.
struct SourceOptions: ParsableArguments {
    @Option(name: .customLong("policies"), help: "Policy file or directory (repeatable).")
    var policyPaths: [String] = ["policies"]

    @Option(help: "Inventory snapshot (YAML or JSON) describing the containers and networks. Default: ask Docker.")
    var inventory: String?

    @Option(help: "Docker Engine API socket (unix:///path) used when --inventory is not given.")
    var docker: String = "unix://" + DockerEndpoint.defaultSocketPath

    @Option(help: "Program the nftables of this network namespace (a name under /var/run/netns) instead of the current one.")
    var netns: String?
}

/// A failure already explained on stderr; carries the exit status.
struct Reported: Error {
    var status: Int32
}

enum Inputs {
    static func printError(_ message: String) {
        var stderr = StandardError()
        print("error: \(Escape.terminalLines(message))", to: &stderr)
    }

    static func note(_ message: String) {
        var stderr = StandardError()
        print(Escape.terminalLines(message), to: &stderr)
    }

    /// Loads policies, refusing any with errors (diagnostics on stderr, exit 1; 66 when unreadable).
    static func policies(_ options: SourceOptions) throws -> PolicySet {
        let loaded = PolicyLoader.load(paths: options.policyPaths)
        let errors = loaded.diagnostics.filter { $0.severity == .error }
        if !errors.isEmpty {
            for d in errors { note(Escape.terminal(d.formatted)) }
            printError("the policies have \(errors.count) error\(errors.count == 1 ? "" : "s"); nothing was changed (see `bulkhead validate`)")
            throw Reported(status: loaded.unreadablePath ? ExitStatus.noInput : ExitStatus.failure)
        }
        return loaded.policies
    }

    static func inventory(_ options: SourceOptions) throws -> Inventory {
        guard let path = options.inventory else {
            return try dockerInventory(options.docker)
        }
        let (inventory, diagnostics) = InventoryLoader.load(path: path)
        guard let inventory else {
            for d in diagnostics { note(Escape.terminal(d.formatted)) }
            printError("cannot use inventory \(path); nothing was changed")
            throw Reported(status: diagnostics.contains { $0.code == .unreadable } ? ExitStatus.noInput : ExitStatus.failure)
        }
        return inventory
    }

    /// Asks Docker for the live metadata (and adds the host's own addresses); refuses to go on
    /// without it rather than acting on an empty list.
    static func dockerInventory(_ endpoint: String) throws -> Inventory {
        let client: DockerClient
        do {
            client = try DockerClient(endpoint: endpoint)
        } catch {
            printError("--docker: \(error)")
            throw Reported(status: ExitStatus.usage)
        }
        // Root can read containers' namespaces: find their bridge ports (port binding) as the agent does.
        let source = HostAwareSource(client, portFinder: geteuid() == 0 ? NetlinkPortFinder() : nil)
        let result = blocking { () async throws -> Inventory in try await source.snapshot() }
        switch result {
        case .success(let inventory):
            return inventory
        case .failure(let error):
            printError("cannot read container metadata from Docker: \(error); pass --inventory FILE to work from a snapshot. Nothing was changed")
            throw Reported(status: ExitStatus.failure)
        }
    }

    /// Runs async work from a synchronous command (the commands are otherwise synchronous).
    static func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            do { box.result = .success(try await work()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return box.result!
    }

    /// Opens the kernel backend, or explains why it cannot be read (in the backend's error
    /// vocabulary, `RulesetError`: `isPermissionDenied` without CAP_NET_ADMIN).
    static func kernel(_ options: SourceOptions) -> Result<NetlinkNetfilter, RulesetError> {
        do {
            let backend = try NetlinkNetfilter(namespace: options.netns)
            _ = try backend.generation()
            return .success(backend)
        } catch let error as NetfilterError {
            return .failure(NetlinkNetfilter.rulesetError(error))
        } catch let error as RulesetError {
            return .failure(error)
        } catch {
            return .failure(.backendFailure("\(error)"))
        }
    }

    /// The live connections the policies deny, read from connection tracking in the namespace
    /// `plan`/`apply` program (`.unavailable` with the reason when it cannot be read).
    /// `evaluator` is the plan's (`Plan.evaluator`), so the census judges by the table it programs.
    static func connectionCensus(_ options: SourceOptions, evaluator: Evaluator) -> Revocation.Census {
        do {
            let tracking = try NetlinkConntrack(namespace: options.netns)
            return Revocation.census(tracking, evaluator: evaluator)
        } catch {
            return .unavailable("cannot read connection tracking: \(error)")
        }
    }

    /// Cuts the live connections the policies deny, after a commit. Never throws: a failure
    /// leaves the committed rules in place and is in the report.
    static func revokeConnections(_ options: SourceOptions, evaluator: Evaluator) -> Revocation.Report {
        do {
            let tracking = try NetlinkConntrack(namespace: options.netns)
            return Revocation.revoke(tracking, evaluator: evaluator)
        } catch {
            var report = Revocation.Report()
            report.dumpError = error
            return report
        }
    }

    /// Prints a failure of the kernel side (backend, bridge sysctls, lab) and returns exit status 1.
    static func kernelFailure(_ error: any Error) -> ExitCode {
        printError("\(error)")
        return ExitCode(ExitStatus.failure)
    }
}

/// Standard error as a `TextOutputStream`.
struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        let bytes = Array(string.utf8)
        bytes.withUnsafeBufferPointer { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// Carries a result out of a detached task; written once before the semaphore is signalled.
final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
