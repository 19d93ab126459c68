import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset

/// The `bridge bulkhead` table: every container on a governed network is bound to its bridge port.
///
/// Bridge netfilter hands the inet hooks only untagged IPv4/IPv6, and in the inet `forward` hook
/// the input interface is the bridge, not the port, so neither ARP, tagged frames nor "which
/// container sent this" can be checked there. The bridge family sees every frame as it enters a
/// port (`prerouting`) or leaves one for a container after the host sent it (`output`):
///
/// ```
/// table bridge bulkhead {
///   set ports      { type ifname; }                            # bound ports (container side of the bridge)
///   set bind_ether { type ifname . ether_addr; }               # port . its container's MAC
///   set bind_v4    { type ifname . ipv4_addr; }                # port . its container's addresses
///   set bind_v6    { type ifname . ipv6_addr; }                #   (incl. the EUI-64 link-local from the MAC)
///   set bind_arp   { type ifname . ether_addr . ipv4_addr; }   # port . MAC . IPv4: what its ARP may announce
///   chain prerouting { type filter hook prerouting priority -210; policy accept;
///     iifname != @ports accept                                 # not a bound port: not ours
///     ether type != { ip, arp, ip6 } counter drop              # 802.1Q (VLAN 0 too), 802.1ad, PPPoE, anything else
///     iifname . ether saddr != @bind_ether counter drop
///     arp saddr ip 0.0.0.0 iifname . arp saddr ether @bind_ether accept     # ARP probe
///     iifname . arp saddr ether . arp saddr ip != @bind_arp counter drop
///     ip6 saddr :: icmpv6 type { mld-listener-report, nd-neighbor-solicit, mld2-listener-report } accept   # DAD, MLD
///     iifname . ip saddr != @bind_v4 counter drop
///     iifname . ip6 saddr != @bind_v6 counter drop
///     icmpv6 type { nd-router-advert, nd-redirect } counter drop
///     icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @bind_v6 counter drop   # ND target (`icmpv6 taddr`)
///     ip6 saddr fe80::/10 meta l4proto != ipv6-icmp counter drop           # link-local: only ND and MLD
///     ip6 saddr fe80::/10 icmpv6 type != { ND, MLD } counter drop   (and the same for ip6 daddr)
///   }
///   chain output { type filter hook output priority -210; policy accept;   # host → container
///     oifname != @ports accept
///     ip6 daddr/saddr fe80::/10 … counter drop                            # link-local: only ND and MLD
///   }
/// }
/// ```
///
/// Every check is one hash lookup; the chains depend on nothing but this layout, so container
/// churn changes set elements only. A port with no MAC in the inventory is in `ports` with no
/// `bind_ether` element: every frame from it is dropped (fail closed).
public enum PortBinding {
    public static let tableID = TableLayout.bridge
    /// Before br_netfilter (0) and nft's `filter` (-200) in the bridge family.
    public static let priority: Int32 = -210

    public static let ports = SetName.ports.name
    public static let bindEther = SetName.bindEther.name
    public static let bindV4 = SetName.bindV4.name
    public static let bindV6 = SetName.bindV6.name
    public static let bindARP = SetName.bindARP.name
    public static let prerouting = ChainName.prerouting.name
    public static let output = ChainName.output.name

    /// ICMPv6 types that link-local addresses keep: MLD query/report/done, RS, NS, NA, MLDv2 report.
    static let linkPlumbing: [UInt8] = [130, 131, 132, 133, 135, 136, 143]

    /// Set definitions, in table order.
    public static let sets: [NFTSet] = [
        NFTSet(name: ports, key: KeyType(.ifname)),
        NFTSet(name: bindEther, key: KeyType(.ifname, .etherAddr)),
        NFTSet(name: bindV4, key: KeyType(.ifname, .ipv4Addr)),
        NFTSet(name: bindV6, key: KeyType(.ifname, .ipv6Addr)),
        NFTSet(name: bindARP, key: KeyType(.ifname, .etherAddr, .ipv4Addr)),
    ]

