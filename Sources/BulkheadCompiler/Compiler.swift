import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset

/// Policies + inventory → the desired `inet bulkhead` table.
///
/// Dataplane shape (every v4 structure has a v6 twin):
///
/// ```
/// forward (hook forward, priority filter - 10):
///   ct state established,related accept          replies to allowed connections
///   icmpv6 router advert/redirect drop            containers may not act as routers
///   icmpv6 neighbour discovery / MLD accept       so governed containers keep resolving each other
///   ip saddr @governed ip saddr != @managed drop  unclassified source: fail closed
///   ip daddr @governed ip daddr != @managed drop  unclassified destination: fail closed
///   meta priority set ip daddr map @identity meta priority vmap @dispatch_ingress
///                                                 managed destination → its identity number → jump in_<identity>
///   meta priority set ip saddr map @identity meta priority vmap @dispatch_egress
///                                                 managed source, ungoverned destination → jump out_<identity>
/// input  (hook input):  lo, established, ND; ip saddr → @identity → @dispatch_to_host;  unclassified → drop
/// output (hook output): lo, established, ND; ip daddr → @identity → @dispatch_from_host; unclassified → drop
/// in_<identity>:  one rule per (flow, source, protocol) naming the flow's file:line, then drop
/// ```
///
/// Container churn changes only set and map elements (addresses in `svc_*`, `managed`,
/// `identity`), and none of them is a verdict: adding a jump element to a map makes the kernel
/// re-validate the whole table (`nft_table_validate`, which walks every element of every verdict
/// map), so per-address verdicts made one container's add cost grow with the number of containers.
/// The address → identity-number map holds plain data; the dispatch maps (identity number →
/// jump) have one element per identity and change only with the chains. The number travels between
/// the two lookups in `meta priority`: nft 1.0.6 can neither parse nor list a lookup keyed by another
/// lookup's register (its listing aborts), so the scratch must be a field nft knows; marks belong to
/// other software (routing, NAT, kube-proxy), and `skb->priority` is only written here on the first
/// packet of a connection to or from a managed container, with a value that qdiscs read as priority 0
/// (`IdentityNumbering`). Chains depend only on policies and on which identities exist. Per packet,
/// a new connection costs three hash lookups plus the rules of one identity's chain.
public enum Compiler {
    public struct Options: Sendable, Hashable {
        /// nflog group that `mode: audit` logs would-be denials to.
        public var auditLogGroup: UInt16 = 1
        /// Priority of our base chains: before Docker's and firewalld's `filter` chains, so our
        /// drop is final whatever they accept.
        public var priority: Int32 = ChainPriority.filter - 10
        public var tableFlags: TableFlags = []
        /// What an identity's chains must fit. Names, comments and log prefixes are bounded to the
        /// kernel's limits by construction; a smaller value here stands for a kernel that takes
        /// less, and shows what happens to an identity that still does not fit (quarantine).
        public var limits: KernelLimits = .kernel

        public init() {}
    }

    public struct Output: Sendable {
        public var table: Table
        /// Every identity that has chains, sorted.
        public var identities: [Identity]
        /// Rule comment of an allow rule (`FlowReference`) → the flow it enforces.
        public var flowsByReference: [FlowReference: Flow]
        /// Identities whose chains could not be built within `Options.limits`, sorted. Their
        /// containers are quarantined (every map sends their addresses to a drop chain, and they
        /// are in no service's set); everything else is enforced as usual.
        public var failures: [IdentityFailure]
        /// Addresses the inventory gives containers that are not enrolled (the evaluator's rule).
        public var rejectedAddresses: [RejectedAddress]
        /// The `bridge bulkhead` table: port binding, tagged frames, link-local (see `PortBinding`).
        public var bridgeTable: Table
        /// The classification the table was built from. `plan` (container counts) and revocation
        /// (which connections the policies deny) use this one: building another for the same
        /// policies and inventory costs as much and cannot answer differently.
        public var evaluator: Evaluator
    }

