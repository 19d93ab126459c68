import ArgumentParser

@main
struct Bulkhead: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bulkhead",
        abstract: "Container network segmentation: allow exactly the declared flows between containers.",
        discussion: """
        Exit codes: 0 success; 1 errors found (validate) or the command failed; 2 changes to make
        (plan --detailed-exitcode); 64 usage error; 66 an input path cannot be read.
        """,
        version: BulkheadVersion.current,
        subcommands: [Validate.self, PlanCommand.self, ApplyCommand.self, ExplainCommand.self, VerifyCommand.self, AgentCommand.self, InventoryCommand.self, UninstallCommand.self, Schema.self]
    )
}

enum BulkheadVersion {
    static let current = "0.1.0"
}

/// Exit codes shared by every subcommand (sysexits.h where one fits).
enum ExitStatus {
    static let ok: Int32 = 0
    static let failure: Int32 = 1
    static let changes: Int32 = 2
    static let usage: Int32 = 64
    static let noInput: Int32 = 66
}
