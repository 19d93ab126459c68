import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

enum LabSupport {
    /// Root tests run as root, and also in CI without root, where they must fail rather than skip.
    static let enabled = geteuid() == 0 || ProcessInfo.processInfo.environment["CI"] == "true"

    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// policies/inventory.json: 3 networks, 9 containers, v4 and v6, some on several networks.
    static func exampleInventory() throws -> Inventory {
        let path = repositoryRoot.appendingPathComponent("policies/inventory.json").path
        let (inventory, diagnostics) = InventoryLoader.load(path: path)
        return try #require(inventory, "cannot load \(path): \(diagnostics)")
    }

    /// Builds a lab, runs `body`, and destroys the lab even when `body` throws or an expectation fails.
    static func withLab<T>(_ inventory: Inventory, _ body: (Lab, ProbeRunner) throws -> T) throws -> T {
        let lab = try Lab(inventory: inventory)
        defer {
            let errors = lab.destroy()
            #expect(errors.isEmpty, "destroy failed: \(errors)")
        }
        let runner = ProbeRunner(lab: lab)
        defer { runner.stopServers() }
        return try body(lab, runner)
    }

    /// Namespaces currently listed by `ip netns list`.
    static func namespaces() throws -> [String] {
        try SystemCommandRunner().run(["ip", "netns", "list"], purpose: "listing namespaces")
            .split(separator: "\n").map { String($0.split(separator: " ")[0]) }
    }

    /// Every ordered pair of distinct containers sharing a network, with the destination's addresses there.
    static func sharedNetworkPairs(_ inventory: Inventory) -> [(from: String, to: String, network: String, addresses: [IPAddress])] {
        var pairs: [(String, String, String, [IPAddress])] = []
        let containers = inventory.containers.sorted { $0.name < $1.name }
        for a in containers {
            for b in containers where a.name != b.name {
                for network in a.networks.keys.sorted() {
                    guard let att = b.networks[network] else { continue }
                    pairs.append((a.name, b.name, network, [att.ipv4, att.ipv6].compactMap { $0 }))
                }
            }
        }
        return pairs
    }

    static func report(_ results: [ProbeResult], expecting expected: ProbeOutcome,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let wrong = results.filter { $0.outcome != expected }
        let list = wrong.prefix(20).map { "  \($0)" }.joined(separator: "\n")
        #expect(wrong.isEmpty, "\(wrong.count) of \(results.count) probes were not \(expected):\n\(list)", sourceLocation: sourceLocation)
    }
}

/// Records commands instead of running them, answering `sysctl -n` reads as a healthy host would.
final class RecordingRunner: CommandRunning, @unchecked Sendable {
    private let lock = NSLock()
    private var recorded: [[String]] = []
    var commands: [[String]] { lock.withLock { recorded } }

    func run(_ command: [String], purpose: String) throws -> String {
        lock.withLock { recorded.append(command) }
        if command.contains("sysctl"), command.contains("-n") {
            return String(repeating: "1\n", count: command.count - command.firstIndex(of: "-n")! - 1)
        }
        return ""
    }
}