    /// An identity that could not be compiled, and why.
    public struct IdentityFailure: Sendable, Hashable, CustomStringConvertible {
        public var identity: Identity
        /// Its containers, sorted.
        public var containers: [String]
        public var reason: String

        public var description: String {
            "identity \(identity) (containers: \(containers.joined(separator: ", "))) cannot be programmed, its containers are quarantined: \(reason)"
        }
    }

    public static func compile(_ policies: PolicySet, _ inventory: Inventory, options: Options = Options()) -> Output {
        var builder = Builder(policies: policies, inventory: inventory, options: options)
        return builder.build()
    }
}

typealias ChainKind = IdentityChainKind

extension IdentityChainKind {
    func chainName(_ id: Identity) -> String { ChainName.identity(self, id).name }
}

private struct Builder {
    let policies: PolicySet
    let inventory: Inventory
    let options: Compiler.Options
    let evaluator: Evaluator
    let flows: [Flow]
    /// Service → indices into `flows` of the flows that name it (either side).
    let flowsByService: [ServiceRef: [Int]]
    let modes: [String: Segment.Mode]
    /// The address families that have something to enforce: a governed subnet or an enrolled
    /// address of a managed container. A family without either gets no set, map, chain or rule
    /// (IPv4 when neither has any, so an empty inventory still compiles to one of each). A change
    /// that brings the first address of a family needs the sets the full compile then makes: the
    /// incremental planner finds them missing and asks for the full plan.
    let families: [AddressFamily]
    /// Managed container → its enrolled addresses.
    let enrolled: [String: [IPAddress]]

    init(policies: PolicySet, inventory: Inventory, options: Compiler.Options) {
        self.policies = policies
        self.inventory = inventory
        self.options = options
        evaluator = Evaluator(policies: policies, inventory: inventory)
        flows = policies.flows
        var index: [ServiceRef: [Int]] = [:]
        for (i, f) in flows.enumerated() {
            for ref in Set((f.from + f.to).compactMap(\.endpoint.serviceRef)) { index[ref, default: []].append(i) }
        }
        flowsByService = index
        modes = Dictionary(policies.segments.map { ($0.name, $0.mode) }, uniquingKeysWith: { a, _ in a })
        // Only enrolled addresses: one outside its network's subnets, the host's, or claimed by
        // two containers is nobody's (`Evaluator`).
        var enrolled: [String: [IPAddress]] = [:]
        var present = Set(evaluator.governedSubnets.map { $0.isIPv4 ? AddressFamily.v4 : .v6 })
        for c in inventory.containers where !(evaluator.membership[c.name] ?? []).isEmpty {
            let addresses = evaluator.enrolledAddresses(of: c)
            enrolled[c.name] = addresses
            for a in addresses { present.insert(a.isIPv4 ? .v4 : .v6) }
        }
        self.enrolled = enrolled
        families = present.isEmpty ? [.v4] : AddressFamily.allCases.filter(present.contains)
    }

    typealias Family = AddressFamily

