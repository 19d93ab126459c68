import BulkheadInventory
import BulkheadYAML

/// Everything `bulkhead validate` checks, as one call: load, schema, references, lint and,
/// with an inventory, the checks that need to know the containers.
public enum Validation {
    public struct Report: Sendable {
        public var diagnostics: [Diagnostic]
        public var files: [String]
        /// A path given (policy or inventory) could not be read at all.
        public var unreadablePath: Bool
        public var policies: PolicySet
        public var inventory: Inventory?

        public var errorCount: Int { diagnostics.filter { $0.severity == .error }.count }
        public var warningCount: Int { diagnostics.filter { $0.severity == .warning }.count }
    }

    public static func run(paths: [String], inventoryPath: String?) -> Report {
        let loaded = PolicyLoader.load(paths: paths)
        var diagnostics = loaded.diagnostics
        var unreadable = loaded.unreadablePath
        var inventory: Inventory?
        if let inventoryPath {
            let (inv, invDiagnostics) = InventoryLoader.load(path: inventoryPath)
            diagnostics += invDiagnostics
            if invDiagnostics.contains(where: { $0.code == .unreadable }) { unreadable = true }
            inventory = inv
            if let inv, !loaded.hasErrors {
                diagnostics += InventoryLint.run(loaded.policies, inv)
            }
        }
        return Report(diagnostics: Diagnostic.sorted(diagnostics), files: loaded.files,
                      unreadablePath: unreadable, policies: loaded.policies, inventory: inventory)
    }
}
