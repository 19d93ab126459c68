import BulkheadInventory

/// Where the agent learns what runs on the host: a full snapshot, a stream of changes that each
/// name one container, and a read of that one container.
///
/// Docker (`DockerClient` in BulkheadDocker) is one source; `InventoryFileSource` (a watched
/// snapshot file) is another; `FakeContainerSource` stands in for Docker in tests.
///
/// The contract every source keeps:
/// - `snapshot()` is a complete, consistent-enough inventory or an error — never a partial list.
///   A caller must not program rules from an empty inventory it got by swallowing an error.
/// - `events()` yields changes in the source's order until the source becomes unreachable or
///   unusable; then it throws (it never finishes quietly: a quiet end would hide lost changes).
///   Changes in the gap are lost, so the caller subscribes again and calls `snapshot()` before
///   trusting its state. A `.resynced` event says the same without an error: re-read everything.
///   Cancelling the consuming task ends the stream without an error.
/// - `inspect(id:)` reads the one container an event names, as `snapshot()` would list it; nil
///   when the source no longer has it (or it holds no addresses any more).
public protocol ContainerSource: Sendable {
    func snapshot() async throws -> Inventory
    func events() -> AsyncThrowingStream<SourceEvent, Error>
    func inspect(id: String) async throws -> Container?
    /// The path of a container's network namespace, where its host-side veths can be found; nil
    /// when the source cannot tell.
    func networkNamespace(ofContainer id: String) async throws -> String?
    /// What `/readyz` says while the source is unusable because of `error` (the last rules stay).
    func outageDescription(_ error: (any Error)?) -> String
}

extension ContainerSource {
    public func networkNamespace(ofContainer id: String) async throws -> String? { nil }
}

/// One change a source reports. Container changes carry the container's key (its id, or its name
/// when the source gives it no id); the reader of the event asks the source for that container.
public struct SourceEvent: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable {
        /// A container appeared (Docker: `create`).
        case added
        /// Something about it may have changed (Docker: `start`).
        case changed
        /// It holds no addresses any more (Docker: `die`, `destroy`).
        case removed
        /// It was attached to / detached from a network (Docker: network `connect`/`disconnect`).
        case connected(network: String)
        case disconnected(network: String)
        /// Changes may have been missed, or cannot be told apart (an inventory file whose networks
        /// changed): take a new `snapshot()`.
        case resynced
    }

    public var kind: Kind
    /// The container concerned; nil for `.resynced`.
    public var containerID: String?
    /// For logs, when the source knows it.
    public var containerName: String?

    public init(_ kind: Kind, containerID: String?, containerName: String? = nil) {
        self.kind = kind
        self.containerID = containerID
        self.containerName = containerName
    }

    public static let resynced = SourceEvent(.resynced, containerID: nil)

    public var description: String {
        let who = containerName ?? containerID.map { String($0.prefix(12)) } ?? ""
        switch kind {
        case .added: return "container added \(who)"
        case .changed: return "container changed \(who)"
        case .removed: return "container removed \(who)"
        case .connected(let n): return "container \(who) connected to \(n)"
        case .disconnected(let n): return "container \(who) disconnected from \(n)"
        case .resynced: return "resynced: read everything again"
        }
    }
}