    mutating func build() -> Compiler.Output {
        // Identities: every single service (so a first container of a service changes elements
        // only), plus every combination that some container really has.
        var identities = Set(policies.services.map { Identity([$0.ref]) })
        var containerIdentity: [String: Identity] = [:]
        for c in inventory.containers {
            let services = evaluator.membership[c.name] ?? []
            guard !services.isEmpty else { continue }
            let id = Identity(services)
            containerIdentity[c.name] = id
            identities.insert(id)
        }
        let sortedIdentities = identities.sorted()

        let sourceGroups = Set(flows.compactMap(sourceGroup)).sorted()

        // Chains per identity. The ingress chain always exists (it counts denials per identity);
        // the egress and host chains only when some flow allows something there — otherwise the
        // maps send those addresses straight to a shared denial chain, which keeps the kernel's
        // work (it grows with chains and rules) proportional to what the policies say.
        var identityChains: [(Chain, [Rule])] = []
        var targets: [Identity: [ChainKind: String]] = [:]
        var sharedDenials: [String: Rule] = [:]
        var failures: [Compiler.IdentityFailure] = []
        for id in sortedIdentities {
            let allowed = identityRules(id)
            var chainsOfIdentity: [(Chain, [Rule])] = []
            var targetsOfIdentity: [ChainKind: String] = [:]
            var shared: [String: Rule] = [:]
            for kind in ChainKind.allCases {
                let rules = allowed[kind] ?? []
                if kind == .ingress || !rules.isEmpty {
                    let name = kind.chainName(id)
                    chainsOfIdentity.append((Chain(name: name), rules + [denial(name, id)]))
                    targetsOfIdentity[kind] = name
                } else if let name = sharedAuditChain(id) {
                    if sharedDenials[name] == nil { shared[name] = denial(name, id, shared: true) }
                    targetsOfIdentity[kind] = name
                }
                // Otherwise no map element at all: the rule after each map drops managed
                // addresses it did not send anywhere.
            }
            // One identity that does not fit must not stop the others: it is quarantined.
            let limits = options.limits
            var problem: String?
            for (chain, rules) in chainsOfIdentity where problem == nil {
                problem = limits.problem(objectName: chain.name) ?? rules.compactMap { limits.problem(in: $0) }.first
            }
            for (name, rule) in shared.sorted(by: { $0.key < $1.key }) where problem == nil {
                problem = limits.problem(objectName: name) ?? limits.problem(in: rule)
            }
            if let problem {
                let members = inventory.containers.filter { containerIdentity[$0.name] == id }.map(\.name).sorted()
                failures.append(Compiler.IdentityFailure(identity: id, containers: members, reason: problem))
                targets[id] = Dictionary(uniqueKeysWithValues: ChainKind.allCases.map { ($0, ChainName.quarantine.name) })
                continue
            }
            identityChains += chainsOfIdentity
            targets[id] = targetsOfIdentity
            sharedDenials.merge(shared) { a, _ in a }
        }
        let quarantined = Set(failures.map(\.identity))
        let numbers = IdentityNumbering.numbers(for: sortedIdentities)
        var sets: [NFTSet] = []
        var chains: [Chain] = []
        var rules: [Rule] = []

        let managedContainers = inventory.containers.filter { containerIdentity[$0.name] != nil }
        var membersByService: [ServiceRef: [Container]] = [:]
        for c in managedContainers {
            guard let id = containerIdentity[c.name], !quarantined.contains(id) else { continue }
            for ref in id.services { membersByService[ref, default: []].append(c) }
        }
        for f in families {
            let addrType: DataType = f == .v4 ? .ipv4Addr : .ipv6Addr
            let governed = mergedPrefixes(evaluator.governedSubnets.filter { ($0.isIPv4) == (f == .v4) })
            sets.append(NFTSet(name: SetName.governed(f).name, key: KeyType(addrType), flags: .interval,
                               elements: governed.map { SetElement(key: [keyPart($0)]) }))
            var managed: [SetElement] = []
            var identityElements: [SetElement] = []
            for c in managedContainers {
                guard let id = containerIdentity[c.name], let number = numbers[id] else { continue }
                for a in enrolled[c.name] ?? [] where a.isIPv4 == (f == .v4) {
                    let v = value(a)
                    managed.append(SetElement(v))
                    identityElements.append(SetElement(v, .value(number)))
                }
            }
            sets.append(NFTSet(name: SetName.managed(f).name, key: KeyType(addrType), elements: managed))
            for service in policies.services {
                let members = membersByService[service.ref] ?? []
                let elements = members.flatMap { (enrolled[$0.name] ?? []).filter { $0.isIPv4 == (f == .v4) } }.map { SetElement(value($0)) }
                sets.append(NFTSet(name: SetName.service(service.ref, f).name, key: KeyType(addrType), elements: elements))
            }
            for group in sourceGroups {
                var seen = Set<IPAddress>()
                let elements = group.services.flatMap { membersByService[$0] ?? [] }
                    .flatMap { (enrolled[$0.name] ?? []).filter { $0.isIPv4 == (f == .v4) } }
                    .filter { seen.insert($0).inserted }
                    .map { SetElement(value($0)) }
                sets.append(NFTSet(name: SetName.sourceGroup(group, f).name, key: KeyType(addrType), elements: elements))
            }
            sets.append(NFTSet(name: SetName.identityNumbers(f).name, key: KeyType(addrType), data: .value(.classid),
                               elements: identityElements))
        }
        // One dispatch element per identity and kind (where the compiler sends it), for both families.
        for kind in ChainKind.allCases {
            let elements = sortedIdentities.compactMap { id -> SetElement? in
                guard let number = numbers[id], let target = targets[id]?[kind] else { return nil }
                return SetElement(number, .verdict(.jump(target)))
            }
            sets.append(NFTSet(name: SetName.dispatch(kind).name, key: KeyType(.classid), data: .verdict, elements: elements))
        }

        // Base chains.
        func base(_ name: String, _ hook: Hook) -> Chain {
            Chain(name: name, base: BaseChain(type: .filter, hook: hook, priority: options.priority, policy: .accept))
        }
        chains += [base(ChainName.forward.name, .forward), base(ChainName.input.name, .input), base(ChainName.output.name, .output)]
        rules += forwardRules() + hostRules(input: true) + hostRules(input: false)

        // Identity chains.
        var byReference: [FlowReference: Flow] = [:]
        for f in flows { byReference[FlowReference(f)] = f }
        if !quarantined.isEmpty {
            let quarantine = ChainName.quarantine.name
            chains.append(Chain(name: quarantine))
            rules.append(Rule(chain: quarantine, [.counter(), .verdict(.drop)], comment: RuleRole.quarantine.comment))
        }
        for name in sharedDenials.keys.sorted() {
            chains.append(Chain(name: name))
            rules.append(sharedDenials[name]!)
        }
        for (chain, chainRules) in identityChains {
            chains.append(chain)
            rules += chainRules
        }
        var table = Table(family: TableLayout.inet.family, name: TableLayout.inet.name, flags: options.tableFlags)
        table.sets = Self.inLookupOrder(sets + portSets(rules), rules: rules)
        table.chains = chains
        table.rules = rules
        return Compiler.Output(table: table, identities: sortedIdentities, flowsByReference: byReference,
                               failures: failures, rejectedAddresses: evaluator.rejectedAddresses,
                               bridgeTable: PortBinding.table(policies, inventory, flags: options.tableFlags,
                                                              rejected: Set(evaluator.rejectedAddresses.map(\.address))),
                               evaluator: evaluator)
    }

