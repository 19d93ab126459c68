import BulkheadEngine
import BulkheadPolicy
import BulkheadRuleset

/// Text and JSON renderings of a `Plan`.
enum PlanOutput {
    static func containers(_ n: Int?) -> String { n.map { "\($0)" } ?? "-" }

    static func text(_ plan: Plan, nft: Bool) -> String {
        var lines: [String] = []
        switch plan.baseline {
        case .kernel(let generation):
            lines.append("Plan against the kernel's table inet bulkhead (ruleset generation \(generation))\(plan.live == nil ? ", which does not exist yet" : ""):")
        case .empty(let reason):
            lines.append("Plan against an empty ruleset (\(reason)):")
        }
        if !plan.hasChanges {
            // Leftovers (a revocation that failed last time) are worth a line; nothing else is.
            if case .wouldCut(let cuts, _)? = plan.connections, !cuts.isEmpty { lines += connectionLines(plan.connections) }
            lines.append("No changes: the kernel already enforces these policies.")
            return lines.joined(separator: "\n")
        }
        if let table = plan.tableChangeSummary {
            lines.append("Table: " + table + ".")
        }
        if let table = plan.bridgeTableChangeSummary {
            lines.append("Bridge table: " + table + ".")
        }
        // Each column's text is built once (a cold plan lists tens of thousands of grants), then
        // padded to the widest.
        struct Columns { var pair: String, pairWidth: Int, port: String, portWidth: Int }
        func columns(_ c: Plan.FlowChange) -> Columns {
            let pair = "\(c.grant.from) -> \(c.grant.to)", port = c.grant.port.description
            return Columns(pair: pair, pairWidth: pair.count, port: port, portWidth: port.count)
        }
        let openedColumns = plan.opened.map(columns), closedColumns = plan.closed.map(columns)
        let pairWidth = (openedColumns + closedColumns).map(\.pairWidth).max() ?? 0
        let portWidth = (openedColumns + closedColumns).map(\.portWidth).max() ?? 0
        func padded(_ s: String, count: Int, to n: Int) -> String { s + String(repeating: " ", count: max(0, n - count)) }
        func pad(_ s: String, _ n: Int) -> String { padded(s, count: s.count, to: n) }
        func flowLine(_ sign: String, _ c: Plan.FlowChange, _ col: Columns, was: Bool) -> String {
            let g = c.grant
            let counts = "containers \(containers(c.fromContainers)) -> \(containers(c.toContainers))"
            return "  \(sign) \(padded(col.pair, count: col.pairWidth, to: pairWidth))  \(padded(col.port, count: col.portWidth, to: portWidth))  \(pad(counts, 20))  \(was ? "was " : "")\(g.reference)"
        }
        lines.append("")
        lines.append("Flows newly allowed (\(plan.opened.count)):")
        lines += plan.opened.isEmpty ? ["  (none)"] : zip(plan.opened, openedColumns).map { flowLine("+", $0, $1, was: false) }
        lines.append("Flows newly denied (\(plan.closed.count)):")
        lines += plan.closed.isEmpty ? ["  (none)"] : zip(plan.closed, closedColumns).map { flowLine("-", $0, $1, was: true) }
        if !plan.membership.isEmpty {
            lines.append("Service membership:")
            for m in plan.membership {
                if !m.added.isEmpty {
                    let who = m.containers.isEmpty ? "" : " (\(m.containers.joined(separator: ", ")))"
                    lines.append("  + \(m.service): \(m.added.map(\.description).joined(separator: ", "))\(who)")
                }
                if !m.removed.isEmpty {
                    lines.append("  - \(m.service): \(m.removed.map(\.description).joined(separator: ", "))")
                }
            }
        }
        if !plan.foreignRules.isEmpty {
            lines.append("Rules in our table that Bulkhead did not write (will be removed):")
            lines += plan.foreignRules.map { "  ! chain \($0.chain): \($0)" }
        }
        let counts = plan.operationCounts.map { "\($0.1) \($0.0)\($0.1 == 1 ? "" : "s")" }.joined(separator: ", ")
        lines.append("nftables: \(plan.operationCount) operation\(plan.operationCount == 1 ? "" : "s") in one transaction (\(counts))")
        lines += connectionLines(plan.connections)
        if nft {
            lines.append("")
            lines.append((plan.transaction.description + plan.bridgeTransaction.description).trimmingTrailingNewlines())
        }
        return lines.joined(separator: "\n")
    }

    /// How many connections are listed by name in text output; the count is always complete.
    static let listedCuts = 5