    /// The table for `inventory` under `policies` (bindings for every attachment with a port on a
    /// governed network). `rejected` addresses (the evaluator does not enrol them: outside their
    /// network's subnets, the host's, claimed twice) are bound to no port: a lying inventory must
    /// not license spoofing.
    public static func table(_ policies: PolicySet, _ inventory: Inventory, flags: TableFlags = [],
                             rejected: Set<IPAddress> = []) -> Table {
        let governed = policies.governedNetworks
        var elements: [String: [SetElement]] = [:]
        for c in inventory.containers {
            for (set, els) in self.elements(of: c, governedNetworks: governed, excluding: rejected) { elements[set, default: []] += els }
        }
        // Ports the source found on a governed bridge but could not tie to a container: bound to
        // nothing, so every frame from them is dropped.
        for n in inventory.networks where governed.contains(n.name) {
            for port in n.unboundPorts ?? [] where Attachment.isValidInterfaceName(port) {
                elements[ports, default: []].append(SetElement(.ifname(port)))
            }
        }
        var t = Table(family: tableID.family, name: tableID.name, flags: flags)
        t.sets = sets.map { def in
            var s = def
            // Two containers claiming one port (a lying inventory) must not make the table fail.
            var seen = Set<SetElement>()
            s.setElements((elements[def.name] ?? []).filter { seen.insert($0).inserted })
            return s
        }
        t.chains = [
            Chain(name: prerouting, base: BaseChain(type: .filter, hook: .prerouting, priority: priority, policy: .accept)),
            Chain(name: output, base: BaseChain(type: .filter, hook: .output, priority: priority, policy: .accept)),
        ]
        t.rules = preroutingRules() + outputRules()
        return t
    }

    /// Elements a container contributes, by set name (its attachments to governed networks that
    /// name a port). Used by the compiler and by the incremental planner.
    ///
    /// A port carries the container's own addresses on *every* network, not only the port's: a
    /// container on two networks answers from the route of its first network with the address
    /// the other network gave it (Docker's routing, and Linux ARP then announces that address
    /// too). It still cannot use anyone else's address. The link-local address is the port's own.
    public static func elements(of container: Container, governedNetworks: some Collection<String>,
                                excluding rejected: Set<IPAddress> = []) -> [String: [SetElement]] {
        var out: [String: [SetElement]] = [:]
        let own = container.addresses.filter { !rejected.contains($0) }
        for network in container.networks.keys.sorted() where governedNetworks.contains(network) {
            guard let a = container.networks[network], let port = a.port, Attachment.isValidInterfaceName(port) else { continue }
            let p = Value.ifname(port)
            out[ports, default: []].append(SetElement(p))
            guard let text = a.mac, let mac = EtherAddress(text) else { continue }
            out[bindEther, default: []].append(SetElement(p, .etherAddr(mac)))
            for v4 in own where v4.isIPv4 {
                out[bindV4, default: []].append(SetElement(p, v4.nftValue))
                out[bindARP, default: []].append(SetElement(p, .etherAddr(mac), v4.nftValue))
            }
            out[bindV6, default: []].append(SetElement(p, .ipv6(linkLocal(mac))))
            for v6 in own where !v6.isIPv4 { out[bindV6, default: []].append(SetElement(p, v6.nftValue)) }
        }
        return out
    }

    /// The kernel's default (EUI-64) link-local address for an interface with this MAC.
    public static func linkLocal(_ mac: EtherAddress) -> IPv6Address {
        let m = mac.bytes.map(UInt64.init)
        let low = (m[0] ^ 0x02) << 56 | m[1] << 48 | m[2] << 40 | 0xff << 32 | 0xfe << 24 | m[3] << 16 | m[4] << 8 | m[5]
        return IPv6Address(high: 0xfe80_0000_0000_0000, low: low)
    }