    /// The order in which the kernel is asked to create the sets. It keeps a table's sets in a
    /// list, in creation order, and finds one by name by walking that list from its head
    /// (`nft_set_lookup`: a `strlen` and a compare for every set passed): each new set walks the
    /// whole list (is the name taken?), each rule that looks a set up walks to it. A set's name is
    /// therefore read once for every set created after it and every lookup of a set placed after
    /// it; the total is least when sets go by their name's length over (1 + the rules that look
    /// them up), smallest first (Smith's rule): the port and service sets that many rules name
    /// first, the long source-group names (up to ten services spelled out) and the sets no rule
    /// names last. Ties keep the compiler's order, so the order is deterministic; nothing reads
    /// meaning into it.
    static func inLookupOrder(_ sets: [NFTSet], rules: [Rule]) -> [NFTSet] {
        var lookups: [String: Int] = [:]
        for rule in rules { for name in rule.referencedSets { lookups[name, default: 0] += 1 } }
        let keyed = sets.enumerated().map { (offset: $0.offset, set: $0.element, length: $0.element.name.utf8.count,
                                             weight: 1 + (lookups[$0.element.name] ?? 0)) }
        return keyed.sorted { a, b in
            let ca = a.length * b.weight, cb = b.length * a.weight  // a.length / a.weight vs b's
            return ca != cb ? ca < cb : a.offset < b.offset
        }.map { $0.set }
    }

