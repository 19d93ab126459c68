import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset

/// Reads a Bulkhead table back into what it allows: the grants of its identity chains and the
/// addresses of each service. `plan` compares these for the kernel's table and the desired one,
/// so it reports what a change opens or closes against what is really enforced.
public enum Decompiler {
    public struct Reading: Sendable {
        public var grants: [Grant]
        /// Service → its addresses (v4 and v6), from the `svc_*` sets.
        public var members: [ServiceRef: [IPAddress]]
        /// Rules of identity chains that Bulkhead did not write (someone edited the table).
        public var unrecognized: [Rule]
    }

    public static func read(_ table: Table) -> Reading {
        var grants = Set<Grant>()
        var unrecognized: [Rule] = []
        var services = Set<ServiceRef>()  // services that have a `svc_*` set
        var members: [ServiceRef: [IPAddress]] = [:]
        // Set names repeat rule after rule too (a source group's name is up to ~150 bytes): parse
        // each set's name once; `parse` falls back to parsing a name no set of the table has.
        var setNames: [String: SetName] = [:]
        for set in table.sets { if let parsed = SetName(parsing: set.name) { setNames[set.name] = parsed } }
        for set in table.sets {
            guard case .service(let ref, _)? = setNames[set.name] else { continue }
            services.insert(ref)
            members[ref, default: []] += set.elements.compactMap { address($0.key.first?.low) }
        }
        for ref in members.keys { members[ref]?.sort() }
        // Named port sets (`SetName.destinationPorts`), read from their elements: a shortened name
        // does not say what it holds.
        var portSets: [String: [ClosedRange<UInt16>]] = [:]
        for set in table.sets where set.key == KeyType(.inetService) && set.data == nil {
            portSets[set.name] = ranges(.anonymousSet(set.elements))
        }
        // Chain names repeat rule after rule: parse each once.
        var chainNames: [String: ChainName?] = [:]
        for rule in table.rules {
            let parsed = chainNames[rule.chain] ?? {
                let p = ChainName(parsing: rule.chain)
                chainNames[rule.chain] = .some(p)
                return p
            }()
            // Chains of multi-service identities repeat their members' grants; read single ones.
            guard case .identity(let kind, let id)? = parsed, id.services.count == 1, let service = id.services.first,
                  services.contains(service) else { continue }
            guard rule.statements.last == .verdict(.accept), case .allow(let reference)? = rule.comment.flatMap(RuleRole.init(parsing:)),
                  !rule.statements.contains(where: { if case .log = $0 { return true } else { return false } }) else {
                if !isDenial(rule) { unrecognized.append(rule) }
                continue
            }
            guard let parsed = parse(rule, kind: kind, service: service, services: services, portSets: portSets, setNames: setNames) else {
                unrecognized.append(rule)
                continue
            }
            for from in parsed.from {
                for port in parsed.ports {
                    grants.insert(Grant(from: from, to: parsed.to, port: port, reference: reference.text))
                }
            }
        }
        return Reading(grants: Grant.sorted(grants), members: members, unrecognized: unrecognized)
    }

    static func isDenial(_ rule: Rule) -> Bool {
        rule.statements.last == .verdict(.drop) || rule.statements.contains { if case .log = $0 { return true } else { return false } }
    }

    static func parse(_ rule: Rule, kind: IdentityChainKind, service: ServiceRef, services: Set<ServiceRef>,
                      portSets: [String: [ClosedRange<UInt16>]] = [:], setNames: [String: SetName] = [:])
        -> (from: [Endpoint], to: Endpoint, ports: [PortSpec])? {
        var peer: Endpoint?
        var group: [Endpoint] = []
        var prefix: IPNetwork?
        var tcp: [ClosedRange<UInt16>] = [], udp: [ClosedRange<UInt16>] = []
        var icmp = false
        for s in rule.statements {
            guard case .match(let m) = s, m.fields.count == 1, let field = m.fields.first else { continue }
            switch (field, m.operand) {
            case (.ipSaddr, .set(let name)), (.ip6Saddr, .set(let name)):
                switch setNames[name] ?? SetName(parsing: name) {
                case .managed? where m.negated:
                    if peer == nil { peer = .world }
                case .service(let ref, _)? where !m.negated:
                    guard services.contains(ref) else { return nil }
                    peer = .service(ref)
                case .sourceGroup(let members, _)? where !m.negated:
                    for ref in members.services {
                        guard services.contains(ref) else { return nil }
                        group.append(.service(ref))
                    }
                default:
                    return nil
                }
            case (.ipSaddr, .prefix(let v, let len)), (.ipDaddr, .prefix(let v, let len)),
                 (.ip6Saddr, .prefix(let v, let len)), (.ip6Daddr, .prefix(let v, let len)):
                guard let a = address(v) else { return nil }
                prefix = IPNetwork(address: a, prefixLength: Int(len))
            case (.ipSaddr, .value(let v)), (.ipDaddr, .value(let v)), (.ip6Saddr, .value(let v)), (.ip6Daddr, .value(let v)):
                guard let a = address(v) else { return nil }
                prefix = IPNetwork(address: a, prefixLength: a.bitWidth)
            case (.tcpDport, .set(let name)) where !m.negated: guard let r = portSets[name] else { return nil }; tcp += r
            case (.udpDport, .set(let name)) where !m.negated: guard let r = portSets[name] else { return nil }; udp += r
            case (.tcpDport, let op): guard let r = ranges(op) else { return nil }; tcp += r
            case (.udpDport, let op): guard let r = ranges(op) else { return nil }; udp += r
            case (.metaL4proto, .value(.proto(let p))) where p == IPProto.icmp || p == IPProto.icmpv6: icmp = true
            case (.metaNfproto, _): continue
            default: return nil
            }
        }
        if let prefix { peer = .cidr(prefix) }
        var ports: [PortSpec] = tcp.map { .tcp($0) } + udp.map { .udp($0) } + (icmp ? [.icmp] : [])
        if ports.isEmpty { ports = [.any] }
        let me = Endpoint.service(service)
        switch kind {
        case .ingress:
            if !group.isEmpty { return (group, me, ports) }
            guard let peer else { return nil }
            return ([peer], me, ports)
        case .egress: return ([me], peer ?? .world, ports)
        case .fromHost: return ([.host], me, ports)
        case .toHost: return ([me], .host, ports)
        }
    }

    static func ranges(_ op: Operand) -> [ClosedRange<UInt16>]? {
        switch op {
        case .value(.port(let p)): return [p...p]
        case .range(.port(let a), .port(let b)): return [a...b]
        case .anonymousSet(let elements):
            var out: [ClosedRange<UInt16>] = []
            for e in elements {
                guard let k = e.key.first else { return nil }
                switch k {
                case .value(.port(let p)): out.append(p...p)
                case .range(.port(let a), .port(let b)): out.append(a...b)
                default: return nil
                }
            }
            return out
        default: return nil
        }
    }

    static func address(_ v: Value?) -> IPAddress? {
        switch v {
        case .ipv4(let a): return .v4(a.value)
        case .ipv6(let a): return .v6(UInt128(a.high) << 64 | UInt128(a.low))
        default: return nil
        }
    }
}
