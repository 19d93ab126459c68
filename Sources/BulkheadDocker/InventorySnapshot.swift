import BulkheadEscaping
import BulkheadInventory

/// Renders an `Inventory` as the snapshot file `InventoryLoader` reads (`bulkhead inventory`).
///
/// The output is deterministic — networks and containers by name, labels and attachments by key,
/// subnets and gateways sorted — so two snapshots of the same host diff cleanly.
public enum InventorySnapshot {
    /// The YAML snapshot, ending in a newline.
    ///
    /// ```yaml
    /// networks:
    ///   - name: shop_default
    ///     subnets: [172.20.0.0/16, "fd00:20::/64"]
    ///     gateways: [172.20.0.1, "fd00:20::1"]
    /// containers:
    ///   - name: shop-frontend-1
    ///     id: 4f2a9c…
    ///     labels:
    ///       com.docker.compose.project: shop
    ///     networks:
    ///       shop_default: {ipv4: 172.20.0.2, ipv6: "fd00:20::2"}
    /// ```
    public static func render(_ inventory: Inventory, header: String? = nil) -> String {
        var out = ""
        if let header {
            for line in header.split(separator: "\n", omittingEmptySubsequences: false) { out += "# \(line)\n" }
        }
        if !inventory.hostAddresses.isEmpty {
            out += "host:\n  addresses: \(flowList(inventory.hostAddresses.sorted().map(\.description)))\n"
        }
        let networks = inventory.networks.sorted { $0.name < $1.name }
        out += networks.isEmpty ? "networks: []\n" : "networks:\n"
        for network in networks {
            out += "  - name: \(scalar(network.name))\n"
            out += "    subnets: \(flowList(network.subnets.sorted().map(\.description)))\n"
            if !network.gateways.isEmpty {
                out += "    gateways: \(flowList(network.gateways.sorted().map(\.description)))\n"
            }
            if let bridge = network.bridge { out += "    bridge: \(scalar(bridge))\n" }
        }
        let containers = inventory.containers.sorted { ($0.name, $0.id ?? "") < ($1.name, $1.id ?? "") }
        out += containers.isEmpty ? "containers: []\n" : "containers:\n"
        for container in containers {
            out += "  - name: \(scalar(container.name))\n"
            if let id = container.id { out += "    id: \(scalar(id))\n" }
            if container.labels.isEmpty {
                out += "    labels: {}\n"
            } else {
                out += "    labels:\n"
                for key in container.labels.keys.sorted() {
                    out += "      \(scalar(key)): \(scalar(container.labels[key]!))\n"
                }
            }
            if container.networks.isEmpty {
                out += "    networks: {}\n"
            } else {
                out += "    networks:\n"
                for name in container.networks.keys.sorted() {
                    let a = container.networks[name]!
                    let fields = [a.ipv4.map { "ipv4: \(scalar($0.description))" }, a.ipv6.map { "ipv6: \(scalar($0.description))" },
                                  a.mac.map { "mac: \(scalar($0))" }, a.port.map { "port: \(scalar($0))" }].compactMap { $0 }
                    out += "      \(scalar(name)): {\(fields.joined(separator: ", "))}\n"
                }
            }
        }
        return out
    }

    static func flowList(_ items: [String]) -> String {
        "[" + items.map(scalar).joined(separator: ", ") + "]"
    }

    /// A plain scalar when that is unambiguous in block and flow context, else double-quoted.
    ///
    /// Plain only for a conservative alphabet: `InventoryLoader` reads every scalar as a string,
    /// but other YAML readers (and humans) coerce `yes`, `0755` or `1:2`, and `,` `[` `{` `#` `:`
    /// carry syntax. IPv6 addresses are therefore quoted, as in the documented format.
    static func scalar(_ text: String) -> String {
        let safe = !text.isEmpty
            && text.unicodeScalars.allSatisfy { $0.isASCII && (isAlphanumeric($0) || "._/-@+".unicodeScalars.contains($0)) }
            && !"-.@+".unicodeScalars.contains(text.unicodeScalars.first!)
            && !["null", "Null", "NULL", "~", "true", "True", "TRUE", "false", "False", "FALSE",
                 "yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N"].contains(text)
            && !looksNumeric(text)
        return safe ? text : quoted(text)
    }

    /// `0755`, `1.0`, `1e3`, `2024-01-01`: numbers, floats or dates to a YAML 1.1 reader. IPv4
    /// addresses and prefixes (several dots, or a `/`) stay plain.
    static func looksNumeric(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, ("0"..."9").contains(first) else { return false }
        return text.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || "._+-eE".unicodeScalars.contains($0) }
            && text.filter { $0 == "." }.count <= 1
    }

    static func isAlphanumeric(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c)
    }

    /// A YAML double-quoted scalar; escapes are the JSON ones, which YAML shares.
    static func quoted(_ text: String) -> String { Escape.jsonString(text) }
}
