import ArgumentParser
import BulkheadPolicy

struct Schema: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the JSON Schema of the policy format (or of the inventory snapshot).",
        discussion: "Point an editor's YAML language server at it: see the README."
    )

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case policy, inventory
    }

    @Argument(help: "Which schema: policy (default) or inventory.")
    var kind: Kind = .policy

    func run() {
        print(kind == .policy ? JSONSchemas.policy : JSONSchemas.inventory)
    }
}
