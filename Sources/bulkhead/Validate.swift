import ArgumentParser
import BulkheadEngine
import BulkheadPolicy
import BulkheadYAML

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check policy files: syntax, schema, references and lint. Needs no root and no Docker.",
        discussion: """
        PATH is a policy file or a directory searched recursively for *.yaml and *.yml (default: policies).
        With --inventory, also checks the policies against a snapshot of containers and networks.

        Exit codes: 0 no errors (warnings allowed unless --strict); 1 errors, or warnings with --strict;
        64 usage error; 66 a path cannot be read.
        """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json, sarif, github
    }

    @Option(help: "An inventory snapshot (YAML or JSON) to check the policies against.")
    var inventory: String?

    @Option(help: "Output format: text, json, sarif (2.1.0, for code scanning) or github (workflow annotations).")
    var format: Format = .text

    @Flag(help: "Treat warnings as errors for the exit code.")
    var strict = false

    @Argument(help: "Policy files or directories.")
    var paths: [String] = []

    func run() throws {
        var report = Validation.run(paths: paths.isEmpty ? ["policies"] : paths, inventoryPath: inventory)
        // Everything apply checks before the kernel sees it, so what validates also applies.
        if report.errorCount == 0 {
            report.diagnostics = Diagnostic.sorted(report.diagnostics + Preflight.check(report.policies, inventory: report.inventory))
        }
        let output: String
        switch format {
        case .text: output = DiagnosticOutput.text(report)
        case .json: output = DiagnosticOutput.json(report)
        case .sarif: output = DiagnosticOutput.sarif(report)
        case .github: output = DiagnosticOutput.github(report)
        }
        if !output.isEmpty { print(output) }
        if report.unreadablePath { throw ExitCode(ExitStatus.noInput) }
        if report.errorCount > 0 || (strict && report.warningCount > 0) { throw ExitCode(ExitStatus.failure) }
    }
}
