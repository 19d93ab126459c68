import BulkheadYAML

/// Reads an inventory snapshot (YAML or JSON, one document) with the same loader and diagnostics as policies.
public enum InventoryLoader {
    /// A snapshot of 10,000 containers is about 1.5 MB; policies keep the 1 MiB limit.
    public static let maxBytes = 64 << 20

    public static func load(path: String) -> (Inventory?, [Diagnostic]) {
        switch SourceFile.read(path, limit: maxBytes) {
        case .failure(.unreadable(let why)):
            return (nil, [Diagnostic(.error, .unreadable, "cannot read inventory: \(why)", file: path, at: .start)])
        case .success(let bytes):
            return load(bytes, file: path)
        }
    }

    public static func load(_ bytes: [UInt8], file: String) -> (Inventory?, [Diagnostic]) {
        let parsed = YAMLLoader(maxBytes: maxBytes).load(bytes, file: file)
        let sink = DiagnosticSink(file: file)
        sink.append(contentsOf: parsed.diagnostics)
        guard !parsed.hasErrors, let root = parsed.documents.first else { return (nil, sink.diagnostics) }
        if parsed.documents.count > 1 {
            sink.error(.wrongType, "an inventory is one document; this file has \(parsed.documents.count)", at: parsed.documents[1].mark)
        }
        let inventory = read(root, sink: sink)
        return (sink.hasErrors ? nil : inventory, sink.diagnostics)
    }

    static func read(_ root: YAMLNode, sink: DiagnosticSink) -> Inventory {
        var inventory = Inventory()
        guard let doc = MappingReader(root, "the inventory", keys: ["host", "networks", "containers"], sink: sink) else { return inventory }
        if let hostNode = doc["host"], !hostNode.isNull, let h = MappingReader(hostNode, "host", keys: ["addresses"], sink: sink) {
            inventory.hostAddresses = (h["addresses"]?.list("host addresses", sink: sink) ?? []).compactMap { address($0, "a host address", sink: sink) }
        }
        var networkNames: [String: Mark] = [:]
        for node in doc["networks"]?.list("networks", sink: sink) ?? [] {
            guard let m = MappingReader(node, "a network", keys: ["name", "subnets", "gateways", "bridge"], required: ["name"], sink: sink),
                  let name = m["name"]?.string("network name", sink: sink) else { continue }
            if let first = networkNames[name] {
                sink.error(.duplicateNetwork, "network '\(name)' is listed twice (first at line \(first.line))", at: node.mark)
                continue
            }
            networkNames[name] = node.mark
            let subnets: [IPNetwork] = (m["subnets"]?.list("subnets", sink: sink) ?? []).compactMap { item in
                guard let text = item.string("a subnet", sink: sink) else { return nil }
                guard let net = IPNetwork(text), text.contains("/") else {
                    sink.error(.invalidCIDR, "'\(text)' is not a CIDR such as 172.20.0.0/16 or fd00:20::/64", at: item.mark)
                    return nil
                }
                return net.normalized
            }
            let gateways: [IPAddress] = (m["gateways"]?.list("gateways", sink: sink) ?? []).compactMap { item in
                address(item, "a gateway", sink: sink)
            }
            let bridge = m["bridge"].flatMap { interfaceName($0, "bridge", sink: sink) }
            inventory.networks.append(Network(name: name, subnets: subnets, gateways: gateways, bridge: bridge, source: FilePosition(file: sink.file, mark: node.mark)))
        }
        var containerNames: [String: Mark] = [:]
        for node in doc["containers"]?.list("containers", sink: sink) ?? [] {
            guard let m = MappingReader(node, "a container", keys: ["name", "id", "labels", "networks"], required: ["name", "networks"], sink: sink),
                  let name = m["name"]?.string("container name", sink: sink) else { continue }
            if let first = containerNames[name] {
                sink.error(.duplicateContainer, "container '\(name)' is listed twice (first at line \(first.line))", at: node.mark)
                continue
            }
            containerNames[name] = node.mark
            let id = m["id"]?.string("container id", sink: sink)
            var labels: [String: String] = [:]
            if let l = m["labels"], !l.isNull, let lm = MappingReader(l, "labels", keys: nil, sink: sink, duplicateCode: .duplicateKey) {
                for entry in lm.mapping.entries where labels[entry.key.value] == nil {
                    labels[entry.key.value] = entry.value.string("label '\(entry.key.value)'", sink: sink) ?? ""
                }
            }
            var attachments: [String: Attachment] = [:]
            if let nets = m["networks"], let nm = MappingReader(nets, "container networks", keys: nil, sink: sink) {
                for entry in nm.mapping.entries where attachments[entry.key.value] == nil {
                    var attachment = Attachment()
                    if !entry.value.isNull, let am = MappingReader(entry.value, "the attachment to '\(entry.key.value)'", keys: ["ipv4", "ipv6", "mac", "port"], sink: sink) {
                        if let v4 = am["ipv4"], !v4.isNull {
                            attachment.ipv4 = address(v4, "ipv4", family: 4, sink: sink)
                        }
                        if let v6 = am["ipv6"], !v6.isNull {
                            attachment.ipv6 = address(v6, "ipv6", family: 6, sink: sink)
                        }
                        if let mac = am["mac"], !mac.isNull, let text = mac.string("mac", sink: sink) {
                            if Attachment.isValidMAC(text) {
                                attachment.mac = text.lowercased()
                            } else {
                                sink.error(.wrongType, "'\(text)' is not a MAC address such as 02:42:ac:14:00:02", at: mac.mark)
                            }
                        }
                        attachment.port = am["port"].flatMap { interfaceName($0, "port", sink: sink) }
                    }
                    attachments[entry.key.value] = attachment
                }
            }
            inventory.containers.append(Container(name: name, id: id, labels: labels, networks: attachments, source: FilePosition(file: sink.file, mark: node.mark)))
        }
        return inventory
    }

    /// A bridge or port name: what the kernel accepts as an interface name (15 bytes at most).
    private static func interfaceName(_ node: YAMLNode, _ what: String, sink: DiagnosticSink) -> String? {
        guard !node.isNull, let text = node.string(what, sink: sink) else { return nil }
        guard Attachment.isValidInterfaceName(text) else {
            sink.error(.wrongType, "'\(text)' is not an interface name (1-15 bytes, no spaces, '/' or ':')", at: node.mark)
            return nil
        }
        return text
    }

    private static func address(_ node: YAMLNode, _ what: String, family: Int? = nil, sink: DiagnosticSink) -> IPAddress? {
        guard let text = node.string(what, sink: sink) else { return nil }
        guard let a = IPAddress(text), family == nil || (family == 4) == a.isIPv4 else {
            let form = family == 6 ? "an IPv6 address such as fd00:20::2" : family == 4 ? "an IPv4 address such as 172.20.0.2" : "an IP address"
            sink.error(.invalidAddress, "'\(text)' is not \(form)", at: node.mark)
            return nil
        }
        return a
    }
}