    // MARK: - Base chains

    func ctEstablished(_ chain: String) -> Rule {
        Rule(chain: chain, [.match(Match(.ctState, .value(.ctState([.established, .related])))), .verdict(.accept)])
    }

    /// Neighbour discovery and multicast listener messages: link plumbing that must keep working
    /// between governed containers (bridge netfilter passes bridged ICMPv6 through these hooks).
    func neighbourDiscovery(_ chain: String) -> Rule {
        let types: [UInt8] = [130, 131, 132, 133, 135, 136, 143]  // MLD query/report/done, RS, NS, NA, MLDv2 report
        return Rule(chain: chain, [.match(Match(.icmpv6Type, .anonymousSet(types.map { SetElement(.icmpv6Type($0)) }))), .verdict(.accept)])
    }

    func forwardRules() -> [Rule] {
        let c = ChainName.forward.name
        var r = [ctEstablished(c)]
        // Router advertisements and redirects forwarded between bridge ports come from containers.
        // Kept without IPv6 addresses too: a container's advertisement would hand its neighbours
        // IPv6 addresses that nothing here then governs.
        r.append(Rule(chain: c, [.match(Match(.icmpv6Type, .anonymousSet([SetElement(.icmpv6Type(134)), SetElement(.icmpv6Type(137))]))),
                                 .counter(), .verdict(.drop)], comment: RuleRole.routerAdvertisements.comment))
        if families.contains(.v6) { r.append(neighbourDiscovery(c)) }
        for f in families {
            let (saddr, daddr) = fields(f)
            let governed = SetName.governed(f).name, managed = SetName.managed(f).name
            r.append(Rule(chain: c, [.match(Match(saddr, .set(governed))), .match(Match(saddr, negated: true, .set(managed))),
                                     .counter(), .verdict(.drop)], comment: RuleRole.unclassified(.source).comment))
            r.append(Rule(chain: c, [.match(Match(daddr, .set(governed))), .match(Match(daddr, negated: true, .set(managed))),
                                     .counter(), .verdict(.drop)], comment: RuleRole.unclassified(.destination).comment))
        }
        for f in families {
            r.append(dispatch(c, fields(f).daddr, f, .ingress))
        }
        for f in families {
            r.append(dispatch(c, fields(f).saddr, f, .egress))
            r.append(Rule(chain: c, [.match(Match(fields(f).saddr, .set(SetName.managed(f).name))), .counter(), .verdict(.drop)],
                          comment: RuleRole.sharedDenial(.toUngoverned).comment))
        }
        return r
    }

    /// `meta priority set FIELD map @identity_vN meta priority vmap @dispatch_KIND`: the address's
    /// identity number, then the identity's chain of that kind. An address without a number ends
    /// the rule before anything is written; a number without a chain of that kind continues.
    func dispatch(_ chain: String, _ field: Field, _ f: Family, _ kind: ChainKind) -> Rule {
        Rule(chain: chain, [.setFromMap(target: .metaPriority, fields: [field], map: SetName.identityNumbers(f).name),
                            .vmap(fields: [.metaPriority], map: .named(SetName.dispatch(kind).name))])
    }

    func hostRules(input: Bool) -> [Rule] {
        let c = (input ? ChainName.input : ChainName.output).name
        var r: [Rule] = [Rule(chain: c, [.match(Match(input ? .iifname : .oifname, .value(.ifname("lo")))), .verdict(.accept)])]
        r.append(ctEstablished(c))
        if families.contains(.v6) { r.append(neighbourDiscovery(c)) }
        for f in families {
            let field = input ? fields(f).saddr : fields(f).daddr
            r.append(dispatch(c, field, f, input ? .toHost : .fromHost))
            r.append(Rule(chain: c, [.match(Match(field, .set(SetName.managed(f).name))), .counter(), .verdict(.drop)],
                          comment: RuleRole.sharedDenial(input ? .toHost : .fromHost).comment))
            r.append(Rule(chain: c, [.match(Match(field, .set(SetName.governed(f).name))), .counter(), .verdict(.drop)],
                          comment: RuleRole.unclassified(input ? .source : .destination).comment))
        }
        return r
    }

