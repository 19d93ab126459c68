import BulkheadTestSupport
import Foundation
import Testing

/// Runs the real `nft` (1.0.6) inside a throwaway network namespace, so rendering can be checked
/// against what nft itself prints. Never touches the host's ruleset.
enum Oracle {
    static var isRoot: Bool { TestSystem.isRoot }
    static var inCI: Bool { TestSystem.inCI }

    /// Oracle tests run as root; in CI they also run when not root, so they fail instead of
    /// silently skipping.
    static var enabled: Bool { isRoot || inCI }

    typealias Failure = TestSystem.Failure

    /// Creates `bh-rs-test-<random>`, runs `body` with its name, and deletes it afterwards even
    /// when `body` throws.
    static func withNamespace<T>(_ body: (String) throws -> T) throws -> T {
        try TestSystem.withNamespace(prefix: "bh-rs-test", body)
    }

    /// `nft -f -` of `script` inside `ns`.
    static func load(_ script: String, in ns: String) throws {
        do {
            try TestSystem.nft(["-f", "-"], in: ns, stdin: script)
        } catch {
            throw Failure("\(error)\nscript:\n\(script)")
        }
    }

    /// `nft list table FAMILY NAME` inside `ns`.
    static func list(_ table: String, in ns: String) throws -> String {
        try TestSystem.nft(["list", "table"] + table.split(separator: " ").map(String.init), in: ns)
    }
}
