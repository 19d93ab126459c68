#if DEBUG
import BulkheadInventory
@testable import BulkheadDocker
import Foundation

/// Bytes as dockerd (or anything listening on its socket) answers: every JSON decoder the client
/// uses, then the models and the inventory built from them, and the `/events` stream fed in
/// chunks cut where the input says (a proxy may split or merge chunks anywhere).
enum DockerFuzz {
    static func run(_ bytes: [UInt8]) {
        let data = Data(bytes)
        let decoder = JSONDecoder()
        let networks = ((try? decoder.decode([WireNetwork].self, from: data)) ?? []).map(\.model)
        let containers = ((try? decoder.decode([WireContainer].self, from: data)) ?? []).map(\.model)
        var endpoints: [String: [String: DockerContainer.Endpoint]] = [:]
        if let inspect = try? decoder.decode(WireNetworkInspect.self, from: data) {
            endpoints[inspect.id] = (inspect.containers ?? [:]).mapValues { $0.endpoint(networkID: inspect.id) }
        }
        _ = try? decoder.decode(WireMessage.self, from: data)
        if !networks.isEmpty || !containers.isEmpty || !endpoints.isEmpty {
            let inventory = DockerInventory.make(networks: networks, containers: containers, endpoints: endpoints)
            let snapshot = InventorySnapshot.render(inventory)
            _ = InventoryLoader.load(Array(snapshot.utf8), file: "snapshot.yaml")
            Pipeline.run(Examples.policies, inventory)
        }
        // The event stream, whole and cut into chunks of a size taken from the input's length.
        var whole = DockerEventDecoder()
        _ = try? whole.feed(bytes + [UInt8(ascii: "\n")])
        var chunked = DockerEventDecoder()
        let step = 1 + bytes.count % 13
        var start = 0
        while start < bytes.count {
            let end = min(start + step, bytes.count)
            guard (try? chunked.feed(bytes[start..<end])) != nil else { break }
            start = end
        }
        var fresh = DockerEventDecoder()
        for event in (try? fresh.feed(bytes + [10])) ?? [] { _ = event.description }
    }
}
#else
enum DockerFuzz {
    /// The Docker decoders are internal to BulkheadDocker: only a debug build (testable) reaches them.
    static func run(_ bytes: [UInt8]) {}
}
#endif
