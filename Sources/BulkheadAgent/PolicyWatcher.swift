import BulkheadPolicy
import Foundation
import Synchronization

/// Notices edits to the policy files by polling the walk of their directories (names, sizes,
/// modification and change times, modes, owners): cheap for a directory of policies, works on
/// every filesystem (inotify misses edits through some bind mounts and editors' rename-over-save),
/// and needs no extra dependency. The walk never opens a file (see `PolicyFiles`).
struct PolicyWatcher: Sendable {
    var paths: [String]
    var load: @Sendable (PolicyFiles) -> PolicyLoader.Result

    enum Outcome: Sendable {
        /// Nothing changed since `known`.
        case unchanged
        case loaded(signature: [String], result: PolicyLoader.Result)
    }

    /// Walks the paths and loads them when their signature differs from `known`.
    func reload(unless known: [String]) -> Outcome {
        let found = PolicyFiles.discover(paths)
        let signature = found.fingerprint + found.diagnostics.map(\.formatted)
        guard signature != known else { return .unchanged }
        return .loaded(signature: signature, result: load(found))
    }
}

/// Runs one blocking job at a time on a thread of its own and lets an async loop poll for its
/// result. A policy reload reads files: on a hung filesystem it can block for ever, and it must
/// then block neither the cooperative pool nor the agent's other loops; the loop notices that it
/// is overdue and says so.
final class BlockingJob<Value: Sendable>: Sendable {
    private struct Running {
        var started: ContinuousClock.Instant
        var result: Value?
    }

    private let running = Mutex<Running?>(nil)

    /// Starts `work` unless a job is still running (then returns false).
    func start(_ work: @escaping @Sendable () -> Value) -> Bool {
        let free = running.withLock { r in
            guard r == nil else { return false }
            r = Running(started: .now, result: nil)
            return true
        }
        guard free else { return false }
        let thread = Thread { [self] in
            let value = work()
            running.withLock { $0?.result = value }
        }
        thread.name = "bulkhead-policy-reload"
        thread.start()
        return true
    }

    /// The finished job's result (once), or nil.
    func take() -> Value? {
        running.withLock { r in
            guard let value = r?.result else { return nil }
            r = nil
            return value
        }
    }

    /// How long the current job has been running, or nil when none is.
    var elapsed: Duration? {
        running.withLock { r in r.map { ContinuousClock.now - $0.started } }
    }
}