    // MARK: - Identity chains

    /// The allow rules of each of the identity's chains (without the final denial).
    func identityRules(_ id: Identity) -> [ChainKind: [Rule]] {
        let members = Set(id.services)
        var rules: [Rule] = []
        let inChain = ChainKind.ingress.chainName(id), outChain = ChainKind.egress.chainName(id)
        let fromHost = ChainKind.fromHost.chainName(id), toHost = ChainKind.toHost.chainName(id)
        // Only flows that name a member, in file order (each flow once even if it names several).
        let relevant = Set(id.services.flatMap { flowsByService[$0] ?? [] }).sorted()
        for flow in relevant.map({ flows[$0] }) {
            let toMember = flow.to.contains { $0.endpoint.serviceRef.map(members.contains) == true }
            let fromMember = flow.from.contains { $0.endpoint.serviceRef.map(members.contains) == true }
            if toMember {
                let group = sourceGroup(flow)
                if let group {
                    for f in families {
                        rules += allow(inChain, flow, f, [.match(Match(fields(f).saddr, .set(SetName.sourceGroup(group, f).name)))])
                    }
                }
                for source in flow.from {
                    switch source.endpoint {
                    case .service(let ref):
                        if group != nil { continue }
                        for f in families {
                            rules += allow(inChain, flow, f, [.match(Match(fields(f).saddr, .set(SetName.service(ref, f).name)))])
                        }
                    case .world:
                        for f in families {
                            rules += allow(inChain, flow, f, [.match(Match(fields(f).saddr, negated: true, .set(SetName.managed(f).name)))])
                        }
                    case .cidr(let net):
                        let f: Family = net.isIPv4 ? .v4 : .v6
                        guard families.contains(f) else { continue }  // no packet of that family gets here
                        rules += allow(inChain, flow, f, [prefixMatch(fields(f).saddr, net),
                                                          .match(Match(fields(f).saddr, negated: true, .set(SetName.managed(f).name)))])
                    case .host:
                        for f in families { rules += allow(fromHost, flow, f, []) }
                    }
                }
            }
            if fromMember {
                for target in flow.to {
                    switch target.endpoint {
                    case .service:
                        continue  // decided by the destination's ingress chain
                    case .world:
                        for f in families { rules += allow(outChain, flow, f, []) }
                    case .cidr(let net):
                        let f: Family = net.isIPv4 ? .v4 : .v6
                        guard families.contains(f) else { continue }
                        rules += allow(outChain, flow, f, [prefixMatch(fields(f).daddr, net)])
                    case .host:
                        for f in families { rules += allow(toHost, flow, f, []) }
                    }
                }
            }
        }
        let byChain = Dictionary(grouping: rules, by: \.chain)
        var out: [ChainKind: [Rule]] = [:]
        for kind in ChainKind.allCases { out[kind] = byChain[kind.chainName(id)] ?? [] }
        return out
    }

    /// Where an audit identity's egress and host traffic goes when no flow allows any: one chain
    /// per set of segments, whose names the log prefix carries.
    func sharedAuditChain(_ id: Identity) -> String? {
        let segments = Array(Set(id.services.map(\.segment))).sorted()
        return segments.allSatisfy({ modes[$0] == .audit }) ? ChainName.audit(segments: segments).name : nil
    }

    /// The services a flow names as sources, when there are several (and their set name fits):
    /// they share one source set and one rule per destination, instead of a rule each.
    func sourceGroup(_ flow: Flow) -> Identity? {
        let refs = Array(Set(flow.from.compactMap(\.endpoint.serviceRef)))
        guard refs.count >= 2 else { return nil }
        let group = Identity(refs)
        return SetName.sourceGroup(group, .v4).fitsUnshortened ? group : nil
    }

