import BulkheadEscaping
import CoreMetrics
import Prometheus
import Synchronization

/// The agent's metrics: recorded through swift-metrics' API (`FloatingPointCounter`, `Meter`,
/// `Recorder`) with swift-prometheus as the backend, and served from this registry's own
/// `PrometheusCollectorRegistry` in the text exposition format.
///
/// The registry is per agent, not the process-wide `MetricsSystem`: tests run many agents in one
/// process, and a library must not bootstrap the global system for its host.
///
/// Label values come from policies (`file:line`, identities) and are hostile input: they pass
/// through `Escape.prometheusLabelValue` before swift-prometheus quotes them, so no value can
/// end its line or drive a terminal reading the scrape.
public final class MetricsRegistry: Sendable {
    /// The exposition source: `prometheus.emitToString()` is what `/metrics` serves.
    public let prometheus = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory

    private struct Key: Hashable {
        var name: String
        var labels: [String: String]

        var dimensions: [(String, String)] {
            labels.sorted { $0.key < $1.key }.map { ($0.key, Escape.prometheusLabelValue($0.value)) }
        }
    }

    private enum Kind: String { case counter, gauge, histogram }

    private struct State {
        var help: [String: (kind: Kind, text: String)] = [:]
        var counters: [Key: (metric: CoreMetrics.FloatingPointCounter, backend: Prometheus.Counter)] = [:]
        var meters: [Key: (metric: CoreMetrics.Meter, backend: Prometheus.Gauge)] = [:]
        var histograms: [Key: CoreMetrics.Recorder] = [:]
        /// The value of each counter and gauge series, for `value(_:labels:)` (swift-prometheus
        /// keeps its values write-only).
        var values: [Key: Double] = [:]
    }

    private let state = Mutex(State())

    public init() {
        factory = PrometheusMetricsFactory(registry: prometheus)
    }

    /// Declares a metric's type (`counter`, `gauge` or `histogram`) and help text, once, before use.
    public func describe(_ name: String, type: String, _ help: String) {
        guard let kind = Kind(rawValue: type) else { preconditionFailure("unknown metric type \(type)") }
        state.withLock { $0.help[name] = (kind, help) }
    }

    public func increment(_ name: String, by value: Double = 1, labels: [String: String] = [:]) {
        state.withLock { s in
            let key = Key(name: name, labels: labels)
            switch s.help[name]?.kind ?? .counter {
            case .gauge:
                meter(key, &s).metric.increment(by: value)
            default:
                counter(key, &s).metric.increment(by: value)
            }
            s.values[key, default: 0] += value
        }
    }

    /// Sets a gauge. On a counter it only makes the series exist (or raises it to `value`): a
    /// Prometheus counter never goes down.
    public func set(_ name: String, _ value: Double, labels: [String: String] = [:]) {
        state.withLock { s in
            let key = Key(name: name, labels: labels)
            if s.help[name]?.kind == .counter {
                let current = s.values[key] ?? 0
                counter(key, &s).metric.increment(by: max(0, value - current))
                s.values[key] = max(current, value)
            } else {
                meter(key, &s).metric.set(value)
                s.values[key] = value
            }
        }
    }

    /// Replaces every series of a counter with values read wholesale (the kernel's rule counters):
    /// each series grows by the difference; one that went down (its rule was replaced) starts
    /// again from zero; series that are gone are removed.
    public func replaceAll(_ name: String, _ series: [([String: String], Double)]) {
        state.withLock { s in
            let fresh = Dictionary(series.map { (Key(name: name, labels: $0.0), $0.1) }, uniquingKeysWith: +)
            for key in s.values.keys where key.name == name && fresh[key] == nil { remove(key, &s) }
            for (key, value) in fresh {
                if let current = s.values[key], value < current { remove(key, &s) }
                let current = s.values[key] ?? 0
                if s.help[name]?.kind == .gauge {
                    meter(key, &s).metric.set(value)
                } else {
                    counter(key, &s).metric.increment(by: value - current)
                }
                s.values[key] = value
            }
        }
    }

    public func observe(_ name: String, _ value: Double, buckets: [Double]) {
        state.withLock { s in
            let key = Key(name: name, labels: [:])
            if s.histograms[key] == nil {
                let backend = prometheus.makeValueHistogram(name: name, labels: key.dimensions, buckets: buckets,
                                                            help: s.help[name]?.text ?? "")
                s.histograms[key] = CoreMetrics.Recorder(label: name, dimensions: key.dimensions, aggregate: true, handler: backend)
            }
            s.histograms[key]!.record(value)
        }
    }

    public func value(_ name: String, labels: [String: String] = [:]) -> Double? {
        state.withLock { $0.values[Key(name: name, labels: labels)] }
    }

    /// The text exposition (version 0.0.4).
    public func render() -> String {
        prometheus.emitToString()
    }

    private func counter(_ key: Key, _ s: inout State) -> (metric: CoreMetrics.FloatingPointCounter, backend: Prometheus.Counter) {
        if let c = s.counters[key] { return c }
        let backend = prometheus.makeCounter(name: key.name, labels: key.dimensions, help: s.help[key.name]?.text ?? "")
        let c = (CoreMetrics.FloatingPointCounter(label: key.name, dimensions: key.dimensions, handler: backend, factory: factory), backend)
        s.counters[key] = c
        s.values[key] = s.values[key] ?? 0
        return c
    }

    private func meter(_ key: Key, _ s: inout State) -> (metric: CoreMetrics.Meter, backend: Prometheus.Gauge) {
        if let m = s.meters[key] { return m }
        let backend = prometheus.makeGauge(name: key.name, labels: key.dimensions, help: s.help[key.name]?.text ?? "")
        let m = (CoreMetrics.Meter(label: key.name, dimensions: key.dimensions, handler: backend, factory: factory), backend)
        s.meters[key] = m
        s.values[key] = s.values[key] ?? 0
        return m
    }

    private func remove(_ key: Key, _ s: inout State) {
        if let c = s.counters.removeValue(forKey: key) { prometheus.unregisterCounter(c.backend) }
        if let m = s.meters.removeValue(forKey: key) { prometheus.unregisterGauge(m.backend) }
        s.values[key] = nil
    }
}
