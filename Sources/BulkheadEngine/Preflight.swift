import BulkheadCompiler
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
import BulkheadYAML

/// The checks `apply` makes before the kernel sees anything, run by `validate`: so a policy set
/// that validates also applies. It compiles the policies (against the inventory when there is
/// one, else against no containers: every single-service identity) and validates the whole
/// transaction the way the kernel and nft would (names, comments, log prefixes, every lookup and
/// jump), reporting what would fail as `not-programmable` errors.
public enum Preflight {
    public static func check(_ policies: PolicySet, inventory: Inventory?, options: Compiler.Options = Compiler.Options()) -> [Diagnostic] {
        let compiled = Compiler.compile(policies, inventory ?? Inventory(), options: options)
        var out: [Diagnostic] = []
        let fallback = policies.segments.first?.location ?? FilePosition(file: "policies", mark: .start)
        for f in compiled.failures {
            let at = f.identity.services.first.flatMap(policies.service)?.location ?? fallback
            out.append(Diagnostic(.error, .notProgrammable, f.description, file: at.file, at: at.mark))
        }
        do {
            _ = try Diff.between(desired: compiled.table, live: nil, table: Planner.tableID)
        } catch {
            out.append(Diagnostic(.error, .notProgrammable, "the kernel would refuse the compiled ruleset: \(error)",
                                  file: fallback.file, at: fallback.mark))
        }
        return out
    }
}