    /// One accept rule per protocol of the flow's ports, with the flow's `file:line` and a counter.
    func allow(_ chain: String, _ flow: Flow, _ f: Family, _ match: [Statement]) -> [Rule] {
        let ports = flow.portSet
        var protocolMatches: [[Statement]] = []
        if ports.otherProtocols {
            // `any`: every protocol; the family is implied by the address match, or stated here.
            protocolMatches.append(match.isEmpty ? [.match(Match(.metaNfproto, .value(.nfProto(f == .v4 ? NFProto.ipv4 : NFProto.ipv6))))] : [])
        } else {
            if !ports.tcp.isEmpty { protocolMatches.append([portMatch(.tcpDport, ports.tcp)]) }
            if !ports.udp.isEmpty { protocolMatches.append([portMatch(.udpDport, ports.udp)]) }
            if ports.icmp {
                // `meta l4proto icmp` / `ipv6-icmp` already tell the families apart.
                protocolMatches.append([.match(Match(.metaL4proto, .value(.proto(f == .v4 ? IPProto.icmp : IPProto.icmpv6))))])
            }
        }
        return protocolMatches.map { p in
            var statements = match
            // Port matches on their own say nothing of the family; pin it so v4 and v6 rules differ.
            if match.isEmpty, p.first.map(isPortMatch) == true {
                statements.append(.match(Match(.metaNfproto, .value(.nfProto(f == .v4 ? NFProto.ipv4 : NFProto.ipv6)))))
            }
            return Rule(chain: chain, statements + p + [.counter(), .verdict(.accept)], comment: RuleRole.allow(flow: FlowReference(flow)).comment)
        }
    }

    func isPortMatch(_ s: Statement) -> Bool {
        if case .match(let m) = s, m.fields == [.tcpDport] || m.fields == [.udpDport] { return true }
        return false
    }

    /// One port or range inline; several in the named set of that list (`portSets`), which every
    /// rule with the same list shares: the kernel's load time grows with the number of sets, and
    /// an anonymous set per rule made most of them.
    func portMatch(_ field: Field, _ ranges: [ClosedRange<Int>]) -> Statement {
        if ranges.count == 1, let r = ranges.first {
            if r.lowerBound == r.upperBound { return .match(Match(field, .value(.port(UInt16(r.lowerBound))))) }
            return .match(Match(field, .range(.port(UInt16(r.lowerBound)), .port(UInt16(r.upperBound)))))
        }
        let name = SetName.destinationPorts(field == .udpDport ? .udp : .tcp, ranges.map { UInt16($0.lowerBound)...UInt16($0.upperBound) })
        return .match(Match(field, .set(name.name)))
    }

    /// The named port sets `rules` look up, sorted by name.
    func portSets(_ rules: [Rule]) -> [NFTSet] {
        var sets: [String: NFTSet] = [:]
        for f in flows {
            let p = f.portSet
            guard !p.otherProtocols else { continue }
            for (proto, ranges) in [(TransportProtocol.tcp, p.tcp), (.udp, p.udp)] where ranges.count > 1 {
                let bounds = ranges.map { UInt16($0.lowerBound)...UInt16($0.upperBound) }
                let name = SetName.destinationPorts(proto, bounds).name
                guard sets[name] == nil else { continue }
                sets[name] = NFTSet(name: name, key: KeyType(.inetService), flags: .interval,
                                    elements: bounds.map { SetElement(key: [KeyPart.between(.port($0.lowerBound), .port($0.upperBound))]) })
            }
        }
        var used = Set<String>()
        for r in rules {
            for case .match(let m) in r.statements {
                if case .set(let name) = m.operand, m.fields == [.tcpDport] || m.fields == [.udpDport] { used.insert(name) }
            }
        }
        return used.sorted().compactMap { sets[$0] }
    }

