import BulkheadInventory
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
        var services: [String: ServiceRef] = [:]  // chain suffix / set stem → service
        var members: [ServiceRef: [IPAddress]] = [:]
        for set in table.sets {
            guard let ref = Names.parseService(set.name)?.service else { continue }
            services["\(ref.segment)_\(ref.name)"] = ref
            members[ref, default: []] += set.elements.compactMap { address($0.key.first?.low) }
        }
        for ref in members.keys { members[ref]?.sort() }
        for rule in table.rules {
            let kinds: [(String, Kind)] = [("in_", .ingress), ("out_", .egress), ("from_host_", .fromHost), ("to_host_", .toHost)]
            guard let (prefix, kind) = kinds.first(where: { rule.chain.hasPrefix($0.0) }) else { continue }
            let suffix = String(rule.chain.dropFirst(prefix.count))
            // Chains of multi-service identities repeat their members' grants; read single ones.
            guard let service = services[suffix] else { continue }
            guard rule.statements.last == .verdict(.accept), case .flow(let comment)? = rule.comment.flatMap(RuleComment.init(parsing:)),
                  !rule.statements.contains(where: { if case .log = $0 { return true } else { return false } }) else {
                if !isDenial(rule) { unrecognized.append(rule) }
                continue
            }
            guard let parsed = parse(rule, kind: kind, service: service, services: services) else {
                unrecognized.append(rule)
                continue
            }
            for from in parsed.from {
                for port in parsed.ports {
                    grants.insert(Grant(from: from, to: parsed.to, port: port, reference: comment))
                }
            }
        }
        return Reading(grants: grants.sorted(), members: members, unrecognized: unrecognized)
    }

    enum Kind { case ingress, egress, fromHost, toHost }

    static func isDenial(_ rule: Rule) -> Bool {
        rule.statements.last == .verdict(.drop) || rule.statements.contains { if case .log = $0 { return true } else { return false } }
    }

    static func parse(_ rule: Rule, kind: Kind, service: ServiceRef, services: [String: ServiceRef])
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
                if m.negated, name.hasPrefix("managed_") {
                    if peer == nil { peer = .world }
                } else if let ref = Names.parseService(name)?.service {
                    guard services["\(ref.segment)_\(ref.name)"] != nil else { return nil }
                    peer = .service(ref)
                } else if let members = Names.parseSourceGroup(name)?.members {
                    for ref in members {
                        guard services["\(ref.segment)_\(ref.name)"] != nil else { return nil }
                        group.append(.service(ref))
                    }
                }
            case (.ipSaddr, .prefix(let v, let len)), (.ipDaddr, .prefix(let v, let len)),
                 (.ip6Saddr, .prefix(let v, let len)), (.ip6Daddr, .prefix(let v, let len)):
                guard let a = address(v) else { return nil }
                prefix = IPNetwork(address: a, prefixLength: Int(len))
            case (.ipSaddr, .value(let v)), (.ipDaddr, .value(let v)), (.ip6Saddr, .value(let v)), (.ip6Daddr, .value(let v)):
                guard let a = address(v) else { return nil }
                prefix = IPNetwork(address: a, prefixLength: a.bitWidth)
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
