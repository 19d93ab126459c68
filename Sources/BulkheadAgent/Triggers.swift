import Synchronization

/// Why a reconcile runs. Several reasons arriving while one reconcile runs coalesce into the next.
public enum ReconcileReason: String, Sendable, Hashable, CaseIterable {
    /// Start-up.
    case startup
    /// A Docker event, or Docker reachable again after a gap: re-list containers.
    case docker
    /// The policy files changed (and loaded without errors).
    case policy
    /// Periodic full compare with the kernel.
    case resync
    /// The ruleset generation moved without us: someone else committed; compare with the kernel.
    case generation
    /// The previous attempt failed.
    case retry
}

/// A mailbox of pending reasons: `signal` adds, `next` waits for at least one and takes them all.
/// This is the coalescing: a burst of 50 Docker events during one reconcile becomes one more.
final class TriggerBox: Sendable {
    private struct State {
        var pending: Set<ReconcileReason> = []
        var waiter: CheckedContinuation<Set<ReconcileReason>, Never>?
    }

    private let state = Mutex(State())

    func signal(_ reason: ReconcileReason) {
        let resume: (CheckedContinuation<Set<ReconcileReason>, Never>, Set<ReconcileReason>)? = state.withLock { s in
            s.pending.insert(reason)
            guard let w = s.waiter else { return nil }
            s.waiter = nil
            let taken = s.pending
            s.pending = []
            return (w, taken)
        }
        if let (w, taken) = resume { w.resume(returning: taken) }
    }

    /// Waits for reasons; returns an empty set if the task is cancelled while waiting.
    func next() async -> Set<ReconcileReason> {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Set<ReconcileReason>, Never>) in
                let ready: Set<ReconcileReason>? = state.withLock { s in
                    if !s.pending.isEmpty || Task.isCancelled {
                        let taken = s.pending
                        s.pending = []
                        return taken
                    }
                    s.waiter = c
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        } onCancel: {
            let w = state.withLock { s -> CheckedContinuation<Set<ReconcileReason>, Never>? in
                let w = s.waiter
                s.waiter = nil
                return w
            }
            w?.resume(returning: [])
        }
    }
}
