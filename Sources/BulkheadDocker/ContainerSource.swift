import BulkheadInventory
import Foundation

/// Where the agent learns what runs on the host: a full listing, and a stream of changes.
///
/// `DockerClient` is the real one; `FakeContainerSource` stands in for it in unit tests.
///
/// The contract both keep:
/// - `inventory()` is a complete, consistent-enough snapshot or an error — never a partial list.
///   A caller must not program rules from an empty inventory it got by swallowing an error.
/// - `events(since:)` yields events in Docker's order until the connection drops; then it throws
///   (it never finishes quietly, because a quiet end would hide lost events). Events in the gap
///   are lost, so the caller reconnects and calls `inventory()` again before trusting its state.
///   Cancelling the consuming task ends the stream without an error.
public protocol ContainerSource: Sendable {
    func inventory() async throws -> Inventory
    func events(since: Date?) -> AsyncThrowingStream<DockerEvent, Error>
    /// The path of a container's network namespace (Docker's `SandboxKey`, else `/proc/PID/ns/net`),
    /// where its host-side veths can be found; nil when the source cannot tell.
    func networkNamespace(ofContainer id: String) async throws -> String?
}

extension ContainerSource {
    public func networkNamespace(ofContainer id: String) async throws -> String? { nil }
}
