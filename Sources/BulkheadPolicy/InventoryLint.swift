import BulkheadInventory
import BulkheadYAML

/// Warnings that need to know the containers: `validate --inventory`.
public enum InventoryLint {
    public static func run(_ policies: PolicySet, _ inventory: Inventory) -> [Diagnostic] {
        let evaluator = Evaluator(policies: policies, inventory: inventory)
        var out: [Diagnostic] = []
        let known = Set(inventory.networks.map(\.name))
        for segment in policies.segments {
            for n in segment.networks where !known.contains(n.name) {
                var message = "segment '\(segment.name)' governs network '\(n.name)', which the inventory does not have"
                if let guess = Spelling.closest(to: n.name, among: Array(known)) { message += " (did you mean '\(guess)'?)" }
                out.append(Diagnostic(.warning, .unknownNetwork, message, file: n.location.file, at: n.location.mark))
            }
        }
        for s in policies.services where !inventory.containers.contains(where: s.matches) {
            out.append(Diagnostic(.warning, .unmatchedSelector,
                "no container in the inventory matches the labels of service '\(s.ref)'",
                file: s.selectorLocation.file, at: s.selectorLocation.mark))
        }
        let governed = policies.governedNetworks
        for c in inventory.containers {
            let services = evaluator.membership[c.name] ?? []
            let location = c.source ?? FilePosition(file: "inventory", mark: .start)
            let onGoverned = c.networks.keys.filter(governed.contains).sorted()
            if services.isEmpty, !onGoverned.isEmpty {
                out.append(Diagnostic(.warning, .unmanagedContainer,
                    "container '\(c.name)' is on governed network '\(onGoverned[0])' but matches no service: it will be isolated (all its traffic denied)",
                    file: location.file, at: location.mark))
            }
            if services.count > 1 {
                out.append(Diagnostic(.warning, .overlappingServices,
                    "container '\(c.name)' is matched by \(services.count) services (\(services.map(\.description).joined(separator: ", "))): it gets the flows of each",
                    file: location.file, at: location.mark))
            }
        }
        for r in evaluator.rejectedAddresses {
            let c = inventory.containers.first { $0.name == r.container }
            let location = c?.source ?? FilePosition(file: "inventory", mark: .start)
            let code: DiagnosticCode
            switch r.reason {
            case .outsideSubnets: code = .addressOutsideSubnet
            case .hostAddress: code = .hostAddressClaimed
            case .claimedByOthers: code = .duplicateAddress
            }
            out.append(Diagnostic(.warning, code, "address \(r.address) of container '\(r.container)' is not enrolled: \(r.reasonText); traffic to and from it gets no service's permissions",
                                  file: location.file, at: location.mark))
        }
        for f in policies.flows {
            for e in f.from + f.to {
                guard case .cidr(let net) = e.endpoint,
                      let subnet = evaluator.governedSubnets.first(where: { $0.overlaps(net) }) else { continue }
                out.append(Diagnostic(.warning, .cidrOverlapsGoverned,
                    "\(net) overlaps governed subnet \(subnet): a CIDR endpoint names only ungoverned addresses, so the governed part is not matched; name those services instead",
                    file: e.location.file, at: e.location.mark))
            }
        }
        return out
    }
}
