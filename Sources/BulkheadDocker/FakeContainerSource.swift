import BulkheadInventory
import Foundation
import Synchronization

/// An in-memory `ContainerSource` for tests of whatever consumes Docker (the agent).
///
/// It keeps the `ContainerSource` contract: open event streams receive what `send` or `run` emit,
/// in order; `disconnect` ends them with an error as a dockerd restart would; while `failure` is
/// set, `inventory()` throws it and new event streams end with it at once. `run` and `remove`
/// change the inventory and emit the events Docker emits for `docker run` / `docker rm -f`, in
/// Docker's order, with the inventory already updated when `connect` is delivered.
public final class FakeContainerSource: ContainerSource, Sendable {
    private struct State {
        var inventory: Inventory
        var failure: DockerClientError?
        var streams: [Int: AsyncThrowingStream<DockerEvent, Error>.Continuation] = [:]
        var nextStream = 0
        var inventoryCalls = 0
        var subscriptions = 0
        var clock: Int64 = 1_700_000_000_000_000_000
    }

    private let state: Mutex<State>

    public init(inventory: Inventory = Inventory()) {
        state = Mutex(State(inventory: inventory))
    }

    // MARK: ContainerSource

    public func inventory() async throws -> Inventory {
        try state.withLock { s throws(DockerClientError) -> Inventory in
            s.inventoryCalls += 1
            if let failure = s.failure { throw failure }
            return s.inventory
        }
    }

    /// `since` is ignored: the fake keeps no history, like a dockerd whose buffer has rolled over.
    public func events(since: Date?) -> AsyncThrowingStream<DockerEvent, Error> {
        let (stream, continuation) = AsyncThrowingStream<DockerEvent, Error>.makeStream()
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

    /// The inventory `inventory()` returns now.
    public var currentInventory: Inventory {
        get { state.withLock { $0.inventory } }
        set { state.withLock { $0.inventory = newValue } }
    }

    /// How often `inventory()` was called (a re-list after a gap shows up here).
    public var inventoryCalls: Int { state.withLock { $0.inventoryCalls } }
    /// How often `events(since:)` was called (a reconnect shows up here).
    public var subscriptions: Int { state.withLock { $0.subscriptions } }
    /// Event streams currently open.
    public var openStreams: Int { state.withLock { $0.streams.count } }

    /// Makes Docker unreachable (`inventory()` throws, new streams fail, open ones end) or, with
    /// nil, reachable again.
    public func setFailure(_ failure: DockerClientError?) {
        let ended = state.withLock { s -> [AsyncThrowingStream<DockerEvent, Error>.Continuation] in
            s.failure = failure
            guard failure != nil else { return [] }
            defer { s.streams.removeAll() }
            return Array(s.streams.values)
        }
        for c in ended { c.finish(throwing: failure!) }
    }

    /// Ends every open event stream with `error`, as when dockerd restarts.
    public func disconnect(with error: DockerClientError = .eventStreamEnded(path: "fake")) {
        let ended = state.withLock { s -> [AsyncThrowingStream<DockerEvent, Error>.Continuation] in
            defer { s.streams.removeAll() }
            return s.streams.keys.sorted().map { s.streams[$0]! }
        }
        for c in ended { c.finish(throwing: error) }
    }

    /// Delivers `event` to every open stream.
    public func send(_ event: DockerEvent) {
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
        send(DockerEvent(action: .create, containerID: id, containerName: container.name, timeNano: tick()))
        for name in container.networks.keys.sorted() {
            update { inv in
                if let i = inv.containers.firstIndex(where: { $0.id == id }) { inv.containers[i].networks[name] = container.networks[name] }
            }
            send(DockerEvent(action: .connect, containerID: id, containerName: container.name, networkID: Self.makeID(name), networkName: name, timeNano: tick()))
        }
        send(DockerEvent(action: .start, containerID: id, containerName: container.name, timeNano: tick()))
    }

    /// Removes the container named `name` like `docker rm -f`: die, disconnect from each network,
    /// destroy (it leaves the inventory at destroy).
    public func remove(_ name: String) {
        guard let container = state.withLock({ s in s.inventory.containers.first { $0.name == name } }) else { return }
        let id = container.id ?? Self.makeID(name)
        send(DockerEvent(action: .die, containerID: id, containerName: name, timeNano: tick()))
        for network in container.networks.keys.sorted() {
            update { inv in
                if let i = inv.containers.firstIndex(where: { $0.name == name }) { inv.containers[i].networks[network] = nil }
            }
            send(DockerEvent(action: .disconnect, containerID: id, containerName: name, networkID: Self.makeID(network), networkName: network, timeNano: tick()))
        }
        update { $0.containers.removeAll { $0.name == name } }
        send(DockerEvent(action: .destroy, containerID: id, containerName: name, timeNano: tick()))
    }

    private func update(_ body: (inout Inventory) -> Void) {
        state.withLock { body(&$0.inventory) }
    }

    private func tick() -> Int64 {
        state.withLock { s in s.clock += 1_000_000; return s.clock }
    }

    /// A stable 64-hex-digit id derived from a name (FNV-1a, repeated), so tests can predict it.
    public static func makeID(_ name: String) -> String {
        var out = ""
        var hash: UInt64 = 0xcbf29ce484222325
        for round in 0..<4 {
            for b in Array(name.utf8) + [UInt8(round)] { hash = (hash ^ UInt64(b)) &* 0x100000001b3 }
            let hex = String(hash, radix: 16)
            out += String(repeating: "0", count: 16 - hex.count) + hex
        }
        return out
    }
}
