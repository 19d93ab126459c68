import Synchronization

/// Why a reconcile runs. Several reasons arriving while one reconcile runs coalesce into the next.
public enum ReconcileReason: String, Sendable, Hashable, CaseIterable {
    /// Start-up.
    case startup
    /// The endpoint index changed: a source event (one container read again) or a new snapshot.
    case docker
    /// The policy files changed (and loaded without errors).
    case policy
    /// Periodic full compare with the kernel.
    case resync
    /// The ruleset generation moved without us: someone else committed; compare with the kernel.
    case generation
    /// The previous attempt failed.
    case retry
    /// The source answered again after a failure (a new snapshot is in): reconcile now, not after the backoff.
    case reachable
}

/// A mailbox of pending reasons: `signal` adds, `next` waits for at least one and takes them all.
/// This is the coalescing: a burst of 50 Docker events during one reconcile becomes one more.
final class TriggerBox: Sendable {
    private struct State {
        var pending: Set<ReconcileReason> = []
        var waiter: CheckedContinuation<Set<ReconcileReason>, Never>?
        /// The reasons that wake the waiter; nil: any.
        var wakeOn: Set<ReconcileReason>?
    }

    private let state = Mutex(State())

    func signal(_ reason: ReconcileReason) {
        let resume: (CheckedContinuation<Set<ReconcileReason>, Never>, Set<ReconcileReason>)? = state.withLock { s in
            s.pending.insert(reason)
            guard let w = s.waiter, s.wakeOn?.contains(reason) ?? true else { return nil }
            s.waiter = nil
            s.wakeOn = nil
            let taken = s.pending
            s.pending = []
            return (w, taken)
        }
        if let (w, taken) = resume { w.resume(returning: taken) }
    }

    /// Waits for reasons; returns an empty set if the task is cancelled while waiting.
    func next() async -> Set<ReconcileReason> {
        await next(wakingOn: nil)
    }

    /// Waits out a retry backoff: returns after `backoff` with everything pending plus `.retry`, or
    /// earlier as soon as one of `urgent` arrives (Docker answering again must not wait out a
    /// backoff that grew while it did not). Other reasons wait: a burst of events while the list
    /// fails must not turn into a burst of lists against a struggling dockerd.
    func next(afterBackoff backoff: Duration, unless urgent: Set<ReconcileReason>,
              clock: any Clock<Duration> = ContinuousClock()) async -> Set<ReconcileReason> {
        let woken = await withTaskGroup(of: Set<ReconcileReason>.self) { group in
            group.addTask { await self.next(wakingOn: urgent) }
            group.addTask {
                try? await clock.sleep(for: backoff)
                return []
            }
            var taken = await group.next() ?? []
            group.cancelAll()
            // The waiter, cancelled, returns [] unless it took reasons in the same instant.
            while let more = await group.next() { taken.formUnion(more) }
            return taken
        }
        if Task.isCancelled { return [] }
        return woken.union(take()).union([.retry])
    }

    /// Takes whatever is pending without waiting.
    func take() -> Set<ReconcileReason> {
        state.withLock { s in
            defer { s.pending = [] }
            return s.pending
        }
    }

    private func next(wakingOn wake: Set<ReconcileReason>?) async -> Set<ReconcileReason> {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Set<ReconcileReason>, Never>) in
                let ready: Set<ReconcileReason>? = state.withLock { s in
                    if Task.isCancelled { return [] }
                    let wanted = wake.map { !s.pending.isDisjoint(with: $0) } ?? !s.pending.isEmpty
                    if wanted {
                        let taken = s.pending
                        s.pending = []
                        return taken
                    }
                    s.waiter = c
                    s.wakeOn = wake
                    return nil
                }
                if let ready { c.resume(returning: ready) }
            }
        } onCancel: {
            let w = state.withLock { s -> CheckedContinuation<Set<ReconcileReason>, Never>? in
                let w = s.waiter
                s.waiter = nil
                s.wakeOn = nil
                return w
            }
            w?.resume(returning: [])
        }
    }
}