    // MARK: - Rules

    static let linkLocalPrefix = IPv6Address(high: 0xfe80_0000_0000_0000, low: 0)

    static func drop(_ chain: String, _ statements: [Statement], _ reason: PortBindingDrop) -> Rule {
        Rule(chain: chain, statements + [.counter(), .verdict(.drop)], comment: RuleRole.portBinding(reason).comment)
    }

    static func icmpv6Types(_ types: [UInt8]) -> Operand {
        .anonymousSet(types.map { SetElement(.icmpv6Type($0)) })
    }

    /// Link-local IPv6 (source or destination) other than neighbour discovery and MLD.
    static func linkLocalRules(_ chain: String, _ field: Field) -> [Rule] {
        let ll = Statement.match(Match(field, .prefix(.ipv6(linkLocalPrefix), 10)))
        let from = field == .ip6Saddr
        return [
            drop(chain, [ll, .match(Match(.metaL4proto, negated: true, .value(.proto(IPProto.icmpv6))))],
                 from ? .ipv6FromLinkLocal : .ipv6ToLinkLocal),
            drop(chain, [ll, .match(Match(.icmpv6Type, negated: true, icmpv6Types(linkPlumbing)))],
                 from ? .icmpv6FromLinkLocal : .icmpv6ToLinkLocal),
        ]
    }

    static func preroutingRules() -> [Rule] {
        let c = prerouting
        let port = Field.iifname
        var r: [Rule] = []
        r.append(Rule(chain: c, [.match(Match(port, negated: true, .set(ports))), .verdict(.accept)]))
        r.append(drop(c, [.match(Match(.etherType, negated: true, .anonymousSet(
            [EtherTypes.ipv4, EtherTypes.arp, EtherTypes.ipv6].map { SetElement(.etherType($0)) })))],
            .otherEtherType))
        r.append(drop(c, [.match(Match([port, .etherSaddr], negated: true, .set(bindEther)))], .sourceMAC))
        // ARP probes (RFC 5227) announce sender IP 0.0.0.0: the sender MAC is still checked.
        r.append(Rule(chain: c, [.match(Match(.arpSaddrIP, .value(.ipv4(IPv4Address(0))))),
                                 .match(Match([port, .arpSaddrEther], .set(bindEther))), .verdict(.accept)]))
        r.append(drop(c, [.match(Match([port, .arpSaddrEther, .arpSaddrIP], negated: true, .set(bindARP)))], .arpSender))
        // Duplicate address detection and MLD reports come from the unspecified address.
        r.append(Rule(chain: c, [.match(Match(.ip6Saddr, .value(.ipv6(IPv6Address(high: 0, low: 0))))),
                                 .match(Match(.icmpv6Type, icmpv6Types([131, 135, 143]))), .verdict(.accept)]))
        r.append(drop(c, [.match(Match([port, .ipSaddr], negated: true, .set(bindV4)))], .ipv4Source))
        r.append(drop(c, [.match(Match([port, .ip6Saddr], negated: true, .set(bindV6)))], .ipv6Source))
        r.append(drop(c, [.match(Match(.icmpv6Type, icmpv6Types([134, 137])))], .routerAdvertisement))
        r.append(drop(c, [.match(Match(.icmpv6Type, .value(.icmpv6Type(136)))),
                          .match(Match([port, .icmpv6Taddr], negated: true, .set(bindV6)))], .neighbourAdvert))
        r += linkLocalRules(c, .ip6Saddr) + linkLocalRules(c, .ip6Daddr)
        return r
    }

    static func outputRules() -> [Rule] {
        let c = output
        return [Rule(chain: c, [.match(Match(.oifname, negated: true, .set(ports))), .verdict(.accept)])]
            + linkLocalRules(c, .ip6Saddr) + linkLocalRules(c, .ip6Daddr)
    }
}
