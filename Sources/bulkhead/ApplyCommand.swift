import ArgumentParser
import BulkheadEngine
import BulkheadNetfilter
import BulkheadRuleset
import Foundation

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Apply the policies to the kernel in one atomic transaction and print what changed.",
        discussion: """
        Needs CAP_NET_ADMIN. If anything is wrong (invalid policies, unreadable inventory, a kernel
        error halfway through the batch) nothing changes. The rules stay when bulkhead exits; only
        `bulkhead uninstall` removes them.

        Exit codes: 0 applied (or nothing to do); 1 error, nothing changed; 64 usage; 66 unreadable input.
        """
    )

    @OptionGroup var source: SourceOptions

    @Option(help: "Output format: text or json.")
    var format: PlanCommand.Format = .text

    @Flag(help: "Also print the nft script of the transaction.")
    var nft = false

    func run() throws {
        do {
            let policies = try Inputs.policies(source)
            let inventory = try Inputs.inventory(source)
            let backend: NetlinkNetfilter
            switch Inputs.kernel(source) {
            case .success(let b): backend = b
            case .failure(let error):
                Inputs.printError("\(error)")
                throw ExitCode(ExitStatus.failure)
            }
            for line in try BridgeNetfilter.ensureEnabled(namespace: source.netns) {
                Inputs.note(line)
            }
            let planner = Planner()
            // Someone may commit between our read and our write; the kernel then refuses the
            // batch (generation check) and we read again, a few times at most.
            var attempt = 0
            while true {
                let plan = try planner.plan(policies: policies, inventory: inventory, backend: backend)
                let started = DispatchTime.now().uptimeNanoseconds
                do {
                    let generation = try planner.apply(plan, to: backend)
                    let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                    if format == .json {
                        print(PlanOutput.json(plan, nft: nft))
                    } else {
                        print(PlanOutput.text(plan, nft: nft))
                        if plan.hasChanges {
                            print("Applied \(plan.operationCount) operations in \(String(format: "%.1f", ms)) ms (ruleset generation \(generation)); table ownership: \(backend.ownership).")
                        }
                    }
                    return
                } catch NetfilterError.generationChanged(_) where attempt < 3 {
                    attempt += 1
                }
            }
        } catch let r as Reported {
            throw ExitCode(r.status)
        } catch let e as NetfilterError {
            Inputs.printError("\(e)")
            throw ExitCode(ExitStatus.failure)
        }
    }
}
