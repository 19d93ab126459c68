import BulkheadAgent
import BulkheadEscaping
import BulkheadTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The same hostile strings through every exit of the agent and every escaping owner: nothing
/// breaks out of its field. (`validate`'s four formats are run end to end in
/// `BulkheadCLITests/HostileOutputTests.swift` with the same table.)
@Suite struct HostileOutput {
    /// A metric label value (a flow's `file:line`, an identity): one sample line, and the value
    /// reads back as its visible escape.
    @Test(arguments: HostileStrings.all) func prometheusLabelValue(_ hostile: String) throws {
        let m = MetricsRegistry()
        m.describe("bulkhead_flow_packets_total", type: "counter", "Packets per flow.")
        m.replaceAll("bulkhead_flow_packets_total", [(["flow": hostile], 3)])
        let text = m.render()
        #expect(!HostileStrings.hasUnsafeScalar(text, allowing: ["\n"]))
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.count == 4, "\(lines)")  // HELP, TYPE, the sample, and the final newline
        let sample = try #require(lines.first { !$0.hasPrefix("#") && !$0.isEmpty })
        #expect(sample.hasPrefix("bulkhead_flow_packets_total{flow=\""))
        #expect(sample.hasSuffix("\"} 3.0"), "\(sample)")
        // Undo the exposition format's escaping (\\, \", \n): what is left is our visible escape.
        let quoted = sample.dropFirst("bulkhead_flow_packets_total{flow=\"".count).dropLast(sample.hasSuffix("3.0") ? 6 : 4)
        var value = "", escaped = false
        for c in quoted.unicodeScalars {
            if escaped {
                value.unicodeScalars.append(c == "n" ? "\n" : c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                #expect(c != "\"", "an unescaped quote ends the label value early")
                value.unicodeScalars.append(c)
            }
        }
        #expect(value == Escape.prometheusLabelValue(hostile))
    }

    /// Log lines: the message and every metadata value, nested or not, reach the handler escaped.
    @Test(arguments: HostileStrings.all) func logLine(_ hostile: String) {
        let captured = CapturingLogHandler.Store()
        let logger = Logger(label: "test") { _ in SanitizingLogHandler(wrapping: CapturingLogHandler(store: captured)) }
        logger.error("invalid policy \(hostile)", metadata: [
            "diagnostic": "\(hostile)",
            "list": .array([.string(hostile)]),
            "nested": .dictionary(["k": .stringConvertible(hostile)]),
            hostile: "key",
        ])
        let events = captured.events
        #expect(events.count == 1)
        for line in events {
            #expect(!HostileStrings.hasUnsafeScalar(line), "\(line.debugDescription)")
        }
        #expect(events.first?.contains(Escape.terminal(hostile)) == true)
    }

    /// Each escaping owner on its own: terminal and log text is one line without controls;
    /// workflow-command data and properties cannot end the command or start another; JSON
    /// round-trips exactly.
    @Test(arguments: HostileStrings.all) func escapingOwners(_ hostile: String) throws {
        let terminal = Escape.terminal(hostile)
        #expect(!HostileStrings.hasUnsafeScalar(terminal))
        #expect(!HostileStrings.hasUnsafeScalar(Escape.terminalLines(hostile), allowing: ["\n"]))

        let data = Escape.githubData(hostile)
        #expect(!HostileStrings.hasUnsafeScalar(data))
        let property = Escape.githubProperty(hostile)
        #expect(!HostileStrings.hasUnsafeScalar(property))
        #expect(!property.contains(":") && !property.contains(","))
        // The runner's decoding (actions/toolkit) gives the text back for CR, LF and %.
        let decoded = data.replacingOccurrences(of: "%0D", with: "\r").replacingOccurrences(of: "%0A", with: "\n").replacingOccurrences(of: "%25", with: "%")
        if !hostile.unicodeScalars.contains(where: { $0 != "\r" && $0 != "\n" && Escape.isUnsafe($0) }) {
            #expect(decoded == hostile)
        }

        let json = Escape.jsonString(hostile)
        #expect(!HostileStrings.hasUnsafeScalar(json))
        let parsed = try JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed]) as? String
        #expect(parsed == hostile)
    }
}

/// Formats events the way `StreamLogHandler` does (message, then `key=value` metadata) into memory.
struct CapturingLogHandler: LogHandler {
    final class Store: Sendable {
        private let lines = Mutex<[String]>([])
        func append(_ line: String) { lines.withLock { $0.append(line) } }
        var events: [String] { lines.withLock { $0 } }
    }

    let store: Store
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let meta = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        store.append("\(event.level) \(event.message) \(meta)")
    }
}
