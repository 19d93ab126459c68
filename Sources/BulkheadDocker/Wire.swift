import BulkheadInventory
import Foundation

// The Engine API's JSON, decoded leniently: every field Docker may omit or null is optional, and
// the fields read are the ones stable from API 1.24 to today's daemons, so no version pin is needed.

struct WireNetwork: Decodable {
    var name: String
    var id: String
    var driver: String?
    var enableIPv6: Bool?
    var isInternal: Bool?
    var ipam: IPAM?
    var options: [String: String]?
    var labels: [String: String]?

    struct IPAM: Decodable {
        var config: [Config]?
        enum CodingKeys: String, CodingKey { case config = "Config" }
    }

    struct Config: Decodable {
        var subnet: String?
        var gateway: String?
        enum CodingKeys: String, CodingKey { case subnet = "Subnet", gateway = "Gateway" }
    }

    enum CodingKeys: String, CodingKey {
        case name = "Name", id = "Id", driver = "Driver", enableIPv6 = "EnableIPv6", isInternal = "Internal"
        case ipam = "IPAM", options = "Options", labels = "Labels"
    }

    var model: DockerNetwork {
        let configs = ipam?.config ?? []
        let subnets = configs.compactMap { $0.subnet.flatMap(IPNetwork.init)?.normalized }
        let gateways = configs.compactMap { $0.gateway.flatMap(WireNetwork.address) }
        let driver = driver ?? ""
        var bridge: String?
        if driver == "bridge" {
            // Docker names the bridge itself unless the network was created with this option.
            bridge = options?["com.docker.network.bridge.name"] ?? "br-\(id.prefix(12))"
        }
        return DockerNetwork(
            id: id, name: name, driver: driver,
            subnets: Array(Set(subnets)).sorted(), gateways: Array(Set(gateways)).sorted(),
            bridgeInterface: bridge, enableIPv6: enableIPv6 ?? false, isInternal: isInternal ?? false,
            labels: labels ?? [:]
        )
    }

    /// `172.20.0.1` or `172.20.0.1/16` (both forms appear in IPAM and endpoint fields); empty is nil.
    static func address(_ text: String) -> IPAddress? {
        guard !text.isEmpty else { return nil }
        return IPAddress(String(text.split(separator: "/", maxSplits: 1)[0]))
    }
}

struct WireContainer: Decodable {
    var id: String
    var names: [String]?
    var state: String?
    var labels: [String: String]?
    var networkSettings: Settings?

    struct Settings: Decodable {
        var networks: [String: Endpoint]?
        enum CodingKeys: String, CodingKey { case networks = "Networks" }
    }

    struct Endpoint: Decodable {
        var networkID: String?
        var ipAddress: String?
        var globalIPv6Address: String?
        var gateway: String?
        var ipv6Gateway: String?
        var macAddress: String?
        enum CodingKeys: String, CodingKey {
            case networkID = "NetworkID", ipAddress = "IPAddress", globalIPv6Address = "GlobalIPv6Address"
            case gateway = "Gateway", ipv6Gateway = "IPv6Gateway", macAddress = "MacAddress"
        }
    }

    enum CodingKeys: String, CodingKey {
        case id = "Id", names = "Names", state = "State", labels = "Labels", networkSettings = "NetworkSettings"
    }

    /// Docker lists a container under `/name`, and also under `/other/alias` for each legacy link
    /// to it; the own name is the one with a single slash.
    var name: String {
        let all = names ?? []
        let own = all.first { $0.hasPrefix("/") && !$0.dropFirst().contains("/") } ?? all.first ?? String(id.prefix(12))
        return own.hasPrefix("/") ? String(own.dropFirst()) : own
    }

    var model: DockerContainer {
        let networks = (networkSettings?.networks ?? [:]).mapValues { e in
            DockerContainer.Endpoint(
                networkID: e.networkID.flatMap { $0.isEmpty ? nil : $0 },
                ipv4: e.ipAddress.flatMap(WireNetwork.address),
                ipv6: e.globalIPv6Address.flatMap(WireNetwork.address),
                gateways: [e.gateway, e.ipv6Gateway].compactMap { $0.flatMap(WireNetwork.address) }.sorted(),
                mac: e.macAddress.flatMap { Attachment.isValidMAC($0) ? $0.lowercased() : nil }
            )
        }
        return DockerContainer(id: id, name: name, state: state ?? "", labels: labels ?? [:], networks: networks)
    }
}

/// `GET /containers/{id}/json`, the part that locates the container's network namespace.
struct WireContainerInspect: Decodable {
    var state: State?
    var networkSettings: Settings?

    struct State: Decodable {
        var pid: Int?
        enum CodingKeys: String, CodingKey { case pid = "Pid" }
    }

    struct Settings: Decodable {
        var sandboxKey: String?
        enum CodingKeys: String, CodingKey { case sandboxKey = "SandboxKey" }
    }

    enum CodingKeys: String, CodingKey { case state = "State", networkSettings = "NetworkSettings" }
}

/// `GET /networks/{id}`: the list form leaves `Containers` empty; the inspect fills it.
struct WireNetworkInspect: Decodable {
    var id: String
    var containers: [String: Endpoint]?

    struct Endpoint: Decodable {
        var ipv4Address: String?
        var ipv6Address: String?
        var macAddress: String?
        enum CodingKeys: String, CodingKey { case ipv4Address = "IPv4Address", ipv6Address = "IPv6Address", macAddress = "MacAddress" }

        func endpoint(networkID: String) -> DockerContainer.Endpoint {
            DockerContainer.Endpoint(networkID: networkID,
                                     ipv4: ipv4Address.flatMap(WireNetwork.address),
                                     ipv6: ipv6Address.flatMap(WireNetwork.address),
                                     mac: macAddress.flatMap { Attachment.isValidMAC($0) ? $0.lowercased() : nil })
        }
    }

    enum CodingKeys: String, CodingKey { case id = "Id", containers = "Containers" }
}

/// One object of `GET /events`.
struct WireEvent: Decodable {
    var type: String?
    var action: String?
    var actor: Actor?
    var time: Int64?
    var timeNano: Int64?

    struct Actor: Decodable {
        var id: String?
        var attributes: [String: String]?
        enum CodingKeys: String, CodingKey { case id = "ID", attributes = "Attributes" }
    }

    enum CodingKeys: String, CodingKey {
        case type = "Type", action = "Action", actor = "Actor", time, timeNano
    }
}

/// Docker's error body.
struct WireMessage: Decodable {
    var message: String
}
