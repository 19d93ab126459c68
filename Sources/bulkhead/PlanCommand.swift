import ArgumentParser
import BulkheadEngine
import BulkheadEscaping
import BulkheadNetfilter
import BulkheadRuleset

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show which flows a change opens or closes, for which containers, and the nftables operations — without applying.",
        discussion: """
        Compares the policies and inventory against the table the kernel holds (inet bulkhead). Without
        the privilege to read the kernel (CAP_NET_ADMIN), compares against an empty ruleset and says so.
        Also reads connection tracking and says how many live connections `apply` would cut (the
        established connections the policies deny), listing a few; without the privilege, says so.

        Exit codes: 0 success; with --detailed-exitcode 0 no changes, 2 changes, 1 error; 64 usage; 66 unreadable input.
        """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable { case text, json }

    @OptionGroup var source: SourceOptions

    @Option(help: "Output format: text or json.")
    var format: Format = .text

    @Flag(help: "Also print the nft script of the transaction.")
    var nft = false

    @Flag(help: "Exit 0 when there is nothing to change, 2 when there is, 1 on error.")
    var detailedExitcode = false

    func run() throws {
        do {
            let policies = try Inputs.policies(source)
            let inventory = try Inputs.inventory(source)
            var plan: Plan
            switch Inputs.kernel(source) {
            case .success(let backend):
                plan = try Planner().plan(policies: policies, inventory: inventory, backend: backend)
                plan.connections = Inputs.connectionCensus(source, evaluator: plan.evaluator)
            case .failure(let error):
                plan = try Planner().plan(policies: policies, inventory: inventory, live: nil, bridgeLive: nil,
                                          baseline: .empty(reason: "cannot read the kernel: \(error)"))
                plan.connections = .unavailable("cannot read the kernel: \(error)")
            }
            print(format == .json ? PlanOutput.json(plan, nft: nft) : Escape.terminalLines(PlanOutput.text(plan, nft: nft)))
            if detailedExitcode && plan.hasChanges { throw ExitCode(ExitStatus.changes) }
        } catch let r as Reported {
            throw ExitCode(r.status)
        } catch let e as RulesetError {
            throw Inputs.kernelFailure(e)
        }
    }
}
