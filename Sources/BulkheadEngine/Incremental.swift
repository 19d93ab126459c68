import BulkheadCompiler
import BulkheadInventory
import BulkheadLayout
import BulkheadPolicy
import BulkheadRuleset

/// Container churn without a full compile: given the table last applied (compiled from these
/// policies and an inventory) and one container added or removed, the element-only transaction
/// that `Diff` would produce for the new inventory — the container's addresses in `managed_v4/6`,
/// in the `svc_*` sets of its services and, with its identity's number, in `identity_v4/6`, in the
/// table's set order. No element is a verdict (the dispatch maps change only with chains), so the
/// kernel does not re-validate the table for it.
///
/// The cost per event is independent of the number of containers: membership is decided against
/// the services only, and the transaction is validated against a table holding just the sets it
/// touches (and the chains its verdicts jump to) rather than the whole applied table.
///
/// When the change is more than elements, `transaction(for:)` says so and the caller runs the full
/// `Planner.plan` instead: a combination of services with no chains yet, an address that another
/// container already holds, a network the inventory did not have, a container name seen twice or
/// a removal of an unknown container, a set missing from the table.
public struct IncrementalPlanner: Sendable {
    public enum Change: Sendable, Hashable {
        case added(Container)
        case removed(Container)
    }

    public enum Outcome: Sendable {
        /// Element operations only (empty when the container belongs to no service).
        case transaction(Transaction)
        /// Not an element-only change: run the full plan.
        case needsFullPlan(reason: String)
    }

    private let header: Table
    private let services: [Service]
    /// Set definitions (no elements), and each set's position in the applied table.
    private let setDefinitions: [String: NFTSet]
    private let setPosition: [String: Int]
    private let chainNames: Set<String>
    /// An identity's ingress chain → its number, as the applied `dispatch_ingress` map holds it.
    private let numberByIngressChain: [String: Value]
    /// Service → the source groups (`SetName.sourceGroup` sets) it belongs to.
    private let groupsByService: [ServiceRef: [Identity]]
    private let networks: Set<String>
    /// Networks by name and the host's addresses: what decides whether an address is enrolled.
    private let networkByName: [String: Network]
    private let hostAddresses: Set<IPAddress>
    /// Networks the policies govern: their attachments are bound to their ports (`PortBinding`).
    private let governedNetworks: Set<String>
    /// Containers of the inventory the table holds, by name.
    private var containers: [String: Container]
    /// How many containers of that inventory hold each address.
    private var addressOwners: [IPAddress: Int]
    /// How many of its containers have each identity of several services (those chains exist only
    /// while some container has the combination).
    private var combinations: [Identity: Int]
    /// Address families with a governed subnet, and how many enrolled addresses of managed
    /// containers each family has: the compiler makes a family's objects only when it has either
    /// (`Compiler`), so removing the last such address deletes sets, which only the full plan does.
    private let governedFamilies: Set<AddressFamily>
    private var managedAddresses: [AddressFamily: Int]

