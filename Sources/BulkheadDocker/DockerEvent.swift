import BulkheadSource
import Foundation

/// One change Docker reports that can alter who has which address: the container and network
/// events that `DockerClient.events(since:)` follows.
public struct DockerEvent: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Docker's event `Type`.
    public enum Kind: String, Sendable, Hashable, Codable {
        case container, network
    }

    /// Docker's event `Action`, limited to the ones followed: container `create`, `start`, `die`,
    /// `destroy` and network `connect`, `disconnect`.
    public enum Action: String, Sendable, Hashable, Codable {
        case create, start, die, destroy, connect, disconnect

        /// Which kind of object reports this action.
        public var kind: Kind {
            switch self {
            case .create, .start, .die, .destroy: return .container
            case .connect, .disconnect: return .network
            }
        }
    }

    public var type: Kind
    public var action: Action
    /// The container concerned (for network events, the one connected or disconnected).
    public var containerID: String
    /// The container's name without Docker's leading `/`. Network events do not carry it; the event
    /// stream fills it in from the container's earlier events when it saw them, else it is nil.
    public var containerName: String?
    /// The network, for `connect` and `disconnect`.
    public var networkID: String?
    public var networkName: String?
    /// When Docker says the event happened, in nanoseconds since 1970 (`timeNano`).
    public var timeNano: Int64

    public init(action: Action, containerID: String, containerName: String? = nil, networkID: String? = nil,
                networkName: String? = nil, timeNano: Int64) {
        self.type = action.kind
        self.action = action
        self.containerID = containerID
        self.containerName = containerName
        self.networkID = networkID
        self.networkName = networkName
        self.timeNano = timeNano
    }

    public var time: Date { Date(timeIntervalSince1970: Double(timeNano) / 1e9) }

    public var description: String {
        let who = containerName ?? String(containerID.prefix(12))
        switch type {
        case .container: return "container \(action.rawValue) \(who)"
        case .network: return "network \(action.rawValue) \(who) \(action == .connect ? "to" : "from") \(networkName ?? networkID.map { String($0.prefix(12)) } ?? "?")"
        }
    }
}

extension DockerEvent {
    /// The neutral form: `create` adds, `start` changes, `die` and `destroy` remove (an exited
    /// container holds no address), `connect`/`disconnect` name the network.
    public var sourceEvent: SourceEvent {
        let kind: SourceEvent.Kind
        switch action {
        case .create: kind = .added
        case .start: kind = .changed
        case .die, .destroy: kind = .removed
        case .connect: kind = .connected(network: networkName ?? networkID ?? "?")
        case .disconnect: kind = .disconnected(network: networkName ?? networkID ?? "?")
        }
        return SourceEvent(kind, containerID: containerID, containerName: containerName)
    }
}

/// Splits the `/events` body into events: newline-delimited JSON (dockerd writes each event with
/// Go's `json.Encoder`, one per chunk, but a proxy or a slow reader may merge or split chunks).
///
/// It remembers the names seen in container events so that network events, which name only the
/// container id, can carry the name too.
struct DockerEventDecoder {
    private var pending: [UInt8] = []
    private var names: [String: String] = [:]
    /// Refuses a line longer than this: an event is well under 4 KiB even with many labels, so a
    /// longer run without a newline is not the events API.
    static let maximumLine = 1 << 20

    init() {}

    /// Appends `bytes` and returns the events completed by them, in order.
    mutating func feed<Bytes: Sequence>(_ bytes: Bytes) throws(DockerClientError) -> [DockerEvent] where Bytes.Element == UInt8 {
        pending.append(contentsOf: bytes)
        var events: [DockerEvent] = []
        var start = 0
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = pending[start..<newline]
            start = newline + 1
            if let event = try decode(line) { events.append(event) }
        }
        pending.removeFirst(start)
        if pending.count > Self.maximumLine {
            throw .malformedResponse(request: "GET /events", detail: "more than \(Self.maximumLine) bytes without a newline")
        }
        return events
    }

    /// One JSON object; nil for blank lines and for events outside the followed set (the `event`
    /// filter also lets through network `create`/`destroy`).
    mutating func decode(_ line: ArraySlice<UInt8>) throws(DockerClientError) -> DockerEvent? {
        guard line.contains(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\r") }) else { return nil }
        let wire: WireEvent
        do {
            wire = try JSONDecoder().decode(WireEvent.self, from: Data(line))
        } catch {
            throw .malformedResponse(request: "GET /events", detail: "not an event: \(String(decoding: line.prefix(200), as: UTF8.self))")
        }
        guard let type = wire.type.flatMap(DockerEvent.Kind.init(rawValue:)),
              let action = wire.action.flatMap(DockerEvent.Action.init(rawValue:)), action.kind == type,
              let actorID = wire.actor?.id
        else { return nil }
        let attributes = wire.actor?.attributes ?? [:]
        // `time` is in seconds: past 2262 (Int64 nanoseconds) the product would trap, so it saturates.
        let seconds = wire.time ?? 0
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let nanos = wire.timeNano ?? (overflow ? (seconds < 0 ? .min : .max) : product)
        switch type {
        case .container:
            let name = attributes["name"].map { $0.hasPrefix("/") ? String($0.dropFirst()) : $0 }
            if action == .destroy {
                names[actorID] = nil
            } else if let name {
                names[actorID] = name
            }
            return DockerEvent(action: action, containerID: actorID, containerName: name ?? names[actorID], timeNano: nanos)
        case .network:
            guard let container = attributes["container"] else { return nil }
            return DockerEvent(action: action, containerID: container, containerName: names[container],
                               networkID: actorID, networkName: attributes["name"], timeNano: nanos)
        }
    }
}
