import Dispatch

/// Where the agent's netlink calls run: one serial queue of their own, so a commit, a dump or a
/// conntrack walk — synchronous system calls that can take tens of milliseconds on a large table
/// — never occupies a thread of Swift's cooperative pool (where the loops and the source run)
/// nor one of NIO's event loops (where `/metrics` is answered). Serial, too, because the kernel
/// answers one batch at a time anyway: calls are never interleaved.
public final class NetlinkQueue: Sendable {
    private let queue: DispatchQueue
    nonisolated(unsafe) private static let key = DispatchSpecificKey<Bool>()

    public init(label: String = "bulkhead.netlink") {
        queue = DispatchQueue(label: label, qos: .userInitiated)
        queue.setSpecific(key: Self.key, value: true)
    }

    /// Whether the caller runs on a netlink queue (tests check that every backend call does).
    public static var isCurrent: Bool { DispatchQueue.getSpecific(key: key) == true }

    /// Runs `body` on the queue and waits for it without blocking the caller's thread.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result(catching: body)) }
        }
    }

    /// The same for a body that cannot fail.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            queue.async { continuation.resume(returning: body()) }
        }
    }
}
