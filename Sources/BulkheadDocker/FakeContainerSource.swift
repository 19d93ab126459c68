import BulkheadInventory
import BulkheadSource
import Foundation
import Synchronization

/// An in-memory `ContainerSource` standing in for Docker in tests of whatever consumes it (the agent).
///
/// It keeps the `ContainerSource` contract: open event streams receive what `send` or `run` emit,
/// in order; `disconnect` ends them with an error as a dockerd restart would; while `failure` is
/// set, `snapshot()` and `inspect(id:)` throw it and new event streams end with it at once. It
/// counts every call (`snapshotCalls`, `inspected`), so a test can require exactly one read of the
/// container each event names and no full list. `run` and `remove`
/// change the inventory and emit the events Docker emits for `docker run` / `docker rm -f`, in
/// Docker's order, with the inventory already updated when `connect` is delivered.
public final class FakeContainerSource: ContainerSource, Sendable {
    private struct State {
        var inventory: Inventory
        var failure: DockerClientError?
        var streams: [Int: AsyncThrowingStream<SourceEvent, Error>.Continuation] = [:]
        var nextStream = 0
        var snapshotCalls = 0
        var inspected: [String] = []
        var subscriptions = 0
    }

    private let state: Mutex<State>

    public init(inventory: Inventory = Inventory()) {
        state = Mutex(State(inventory: inventory))
    }

    // MARK: ContainerSource

    public func snapshot() async throws -> Inventory {
        try state.withLock { s throws(DockerClientError) -> Inventory in
            s.snapshotCalls += 1
            if let failure = s.failure { throw failure }
            return s.inventory
        }
    }

    public func inspect(id: String) async throws -> Container? {
        try state.withLock { s throws(DockerClientError) -> Container? in
            s.inspected.append(id)
            if let failure = s.failure { throw failure }
            return s.inventory.containers.first { EndpointIndex.key(of: $0) == id }
        }
    }

    public func outageDescription(_ error: (any Error)?) -> String {
        "Docker is unreachable (the last rules stay enforced)"
    }

    /// The fake keeps no history, like a dockerd whose buffer has rolled over.
    public func events() -> AsyncThrowingStream<SourceEvent, Error> {
        let (stream, continuation) = AsyncThrowingStream<SourceEvent, Error>.makeStream()
        state.withLock { s in
            s.subscriptions += 1
            if let failure = s.failure {
                continuation.finish(throwing: failure)
                return
            }
            let id = s.nextStream
            s.nextStream += 1
            s.streams[id] = continuation
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.streams.removeValue(forKey: id) }
            }
        }
        return stream
    }

    // MARK: Driving it

    /// The inventory `snapshot()` returns now.
    public var currentInventory: Inventory {
        get { state.withLock { $0.inventory } }
        set { state.withLock { $0.inventory = newValue } }
    }

    /// How often `snapshot()` was called (a re-list after a gap shows up here).
    public var snapshotCalls: Int { state.withLock { $0.snapshotCalls } }
    /// The ids `inspect(id:)` was asked for, in order.
    public var inspected: [String] { state.withLock { $0.inspected } }
    /// How often `events()` was called (a reconnect shows up here).
    public var subscriptions: Int { state.withLock { $0.subscriptions } }
    /// Event streams currently open.
    public var openStreams: Int { state.withLock { $0.streams.count } }

    /// Makes Docker unreachable (`snapshot()` throws, new streams fail, open ones end) or, with
    /// nil, reachable again.
    public func setFailure(_ failure: DockerClientError?) {
        let ended = state.withLock { s -> [AsyncThrowingStream<SourceEvent, Error>.Continuation] in
            s.failure = failure
            guard failure != nil else { return [] }
            defer { s.streams.removeAll() }
            return Array(s.streams.values)
        }
        for c in ended { c.finish(throwing: failure!) }
    }

    /// Ends every open event stream with `error`, as when dockerd restarts.
    public func disconnect(with error: DockerClientError = .eventStreamEnded(path: "fake")) {
        let ended = state.withLock { s -> [AsyncThrowingStream<SourceEvent, Error>.Continuation] in
            defer { s.streams.removeAll() }
            return s.streams.keys.sorted().map { s.streams[$0]! }
        }
        for c in ended { c.finish(throwing: error) }
    }

    /// Delivers `event` to every open stream.
    public func send(_ event: SourceEvent) {
        let open = state.withLock { s in s.streams.keys.sorted().map { s.streams[$0]! } }
        for c in open { c.yield(event) }
    }

    /// Adds `container` like `docker run`: emits create, then for each network connect (after the
    /// attachment is in the inventory), then start. Its id defaults to a made-up one.
    public func run(_ container: Container) {
        var container = container
        if container.id == nil { container.id = Self.makeID(container.name) }
        let id = container.id!
        var created = container
        created.networks = container.networks.mapValues { _ in Attachment() }
        update { $0.containers.removeAll { $0.name == container.name }; $0.containers.append(created) }
        send(SourceEvent(.added, containerID: id, containerName: container.name))
        for name in container.networks.keys.sorted() {
            update { inv in
                if let i = inv.containers.firstIndex(where: { $0.id == id }) { inv.containers[i].networks[name] = container.networks[name] }
            }
            send(SourceEvent(.connected(network: name), containerID: id, containerName: container.name))
        }
        send(SourceEvent(.changed, containerID: id, containerName: container.name))
    }

    /// Removes the container named `name` like `docker rm -f`: die, disconnect from each network,
    /// destroy (it leaves the inventory at destroy).
    public func remove(_ name: String) {
        guard let container = state.withLock({ s in s.inventory.containers.first { $0.name == name } }) else { return }
        let id = EndpointIndex.key(of: container)  // what `inspect(id:)` answers to
        send(SourceEvent(.removed, containerID: id, containerName: name))
        for network in container.networks.keys.sorted() {
            update { inv in
                if let i = inv.containers.firstIndex(where: { $0.name == name }) { inv.containers[i].networks[network] = nil }
            }
            send(SourceEvent(.disconnected(network: network), containerID: id, containerName: name))
        }
        update { $0.containers.removeAll { $0.name == name } }
        send(SourceEvent(.removed, containerID: id, containerName: name))
    }

    /// Changes the inventory without any event, as when events were lost: only a snapshot (a
    /// resync, or the one after a gap) shows the change.
    public func changeWithoutEvents(_ body: (inout Inventory) -> Void) {
        update(body)
    }

    private func update(_ body: (inout Inventory) -> Void) {
        state.withLock { body(&$0.inventory) }
    }

    /// A stable 64-hex-digit id derived from a name, so tests can predict it (the generated
    /// source's derivation: one place).
    public static func makeID(_ name: String) -> String { GeneratedSource.makeID(name) }
}
