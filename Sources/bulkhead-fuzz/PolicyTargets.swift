import BulkheadCompiler
import BulkheadInventory
import BulkheadPolicy
import BulkheadRuleset
#if canImport(Glibc)
import Glibc
#endif

/// The example policies and inventory of the repository, which the policy and inventory targets
/// compile against (a fuzzed policy needs containers to select, a fuzzed inventory policies).
enum Examples {
    /// `policies/` next to `Sources/`, found from this file so that the fuzzer runs from any directory.
    static let directory: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Sources/bulkhead-fuzz/PolicyTargets.swift
        return parts.joined(separator: "/") + "/policies"
    }()

    static let policies: PolicySet = {
        let result = PolicyLoader.load(paths: [directory])
        guard !result.hasErrors, !result.policies.segments.isEmpty else {
            fail("the example policies in \(directory) do not load")
        }
        return result.policies
    }()

    static let inventory: Inventory = {
        guard let inventory = InventoryLoader.load(path: directory + "/inventory.json").0 else {
            fail("\(directory)/inventory.json does not load")
        }
        return inventory
    }()
}

/// Everything downstream of a clean load: lint, compile, diff against an empty kernel and apply
/// to the fake backend, which validates the way the kernel does.
enum Pipeline {
    static func run(_ policies: PolicySet, _ inventory: Inventory) {
        _ = InventoryLint.run(policies, inventory)
        let output = Compiler.compile(policies, inventory)
        _ = NFTText.table(output.table)
        guard let tx = try? Diff.between(desired: output.table, live: nil) else { return }
        _ = try? FakeNetfilter().apply(tx, expectedGeneration: nil)
    }
}

/// Policy files as `bulkhead validate` and the agent read them. A NUL byte separates files (up
/// to four), since segments in different files interact (duplicates, cross-segment flows).
enum PolicyFuzz {
    static func run(_ bytes: [UInt8]) {
        let files = bytes.split(separator: 0, maxSplits: 3, omittingEmptySubsequences: false)
        let sources = files.enumerated().map { ("policies/fuzz\($0.offset).yaml", Array($0.element)) }
        let result = PolicyLoader.load(sources: sources)
        guard !result.hasErrors else { return }
        Pipeline.run(result.policies, Examples.inventory)
    }
}

/// An inventory snapshot (`--inventory`, YAML or JSON), then the example policies against it.
enum InventoryFuzz {
    static func run(_ bytes: [UInt8]) {
        let (inventory, _) = InventoryLoader.load(bytes, file: "inventory.yaml")
        guard let inventory else { return }
        Pipeline.run(Examples.policies, inventory)
    }
}