    /// `N live connections would be cut`, with the first few, or why it is not known.
    static func connectionLines(_ census: Revocation.Census?) -> [String] {
        switch census {
        case nil:
            return []
        case .unavailable(let reason)?:
            return ["Connections: unknown how many live connections would be cut (\(reason))"]
        case .wouldCut(let cuts, let tracked)?:
            var lines = ["Connections: \(cuts.count) live connection\(cuts.count == 1 ? "" : "s") would be cut (of \(tracked) tracked)"]
            lines += cuts.prefix(listedCuts).map { "  x \($0)" }
            if cuts.count > listedCuts { lines.append("  … and \(cuts.count - listedCuts) more") }
            return lines
        }
    }

    /// `{"would_cut": N, "tracked": M, "cuts": [...]}` or `{"unavailable": reason}`.
    static func connectionsJSON(_ census: Revocation.Census) -> JSONValue {
        switch census {
        case .unavailable(let reason):
            return .object([("unavailable", .string(reason))])
        case .wouldCut(let cuts, let tracked):
            return .object([("would_cut", .int(cuts.count)), ("tracked", .int(tracked)), ("cuts", .array(cuts.map(cutJSON)))])
        }
    }

    static func cutJSON(_ cut: ConnectionCut) -> JSONValue {
        let t = cut.entry.effective
        return .object([
            ("protocol", .string(t.protocolName)),
            ("source", .string(t.source.description)),
            ("destination", .string(t.destination.description)),
            ("destination_port", t.destinationPort.map { .int(Int($0)) } ?? .null),
            ("reason", .string(cut.reason)),
        ])
    }

    static func json(_ plan: Plan, nft: Bool, revoked: Revocation.Report? = nil) -> String {
        func change(_ c: Plan.FlowChange) -> JSONValue {
            .object([
                ("from", .string(c.grant.from.description)),
                ("to", .string(c.grant.to.description)),
                ("port", .string(c.grant.port.description)),
                ("flow", .string(c.grant.reference)),
                ("from_containers", c.fromContainers.map { .int($0) } ?? .null),
                ("to_containers", c.toContainers.map { .int($0) } ?? .null),
            ])
        }
        var baseline: [(String, JSONValue)]
        switch plan.baseline {
        case .kernel(let g): baseline = [("kind", .string("kernel")), ("generation", .int(Int(g))), ("table_exists", .bool(plan.live != nil))]
        case .empty(let reason): baseline = [("kind", .string("empty")), ("reason", .string(reason))]
        }
        var fields: [(String, JSONValue)] = [
            ("baseline", .object(baseline)),
            ("changes", .bool(plan.hasChanges)),
            ("opened", .array(plan.opened.map(change))),
            ("closed", .array(plan.closed.map(change))),
            ("membership", .array(plan.membership.map { m in
                .object([("service", .string(m.service.description)),
                         ("added", .array(m.added.map { .string($0.description) })),
                         ("removed", .array(m.removed.map { .string($0.description) })),
                         ("containers", .array(m.containers.map { .string($0) }))])
            })),
            ("foreign_rules", .array(plan.foreignRules.map { .string("\($0.chain): \($0)") })),
            ("table", tableJSON(plan)),
            ("bridge_table", tableJSON(plan.bridgeTableChange, desired: plan.bridgeDesired)),
            ("operations", .object([("total", .int(plan.operationCount))] + plan.operationCounts.map { ($0.0, .int($0.1)) })),
        ]
        if let census = plan.connections { fields.append(("connections", connectionsJSON(census))) }
        if let revoked {
            fields.append(("revoked", .object([
                ("cut", .int(revoked.cut.count)),
                ("already_gone", .int(revoked.alreadyGone)),
                ("failed", .int(revoked.failures.count)),
                ("problem", revoked.problem.map { .string($0) } ?? .null),
                ("cuts", .array(revoked.cut.map(cutJSON))),
            ])))
        }
        if nft { fields.append(("nft", .string(plan.transaction.description + plan.bridgeTransaction.description))) }
        return JSONValue.object(fields).render()
    }
}

extension PlanOutput {
    /// `{"change": "none"|"create"|"replace"|"flags", "live_flags": …, "flags": …}`.
    static func tableJSON(_ plan: Plan) -> JSONValue { tableJSON(plan.tableChange, desired: plan.desired) }

    static func tableJSON(_ change: Plan.TableChange?, desired: Table) -> JSONValue {
        func flags(_ f: TableFlags) -> JSONValue { .array(Plan.flagNames(f) == "none" ? [] : Plan.flagNames(f).split(separator: ",").map { .string(String($0)) }) }
        switch change {
        case nil: return .object([("change", .string("none")), ("flags", flags(desired.flags))])
        case .create?: return .object([("change", .string("create")), ("flags", flags(desired.flags))])
        case .replace(let was, let now)?: return .object([("change", .string("replace")), ("live_flags", flags(was)), ("flags", flags(now))])
        case .flags(let was, let now)?: return .object([("change", .string("flags")), ("live_flags", flags(was)), ("flags", flags(now))])
        }
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = self
        while s.hasSuffix("\n") { s.removeLast() }
        return s
    }
}
