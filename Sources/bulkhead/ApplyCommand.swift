import ArgumentParser
import BulkheadEngine
import BulkheadEscaping
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
        `bulkhead uninstall` removes them. When another program commits between the read and the
        write, the kernel refuses the batch and apply reads again (up to \(maxAttempts) attempts).
        After the kernel acknowledged the commit, the established connections the policies now deny
        are cut (deleted from connection tracking), so a deny takes effect at once; "Cut N
        connections" says how many. If connection tracking cannot be read or changed, the rules stay
        committed and a warning on standard error says what to do (the exit code stays 0).

        Exit codes: 0 applied (or nothing to do); 1 error, nothing changed (also: no CAP_NET_ADMIN,
        or the ruleset kept changing); 64 usage; 66 unreadable input.
        """
    )

    /// Reads and writes before giving up when every commit is refused as stale.
    static let maxAttempts = 4

    @OptionGroup var source: SourceOptions

    @Option(help: "Output format: text or json.")
    var format: PlanCommand.Format = .text

    @Flag(help: "Also print the nft script of the transaction.")
    var nft = false

    /// "Cut N connections …", with the first few.
    static func revocationText(_ report: Revocation.Report) -> String {
        var lines = ["Cut \(report.cut.count) connection\(report.cut.count == 1 ? "" : "s") the policies now deny (of \(report.tracked) tracked)."]
        lines += report.cut.prefix(PlanOutput.listedCuts).map { "  x \($0)" }
        if report.cut.count > PlanOutput.listedCuts { lines.append("  … and \(report.cut.count - PlanOutput.listedCuts) more") }
        return lines.joined(separator: "\n")
    }

    func run() throws {
        do {
            let policies = try Inputs.policies(source)
            let inventory = try Inputs.inventory(source)
            let backend: NetlinkNetfilter
            switch Inputs.kernel(source) {
            case .success(let b): backend = b
            case .failure(let error): throw Inputs.kernelFailure(error)
            }
            for line in try BridgeNetfilter.ensureEnabled(namespace: source.netns) {
                Inputs.note(line)
            }
            let planner = Planner()
            let race = TestHooks.RaceCommits(namespace: source.netns)
            // Someone may commit between our read and our write; the kernel then refuses the
            // batch (generation check, RulesetError.staleGeneration) and we read again.
            var attempt = 1
            while true {
                let plan = try planner.plan(policies: policies, inventory: inventory, backend: backend)
                try race?.commitIfArmed(attempt: attempt)
                let started = DispatchTime.now().uptimeNanoseconds
                let generation: UInt32
                do {
                    generation = try planner.apply(plan, to: backend)
                } catch let error as RulesetError where error.isStaleGeneration {
                    guard attempt < Self.maxAttempts else {
                        Inputs.printError("\(error) (gave up after \(attempt) attempts: another program keeps changing the ruleset); nothing was changed")
                        throw ExitCode(ExitStatus.failure)
                    }
                    Inputs.note("note: the ruleset changed while it was read (attempt \(attempt) of \(Self.maxAttempts)); reading it again")
                    attempt += 1
                    continue
                }
                let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                // Only after the kernel's ack: cut earlier, a connection would re-open under the old rules.
                let revoked = Inputs.revokeConnections(source, evaluator: plan.evaluator)
                if format == .json {
                    print(PlanOutput.json(plan, nft: nft, revoked: revoked))
                } else {
                    print(Escape.terminalLines(PlanOutput.text(plan, nft: nft)))
                    if plan.hasChanges {
                        print("Applied \(plan.operationCount) operations in \(String(format: "%.1f", ms)) ms (ruleset generation \(generation)); table ownership: \(backend.ownership).")
                    }
                    if plan.hasChanges || !revoked.cut.isEmpty {
                        print(Escape.terminalLines(Self.revocationText(revoked)))
                    }
                }
                if let problem = revoked.problem { Inputs.printError("warning: \(problem)") }
                return
            }
        } catch let r as Reported {
            throw ExitCode(r.status)
        } catch let e as ExitCode {
            throw e
        } catch let e as RulesetError {
            throw Inputs.kernelFailure(e)
        } catch let e as NetfilterError {
            throw Inputs.kernelFailure(e)
        } catch {
            throw Inputs.kernelFailure(error)
        }
    }
}
