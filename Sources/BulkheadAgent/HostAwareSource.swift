import BulkheadDocker
import BulkheadInventory
import Foundation

/// Adds the host's own interface addresses to every inventory Docker reports, so traffic to the
/// host's uplink addresses is judged as `host` (as the kernel's input hook sees it), not `world`.
public struct HostAwareSource: ContainerSource {
    public let base: any ContainerSource

    public init(_ base: any ContainerSource) { self.base = base }

    public func inventory() async throws -> Inventory {
        var inventory = try await base.inventory()
        inventory.hostAddresses = LocalAddresses.read()
        return inventory
    }

    public func events(since: Date?) -> AsyncThrowingStream<DockerEvent, Error> {
        base.events(since: since)
    }
}