    /// - Parameters:
    ///   - table: the table last applied, compiled from `policies` and `inventory`.
    public init(policies: PolicySet, inventory: Inventory, applied table: Table) {
        header = table.header
        let allServices = policies.services
        services = allServices
        var defs: [String: NFTSet] = [:], pos: [String: Int] = [:]
        for (i, s) in table.sets.enumerated() {
            defs[s.name] = s.definition
            pos[s.name] = i
        }
        setDefinitions = defs
        setPosition = pos
        chainNames = Set(table.chains.map(\.name))
        var numbers: [String: Value] = [:]
        for e in table.sets.first(where: { $0.name == SetName.dispatch(.ingress).name })?.elements ?? [] {
            guard case .verdict(.jump(let chain))? = e.data, e.key.count == 1, case .value(let number) = e.key[0] else { continue }
            numbers[chain] = number
        }
        numberByIngressChain = numbers
        let known = Set(allServices.map(\.ref))
        var groups: [ServiceRef: [Identity]] = [:]
        for s in table.sets {
            guard case .sourceGroup(let group, .v4)? = SetName(parsing: s.name) else { continue }
            for ref in group.services where known.contains(ref) {
                groups[ref, default: []].append(group)
            }
        }
        groupsByService = groups
        networks = Set(inventory.networks.map(\.name))
        networkByName = Dictionary(inventory.networks.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        hostAddresses = Enrolment.hostAddresses(of: inventory)
        governedNetworks = policies.governedNetworks
        var byName: [String: Container] = [:], owners: [IPAddress: Int] = [:], combos: [Identity: Int] = [:]
        // Replicas share their labels: decide membership once per distinct label set.
        var byLabels: [[String: String]: [ServiceRef]] = [:]
        for c in inventory.containers {
            byName[c.name] = c
            for a in c.addresses { owners[a, default: 0] += 1 }
            let refs = byLabels[c.labels] ?? {
                let r = allServices.filter { $0.matches(c) }.map(\.ref)
                byLabels[c.labels] = r
                return r
            }()
            if refs.count > 1 { combos[Identity(refs), default: 0] += 1 }
        }
        containers = byName
        addressOwners = owners
        combinations = combos
        let governed = policies.governedNetworks
        governedFamilies = Set(inventory.networks.filter { governed.contains($0.name) }.flatMap(\.subnets).map { $0.isIPv4 ? .v4 : .v6 })
        managedAddresses = [:]
        for c in inventory.containers where !(byLabels[c.labels] ?? []).isEmpty {
            for (f, n) in enrolledCount(c) { managedAddresses[f, default: 0] += n }
        }
    }

    /// The families the compiler makes objects for, given these address counts (as `Compiler`).
    private func families(_ counts: [AddressFamily: Int]) -> Set<AddressFamily> {
        let present = governedFamilies.union(counts.filter { $0.value > 0 }.keys)
        return present.isEmpty ? [.v4] : present
    }

    /// A managed container's enrolled addresses per family (not counting host addresses or
    /// addresses outside their network's subnets; shared addresses send changes to the full plan).
    private func enrolledCount(_ c: Container) -> [AddressFamily: Int] {
        var out: [AddressFamily: Int] = [:]
        for (n, attachment) in c.networks {
            for a in [attachment.ipv4, attachment.ipv6].compactMap({ $0 })
            where Enrolment.problem(a, network: networkByName[n], hostAddresses: hostAddresses) == nil {
                out[a.isIPv4 ? .v4 : .v6, default: 0] += 1
            }
        }
        return out
    }

    /// The services a container belongs to (the evaluator's membership rule).
    public func services(of container: Container) -> [ServiceRef] {
        services.filter { $0.matches(container) }.map(\.ref)
    }

    /// The transaction for one change; does not change this planner (call `record` once it is applied).
    public func transaction(for change: Change) -> Outcome {
        let container: Container, adding: Bool
        switch change {
        case .added(let c):
            guard containers[c.name] == nil else { return .needsFullPlan(reason: "container \(c.name) is already known") }
            for a in c.addresses where addressOwners[a, default: 0] > 0 {
                return .needsFullPlan(reason: "address \(a) of \(c.name) is already held by another container")
            }
            (container, adding) = (c, true)
        case .removed(let c):
            guard let known = containers[c.name] else { return .needsFullPlan(reason: "container \(c.name) is not known") }
            for a in known.addresses where addressOwners[a, default: 0] > 1 {
                return .needsFullPlan(reason: "address \(a) of \(c.name) is shared with another container")
            }
            (container, adding) = (known, false)
        }
        for n in container.networks.keys where !networks.contains(n) {
            return .needsFullPlan(reason: "network \(n) of \(container.name) is not in the inventory")
        }
        // An address that is not enrolled (outside its network's subnets, the host's): the full
        // compile leaves it out and says why; elements here would enrol it.
        for (n, attachment) in container.networks {
            for a in [attachment.ipv4, attachment.ipv6].compactMap({ $0 }) {
                if Enrolment.problem(a, network: networkByName[n], hostAddresses: hostAddresses) != nil {
                    return .needsFullPlan(reason: "address \(a) of \(container.name) on \(n) is not enrolled")
                }
            }
        }
        var tx = Transaction(table: header.id, current: nil)
        let refs = services(of: container)
        guard !refs.isEmpty else { return .transaction(tx) }  // unclassified: nothing of its own
        let id = Identity(refs)
        if !adding, refs.count > 1, combinations[id, default: 0] <= 1 {
            return .needsFullPlan(reason: "\(container.name) is the last container of identity \(id): its chains go")
        }
        if !adding {
            var after = managedAddresses
            for (f, n) in enrolledCount(container) { after[f, default: 0] -= n }
            if families(managedAddresses) != families(after) {
                return .needsFullPlan(reason: "\(container.name) holds the last address of a family: that family's objects go")
            }
        }
        let ingress = ChainName.identity(.ingress, id).name
        guard chainNames.contains(ingress) else {
            return .needsFullPlan(reason: "identity \(id) has no chain \(ingress) yet")
        }
        // Where the dispatch maps send the identity was decided with its chains; the container
        // only needs the identity's number.
        guard let number = numberByIngressChain[ingress] else {
            return .needsFullPlan(reason: "identity \(id) has no number in \(SetName.dispatch(.ingress).name)")
        }
        let groups = Set(refs.flatMap { groupsByService[$0] ?? [] }).sorted()

        // Elements per set.
        var elements: [String: [SetElement]] = [:]
        for f in AddressFamily.allCases {
            let values = container.addresses.filter { $0.isIPv4 == (f == .v4) }.map(\.nftValue)
            guard !values.isEmpty else { continue }
            elements[SetName.managed(f).name] = values.map { SetElement($0) }
            for r in refs { elements[SetName.service(r, f).name] = values.map { SetElement($0) } }
            for g in groups { elements[SetName.sourceGroup(g, f).name] = values.map { SetElement($0) } }
            elements[SetName.identityNumbers(f).name] = values.map { SetElement($0, .value(number)) }
        }
        var touched: [NFTSet] = []
        for name in elements.keys {
            guard let def = setDefinitions[name] else { return .needsFullPlan(reason: "set \(name) is not in the table") }
            touched.append(def)
        }
        touched.sort { setPosition[$0.name]! < setPosition[$1.name]! }

        // Validate against just what the operations touch.
        var current = header
        current.chains = []
        current.sets = touched.map { def in
            var s = def
            if !adding { s.setElements(elements[def.name]!) }
            return s
        }
        tx = Transaction(table: header.id, current: current)
        do {
            for def in touched {
                let els = ElementOrder.sorted(elements[def.name]!, key: def.key)
                if adding { try tx.add(.elements(set: def.name, els)) } else { try tx.delete(.elements(set: def.name, els)) }
            }
        } catch {
            return .needsFullPlan(reason: "\(error)")
        }
        return .transaction(tx)
    }

    /// The `bridge bulkhead` side of a change: the container's port bindings (elements only), to
    /// commit in the same batch as `transaction(for:)`. A removal uses the bindings recorded for
    /// the container when it was added.
    public func bindingTransaction(for change: Change) -> Outcome {
        let container: Container, adding: Bool
        switch change {
        case .added(let c): (container, adding) = (c, true)
        case .removed(let c):
            guard let known = containers[c.name] else { return .needsFullPlan(reason: "container \(c.name) is not known") }
            (container, adding) = (known, false)
        }
        // Addresses the full compile does not enrol are bound to no port: only it can say which.
        for (n, attachment) in container.networks {
            for a in [attachment.ipv4, attachment.ipv6].compactMap({ $0 }) {
                if Enrolment.problem(a, network: networkByName[n], hostAddresses: hostAddresses) != nil {
                    return .needsFullPlan(reason: "address \(a) of \(container.name) on \(n) is not enrolled")
                }
                if addressOwners[a, default: 0] > (adding ? 0 : 1) {
                    return .needsFullPlan(reason: "address \(a) of \(container.name) is held by another container")
                }
            }
        }
        let elements = PortBinding.elements(of: container, governedNetworks: governedNetworks)
        var current = Table(family: PortBinding.tableID.family, name: PortBinding.tableID.name, flags: header.flags)
        current.sets = PortBinding.sets.map { def in
            var s = def
            if !adding { s.setElements(elements[def.name] ?? []) }
            return s
        }
        var tx = Transaction(table: PortBinding.tableID, current: current)
        do {
            for def in PortBinding.sets {
                guard let els = elements[def.name], !els.isEmpty else { continue }
                let sorted = ElementOrder.sorted(els, key: def.key)
                if adding { try tx.add(.elements(set: def.name, sorted)) } else { try tx.delete(.elements(set: def.name, sorted)) }
            }
        } catch {
            return .needsFullPlan(reason: "\(error)")
        }
        return .transaction(tx)
    }

    /// Records a change whose transaction was applied.
    public mutating func record(_ change: Change) {
        switch change {
        case .added(let c):
            guard containers[c.name] == nil else { return }
            containers[c.name] = c
            for a in c.addresses { addressOwners[a, default: 0] += 1 }
            let refs = services(of: c)
            if refs.count > 1 { combinations[Identity(refs), default: 0] += 1 }
            if !refs.isEmpty { for (f, n) in enrolledCount(c) { managedAddresses[f, default: 0] += n } }
        case .removed(let c):
            guard let known = containers.removeValue(forKey: c.name) else { return }
            for a in known.addresses {
                let n = addressOwners[a, default: 0] - 1
                addressOwners[a] = n > 0 ? n : nil
            }
            let refs = services(of: known)
            if !refs.isEmpty { for (f, n) in enrolledCount(known) { managedAddresses[f, default: 0] -= n } }
            if refs.count > 1 {
                let n = combinations[Identity(refs), default: 0] - 1
                combinations[Identity(refs)] = n > 0 ? n : nil
            }
        }
    }

}
