import Synchronization

/// A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
/// exposition format (version 0.0.4). Bulkhead's metrics are few and fixed, so this is all the
/// client library it needs.
public final class MetricsRegistry: Sendable {
    private struct Series: Hashable {
        var name: String
        var labels: [String: String]

        var rendered: String {
            guard !labels.isEmpty else { return name }
            let pairs = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(Self.escape($0.value))\"" }
            return "\(name){\(pairs.joined(separator: ","))}"
        }

        static func escape(_ s: String) -> String {
            var out = ""
            for c in s {
                switch c {
                case "\\": out += "\\\\"
                case "\"": out += "\\\""
                case "\n": out += "\\n"
                default: out.append(c)
                }
            }
            return out
        }
    }

    private struct Histogram {
        var buckets: [Double]
        var counts: [UInt64]
        var sum: Double = 0
        var count: UInt64 = 0
    }

    private struct State {
        var help: [String: (type: String, text: String)] = [:]
        var values: [Series: Double] = [:]
        var histograms: [Series: Histogram] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Declares a metric's type and help text (once, before use).
    public func describe(_ name: String, type: String, _ help: String) {
        state.withLock { $0.help[name] = (type, help) }
    }

    public func increment(_ name: String, by value: Double = 1, labels: [String: String] = [:]) {
        state.withLock { $0.values[Series(name: name, labels: labels), default: 0] += value }
    }

    public func set(_ name: String, _ value: Double, labels: [String: String] = [:]) {
        state.withLock { $0.values[Series(name: name, labels: labels)] = value }
    }

    /// Replaces every series of `name` (for values read wholesale, like kernel counters).
    public func replaceAll(_ name: String, _ series: [([String: String], Double)]) {
        state.withLock { s in
            s.values = s.values.filter { $0.key.name != name }
            for (labels, value) in series { s.values[Series(name: name, labels: labels)] = value }
        }
    }

    public func observe(_ name: String, _ value: Double, buckets: [Double]) {
        state.withLock { s in
            let key = Series(name: name, labels: [:])
            var h = s.histograms[key] ?? Histogram(buckets: buckets, counts: Array(repeating: 0, count: buckets.count))
            for (i, b) in h.buckets.enumerated() where value <= b { h.counts[i] += 1 }
            h.sum += value
            h.count += 1
            s.histograms[key] = h
        }
    }

    public func value(_ name: String, labels: [String: String] = [:]) -> Double? {
        state.withLock { $0.values[Series(name: name, labels: labels)] }
    }

    /// The text exposition, metrics sorted by name, series by labels.
    public func render() -> String {
        state.withLock { s in
            var out = ""
            let names = Set(s.values.keys.map(\.name)).union(s.histograms.keys.map(\.name)).union(s.help.keys).sorted()
            for name in names {
                if let h = s.help[name] {
                    out += "# HELP \(name) \(h.text)\n# TYPE \(name) \(h.type)\n"
                }
                for (series, value) in s.values.filter({ $0.key.name == name }).sorted(by: { $0.key.rendered < $1.key.rendered }) {
                    out += "\(series.rendered) \(Self.format(value))\n"
                }
                if let h = s.histograms.first(where: { $0.key.name == name })?.value {
                    for (i, b) in h.buckets.enumerated() {
                        out += "\(name)_bucket{le=\"\(Self.format(b))\"} \(h.counts[i])\n"
                    }
                    out += "\(name)_bucket{le=\"+Inf\"} \(h.count)\n\(name)_sum \(Self.format(h.sum))\n\(name)_count \(h.count)\n"
                }
            }
            return out
        }
    }

    static func format(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}