    /// The end of every identity chain: drop and count, or in audit mode log, count and accept.
    func denial(_ chain: String, _ id: Identity, shared: Bool = false) -> Rule {
        let segments = Array(Set(id.services.map(\.segment))).sorted()
        let audit = segments.allSatisfy { modes[$0] == .audit }
        // A shared chain is only ever an audit chain (`sharedAuditChain`): it names its segments.
        let who: DenialSubject = shared ? .segments(segments) : .identity(id)
        if audit {
            let prefix = LogPrefix.audit(segments: segments).text
            return Rule(chain: chain, [.counter(), .log(Log(prefix: prefix, group: options.auditLogGroup)), .verdict(.accept)],
                        comment: RuleRole.audit(who).comment)
        }
        return Rule(chain: chain, [.counter(), .verdict(.drop)], comment: RuleRole.deny(who).comment)
    }

    // MARK: - Values

    func fields(_ f: Family) -> (saddr: Field, daddr: Field) {
        f == .v4 ? (.ipSaddr, .ipDaddr) : (.ip6Saddr, .ip6Daddr)
    }

    func value(_ a: IPAddress) -> Value { a.nftValue }

    func keyPart(_ n: IPNetwork) -> KeyPart {
        switch value(n.network) {
        case .ipv4(let a): return KeyPart.prefix(a, n.prefixLength)
        case .ipv6(let a): return KeyPart.prefix(a, n.prefixLength)
        default: return .value(value(n.network))
        }
    }

    func prefixMatch(_ field: Field, _ n: IPNetwork) -> Statement {
        if n.prefixLength == n.address.bitWidth { return .match(Match(field, .value(value(n.address)))) }
        return .match(Match(field, .prefix(value(n.network), UInt8(n.prefixLength))))
    }

    /// Interval sets reject overlapping elements: merge overlapping and adjacent prefixes.
    func mergedPrefixes(_ nets: [IPNetwork]) -> [IPNetwork] {
        let sorted = Set(nets.map(\.normalized)).sorted()
        var out: [IPNetwork] = []
        for n in sorted where !out.contains(where: { $0.contains(n) }) {
            out.removeAll { n.contains($0) }
            out.append(n)
        }
        return out
    }
}

/// The number of each identity in the `identity_v4/6` and `dispatch_*` maps, as the `classid`
/// value the dispatch writes to `meta priority`.
///
/// Values are `n << 4` with `n` in 1…4095 (major 0, low four bits 0): qdiscs read a major of 0
/// as no class of theirs (`htb`, `prio` match a class only by a non-zero major) and take the band
/// of the low four bits, 0, so a packet keeps the queueing of an unset priority. Beyond 4095
/// identities the numbers continue above 0xffff (documented in the README).
///
/// `n` comes from a hash of the identity's name, probed linearly in sorted order on a collision, so
/// an identity keeps its number when others come and go (mostly: a newcomer that sorts first can
/// take a slot another one probed into), and a new identity's full plan rewrites few elements.
public enum IdentityNumbering {
    static let slots: UInt32 = 4095

    public static func numbers(for identities: [Identity]) -> [Identity: Value] {
        var taken = Set<UInt32>()
        var out: [Identity: Value] = [:]
        var overflow: UInt32 = slots
        for id in identities.sorted() {
            var n: UInt32
            if UInt32(taken.count) < slots {
                n = hash(id.chainSuffix) % slots + 1
                while taken.contains(n) { n = n % slots + 1 }
            } else {
                overflow += 1
                n = overflow
            }
            taken.insert(n)
            out[id] = .classid(n << 4)
        }
        return out
    }

    /// FNV-1a (32 bits): stable across runs and platforms, unlike `Hasher`.
    static func hash(_ s: String) -> UInt32 {
        var h: UInt32 = 0x811c_9dc5
        for b in s.utf8 {
            h ^= UInt32(b)
            h = h &* 0x0100_0193
        }
        return h
    }
}
