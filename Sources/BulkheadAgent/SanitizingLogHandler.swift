import BulkheadEscaping
import Logging

/// Wraps a log handler so that no message or metadata value can break out of its log line:
/// every string (policy names, Docker labels and errors, file paths) goes through
/// `Escape.terminal` before the wrapped handler prints it. swift-log's `StreamLogHandler` prints
/// metadata values raw, so a container label holding "\r\n…" would otherwise forge a log line,
/// and an ESC sequence would drive the operator's terminal.
public struct SanitizingLogHandler: LogHandler {
    public var wrapped: any LogHandler

    public init(wrapping handler: any LogHandler) { self.wrapped = handler }

    public var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { wrapped.metadataProvider }
        set { wrapped.metadataProvider = newValue }
    }

    public var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = Self.sanitize(newValue) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: Escape.terminal(key)] = newValue.map(Self.sanitize) }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: Escape.terminal(event.message.description))
        event.metadata = event.metadata.map(Self.sanitize)
        wrapped.log(event: event)
    }

    static func sanitize(_ metadata: Logger.Metadata) -> Logger.Metadata {
        var out: Logger.Metadata = [:]
        for (key, value) in metadata { out[Escape.terminal(key)] = sanitize(value) }
        return out
    }

    static func sanitize(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let s): return .string(Escape.terminal(s))
        case .stringConvertible(let c): return .string(Escape.terminal(c.description))
        case .array(let items): return .array(items.map(sanitize))
        case .dictionary(let d): return .dictionary(sanitize(d))
        }
    }
}
