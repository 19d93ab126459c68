import BulkheadInventory
import BulkheadYAML
import Foundation

/// Reads policy files (format v1) into a `PolicySet`, with a diagnostic for everything wrong.
public enum PolicyLoader {
    public struct Result: Sendable {
        public var policies: PolicySet
        public var diagnostics: [Diagnostic]
        /// The policy files read, in order.
        public var files: [String]
        /// True when a path given could not be read at all (the CLI exits 66).
        public var unreadablePath: Bool

        public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }
    }

    static let segmentKeys = ["segment", "description", "mode", "networks", "services", "flows"]
    static let flowKeys = ["from", "to", "ports", "description"]
    static let reservedNames: Set<String> = ["world", "host"]

    /// Expands each path (a file, or a directory searched recursively for `*.yaml` and `*.yml`);
    /// see `PolicyFiles` for what is read and what is refused.
    public static func discover(_ paths: [String]) -> (files: [String], diagnostics: [Diagnostic], unreadable: Bool) {
        let found = PolicyFiles.discover(paths)
        return (found.files.map(\.path), found.diagnostics, found.unreadable)
    }

    /// Loads every policy file under `paths`, resolves references across files and runs the policy lint.
    public static func load(paths: [String]) -> Result {
        load(PolicyFiles.discover(paths))
    }

    /// Loads the files a walk found (the agent walks first, to compare fingerprints).
    public static func load(_ found: PolicyFiles) -> Result {
        var sources: [(String, [UInt8])] = []
        var diagnostics = found.diagnostics
        var unreadablePath = found.unreadable
        for file in found.files {
            switch SourceFile.read(file.openPath, noFollow: true, expected: file.identity) {
            case .success(let bytes): sources.append((file.path, bytes))
            case .failure(.unreadable(let why)):
                diagnostics.append(Diagnostic(.error, .unreadable, "cannot read file: \(why)", file: file.path, at: .start))
                unreadablePath = true
            }
        }
        let files = found.files.map(\.path)
        let names = Dictionary(found.files.map { ($0.path, $0.name) }, uniquingKeysWith: { a, _ in a })
        var result = load(sources: sources, policyFiles: names)
        result.diagnostics = Diagnostic.sorted(diagnostics + result.diagnostics)
        result.files = files
        result.unreadablePath = unreadablePath
        return result
    }

    /// Loads policy text already in memory: `(file name, bytes)` pairs.
    /// - Parameter policyFiles: file name → its name relative to its policy root (`Flow.policyFile`);
    ///   a file not in it is named as given.
    public static func load(sources: [(String, [UInt8])], policyFiles: [String: String] = [:]) -> Result {
        var segments: [Segment] = []
        var pending: [PendingSegment] = []
        var diagnostics: [Diagnostic] = []
        for (file, bytes) in sources {
            let parsed = YAMLLoader().load(bytes, file: file)
            diagnostics.append(contentsOf: parsed.diagnostics)
            if parsed.hasErrors { continue }
            let sink = DiagnosticSink(file: file)
            for document in parsed.documents where !document.isNull {
                if let p = readSegment(document, sink: sink) { pending.append(p) }
            }
            diagnostics.append(contentsOf: sink.diagnostics)
        }
        // Segment names are unique across all files; the first definition wins.
        var byName: [String: PendingSegment] = [:]
        for p in pending {
            if let first = byName[p.segment.name] {
                diagnostics.append(Diagnostic(.error, .duplicateSegment,
                    "segment '\(p.segment.name)' is already defined at \(first.segment.location.file):\(first.segment.location.line); segment names are unique across all files",
                    file: p.segment.location.file, at: p.segment.location.mark))
                continue
            }
            byName[p.segment.name] = p
            segments.append(p.segment)
        }
        let segmentsByName = Dictionary(segments.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for i in segments.indices {
            guard let p = byName.removeValue(forKey: segments[i].name) else { continue }
            segments[i].flows = p.flows.compactMap { resolve($0, in: segments[i], segments: segmentsByName, diagnostics: &diagnostics) }
            for j in segments[i].flows.indices {
                if let name = policyFiles[segments[i].flows[j].location.file] { segments[i].flows[j].policyFile = name }
            }
        }
        pending = []
        let resolved = PolicySet(segments: segments)
        // Lint only a clean load: a flow dropped for an error would otherwise show up again as an
        // unused service or a missing cover, which only buries the real error.
        if !diagnostics.contains(where: { $0.severity == .error }) {
            diagnostics.append(contentsOf: PolicyLint.run(resolved))
        }
        return Result(policies: resolved, diagnostics: Diagnostic.sorted(diagnostics), files: sources.map(\.0), unreadablePath: false)
    }

    // MARK: - One document

    /// A flow whose endpoints still hold the names as written.
    struct PendingFlow {
        var flow: Flow
        var from: [(RawEndpoint, FilePosition)]
        var to: [(RawEndpoint, FilePosition)]
    }

    enum RawEndpoint {
        case resolved(Endpoint)
        case local(String)
        case qualified(String, String)
    }

    struct PendingSegment {
        var segment: Segment
        var flows: [PendingFlow]
    }

    static func isValidName(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 63 else { return false }
        let chars = Array(s.utf8)
        func ok(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        return ok(chars.first!) && ok(chars.last!) && chars.allSatisfy { ok($0) || $0 == 45 }
    }

    static func nameProblem(_ s: String) -> String {
        if s.count > 63 { return "is \(s.count) characters long; at most 63 are allowed" }
        if s.lowercased() != s, isValidName(s.lowercased()) { return "must be lower case: write '\(s.lowercased())'" }
        return "must be lower-case letters, digits and inner hyphens ([a-z0-9]([a-z0-9-]*[a-z0-9])?)"
    }

    static func readSegment(_ node: YAMLNode, sink: DiagnosticSink) -> PendingSegment? {
        guard let m = MappingReader(node, "a segment document", keys: segmentKeys, required: ["segment", "networks", "services"], sink: sink) else { return nil }
        guard let nameNode = m["segment"], let name = nameNode.string("segment", sink: sink) else { return nil }
        let here = { (mark: Mark) in FilePosition(file: sink.file, mark: mark) }
        if reservedNames.contains(name) {
            sink.error(.reservedName, "'\(name)' is a reserved endpoint name and cannot name a segment", at: nameNode.mark)
        } else if !isValidName(name) {
            sink.error(.invalidName, "segment name '\(name)' \(nameProblem(name))", at: nameNode.mark)
        }
        let description = m["description"].flatMap { $0.isNull ? nil : $0.string("description", sink: sink) }
        var mode = Segment.Mode.enforce
        if let modeNode = m["mode"], let text = modeNode.string("mode", sink: sink) {
            if let parsed = Segment.Mode(rawValue: text) {
                mode = parsed
            } else {
                var message = "mode '\(text)' is not valid: use 'enforce' or 'audit'"
                if let guess = Spelling.closest(to: text, among: Segment.Mode.allCases.map(\.rawValue)) { message += " (did you mean '\(guess)'?)" }
                sink.error(.invalidMode, message, at: modeNode.mark)
            }
        }
        var networks: [Segment.NetworkName] = []
        if let netNode = m["networks"], let items = netNode.list("networks", sink: sink) {
            if items.isEmpty { sink.error(.emptyValue, "networks is empty: list the Docker networks this segment governs", at: netNode.mark) }
            var seen = Set<String>()
            for item in items {
                guard let n = item.string("a network name", sink: sink) else { continue }
                if !seen.insert(n).inserted {
                    sink.error(.duplicateKey, "network '\(n)' is listed twice", at: item.mark)
                    continue
                }
                networks.append(.init(name: n, location: here(item.mark)))
            }
        }
        var services: [Service] = []
        if let svcNode = m["services"], let sm = MappingReader(svcNode, "services", keys: nil, sink: sink, duplicateCode: .duplicateService) {
            if sm.mapping.entries.isEmpty { sink.error(.emptyValue, "services is empty: a segment needs at least one service", at: svcNode.mark) }
            var seen = Set<String>()
            for entry in sm.mapping.entries where seen.insert(entry.key.value).inserted {
                if let s = readService(entry, segment: name, sink: sink) { services.append(s) }
            }
        }
        var flows: [PendingFlow] = []
        if let flowNode = m["flows"], let items = flowNode.list("flows", sink: sink) {
            for (index, item) in items.enumerated() {
                if let f = readFlow(item, segment: name, index: index, sink: sink) { flows.append(f) }
            }
        }
        let segment = Segment(name: name, description: description, mode: mode, networks: networks,
                              services: services, flows: [], location: here(nameNode.mark))
        return PendingSegment(segment: segment, flows: flows)
    }

    static func readService(_ entry: YAMLMapping.Entry, segment: String, sink: DiagnosticSink) -> Service? {
        let name = entry.key.value
        if reservedNames.contains(name) {
            sink.error(.reservedName, "'\(name)' is a reserved endpoint name and cannot name a service", at: entry.key.mark)
        } else if !isValidName(name) {
            sink.error(.invalidName, "service name '\(name)' \(nameProblem(name))", at: entry.key.mark)
        }
        guard let m = MappingReader(entry.value, "service '\(name)'", keys: ["labels", "networks", "description"], required: ["labels"], sink: sink) else { return nil }
        _ = m["description"].flatMap { $0.isNull ? nil : $0.string("description", sink: sink) }
        var networks: [String] = []
        if let netNode = m["networks"], let items = netNode.list("networks", sink: sink) {
            if items.isEmpty {
                sink.error(.emptyValue, "networks of service '\(name)' is empty, which no container could match: list its networks or leave the key out", at: netNode.mark)
            }
            for item in items {
                guard let n = item.string("a network name", sink: sink) else { continue }
                if networks.contains(n) {
                    sink.error(.duplicateKey, "network '\(n)' is listed twice", at: item.mark)
                    continue
                }
                networks.append(n)
            }
        }
        guard let labelNode = m["labels"] else { return nil }
        var labels: [String: String] = [:]
        if labelNode.isNull {
            sink.error(.invalidSelector, "service '\(name)' has an empty label selector, which would match no container: give at least one label", at: labelNode.mark)
        } else if let lm = MappingReader(labelNode, "the labels of '\(name)'", keys: nil, sink: sink) {
            if lm.mapping.entries.isEmpty {
                sink.error(.invalidSelector, "service '\(name)' has an empty label selector, which would match no container: give at least one label", at: labelNode.mark)
            }
            for e in lm.mapping.entries where labels[e.key.value] == nil {
                let key = e.key.value
                // Docker label keys are free-form, but whitespace, '=' and control characters cannot be
                // written in `docker run --label` and always mean a typo.
                if key.isEmpty || key.utf8.contains(where: { $0 <= 32 || $0 == UInt8(ascii: "=") || $0 == 127 }) || key.contains(where: \.isWhitespace) {
                    sink.error(.invalidSelector, "label key '\(key)' is not a Docker label key (no spaces, '=' or control characters)", at: e.key.mark)
                    continue
                }
                guard case .scalar(let v) = e.value else {
                    sink.error(.invalidSelector, "label '\(key)' must equal a string, not \(e.value.kindDescription)", at: e.value.mark)
                    continue
                }
                labels[key] = v.isNull && v.value.isEmpty ? "" : v.value
            }
        }
        return Service(ref: ServiceRef(segment: segment, name: name), labels: labels, networks: networks,
                       location: FilePosition(file: sink.file, mark: entry.key.mark),
                       selectorLocation: FilePosition(file: sink.file, mark: labelNode.mark))
    }

    static func readFlow(_ node: YAMLNode, segment: String, index: Int, sink: DiagnosticSink) -> PendingFlow? {
        guard let m = MappingReader(node, "a flow", keys: flowKeys, required: ["from", "to", "ports"], sink: sink) else { return nil }
        let description = m["description"].flatMap { $0.isNull ? nil : $0.string("description", sink: sink) }
        let from = m["from"].map { readEndpoints($0, "from", sink: sink) } ?? []
        let to = m["to"].map { readEndpoints($0, "to", sink: sink) } ?? []
        var ports: [PortSpec] = []
        if let portNode = m["ports"], let items = portNode.list("ports", sink: sink, allowSingle: true) {
            if items.isEmpty { sink.error(.emptyValue, "ports is empty: list at least one, such as tcp/443, or write any", at: portNode.mark) }
            for item in items {
                guard case .scalar(let s) = item, !s.isNull else {
                    sink.error(.invalidPort, "a port must be a string such as tcp/443, not \(item.kindDescription)", at: item.mark)
                    continue
                }
                do { ports.append(try PortSpec.parse(s.value)) } catch { sink.error(.invalidPort, error.message, at: item.mark) }
            }
        }
        guard m["from"] != nil, m["to"] != nil, m["ports"] != nil else { return nil }
        let flow = Flow(segment: segment, index: index, from: [], to: [], ports: ports, description: description,
                        location: FilePosition(file: sink.file, mark: node.mark))
        return PendingFlow(flow: flow, from: from, to: to)
    }

    static func readEndpoints(_ node: YAMLNode, _ what: String, sink: DiagnosticSink) -> [(RawEndpoint, FilePosition)] {
        guard let items = node.list(what, sink: sink, allowSingle: true) else { return [] }
        if items.isEmpty { sink.error(.emptyValue, "'\(what)' is empty: name at least one endpoint", at: node.mark) }
        return items.compactMap { item in
            readEndpoint(item, sink: sink).map { ($0, FilePosition(file: sink.file, mark: item.mark)) }
        }
    }

    static func readEndpoint(_ node: YAMLNode, sink: DiagnosticSink) -> RawEndpoint? {
        switch node {
        case .mapping:
            guard let m = MappingReader(node, "an endpoint", keys: ["cidr"], required: ["cidr"], sink: sink),
                  let cidrNode = m["cidr"], let text = cidrNode.string("cidr", sink: sink) else { return nil }
            guard text.contains("/"), let net = IPNetwork(text) else {
                sink.error(.invalidCIDR, "'\(text)' is not a CIDR such as 192.0.2.0/24 or 2001:db8::/32", at: cidrNode.mark)
                return nil
            }
            if net.hasHostBits {
                sink.warning(.cidrHostBits, "'\(text)' has host bits set: it means \(net.normalized); write that", at: cidrNode.mark)
            }
            return .resolved(.cidr(net.normalized))
        case .sequence:
            sink.error(.invalidEndpoint, "an endpoint cannot be a list inside a list", at: node.mark)
            return nil
        case .scalar(let s):
            if s.isNull {
                sink.error(.emptyValue, "an endpoint is empty", at: node.mark)
                return nil
            }
            let text = s.value
            if text == "world" { return .resolved(.world) }
            if text == "host" { return .resolved(.host) }
            if IPNetwork(text) != nil {
                sink.error(.invalidEndpoint, "'\(text)' is an address, not an endpoint: write {cidr: \(text.contains("/") ? text : text + (text.contains(":") ? "/128" : "/32"))}", at: node.mark)
                return nil
            }
            let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            if parts.count == 1, isValidName(text) { return .local(text) }
            if parts.count == 2, isValidName(parts[0]), isValidName(parts[1]) { return .qualified(parts[0], parts[1]) }
            sink.error(.invalidEndpoint, "'\(text)' is not an endpoint: write a service NAME, SEGMENT/NAME, world, host or {cidr: CIDR}", at: node.mark)
            return nil
        }
    }

    // MARK: - Cross references

    static func resolve(_ p: PendingFlow, in segment: Segment, segments: [String: Segment], diagnostics: inout [Diagnostic]) -> Flow? {
        func one(_ raw: RawEndpoint, _ location: FilePosition) -> LocatedEndpoint? {
            func unknown(_ seg: Segment, _ name: String, qualified: Bool) -> LocatedEndpoint? {
                var message = "segment '\(seg.name)' has no service '\(name)'"
                if let guess = Spelling.closest(to: name, among: seg.services.map(\.name)) {
                    message += " (did you mean '\(qualified ? seg.name + "/" : "")\(guess)'?)"
                }
                diagnostics.append(Diagnostic(.error, .unknownService, message, file: location.file, at: location.mark))
                return nil
            }
            switch raw {
            case .resolved(let e):
                return LocatedEndpoint(endpoint: e, location: location)
            case .local(let name):
                guard segment.services.contains(where: { $0.name == name }) else { return unknown(segment, name, qualified: false) }
                return LocatedEndpoint(endpoint: .service(ServiceRef(segment: segment.name, name: name)), location: location)
            case .qualified(let segName, let name):
                guard let other = segments[segName] else {
                    var message = "no segment '\(segName)' is defined in the policy files"
                    if let guess = Spelling.closest(to: segName, among: segments.keys.sorted()) { message += " (did you mean '\(guess)/\(name)'?)" }
                    diagnostics.append(Diagnostic(.error, .unknownSegment, message, file: location.file, at: location.mark))
                    return nil
                }
                guard other.services.contains(where: { $0.name == name }) else { return unknown(other, name, qualified: true) }
                return LocatedEndpoint(endpoint: .service(ServiceRef(segment: segName, name: name)), location: location)
            }
        }
        let before = diagnostics.count
        var flow = p.flow
        flow.from = p.from.compactMap { one($0.0, $0.1) }
        flow.to = p.to.compactMap { one($0.0, $0.1) }
        // A flow with an unresolved endpoint is dropped: enforcing half of it would open less than,
        // or other than, what was written.
        guard diagnostics.count == before, !flow.from.isEmpty, !flow.to.isEmpty, !flow.ports.isEmpty else { return nil }
        return flow
    }
}
