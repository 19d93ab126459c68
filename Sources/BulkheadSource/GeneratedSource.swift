import BulkheadInventory
import Synchronization

/// A `ContainerSource` that makes up a large host from a seed: `segments` segments of
/// `servicesPerSegment` services with `replicas` containers each, one IPv4 network per segment,
/// and policies (`policyFiles`) whose services match exactly those containers. `step()` makes one
/// random change (a replica added on a free address, or a container removed) and emits the event
/// the agent reads it by, so the agent can be driven at 10,000 containers without dockerd
/// (`bulkhead-bench agent-scale`).
///
/// Everything is a function of the shape and the seed: two sources built alike list the same
/// containers and emit the same events. It keeps the `ContainerSource` contract: the inventory is
/// updated before the event is delivered, `inspect(id:)` answers what `snapshot()` would list, and
/// replaying the events (reading each container an event names) onto the first snapshot gives the
/// current one (`GeneratedSourceTests`).
public final class GeneratedSource: ContainerSource, Sendable {
    public struct Shape: Sendable, Hashable {
        public var segments: Int
        public var servicesPerSegment: Int
        public var replicas: Int
        /// Source services per flow, and how many of them are services of other segments.
        public var sourcesPerFlow: Int
        public var crossSegmentSources: Int

        /// 1,000 services and 10,000 containers; each service is reached from ten services, three
        /// of them in other segments (issue 10's scale shape, IPv4 only).
        public static let issue10 = Shape(segments: 100, servicesPerSegment: 10, replicas: 10, sourcesPerFlow: 10, crossSegmentSources: 3)

        public init(segments: Int, servicesPerSegment: Int, replicas: Int, sourcesPerFlow: Int, crossSegmentSources: Int) {
            precondition(segments >= 1 && segments <= 256 * 100, "segments: 1 to 25,600 (one /24 each under 10.100.0.0/9)")
            precondition(servicesPerSegment >= 1 && replicas >= 1 && servicesPerSegment * replicas <= 200,
                         "at most 200 containers per segment: a /24 holds 252 and churn needs room")
            precondition(crossSegmentSources <= sourcesPerFlow && sourcesPerFlow - crossSegmentSources <= servicesPerSegment)
            precondition(crossSegmentSources == 0 || segments > 1)
            self.segments = segments
            self.servicesPerSegment = servicesPerSegment
            self.replicas = replicas
            self.sourcesPerFlow = sourcesPerFlow
            self.crossSegmentSources = crossSegmentSources
        }

        public var services: Int { segments * servicesPerSegment }
        public var containers: Int { services * replicas }
    }

    public let shape: Shape
    public let seed: UInt64

    private struct State {
        var rng: SplitMix64
        var networks: [Network]
        /// Containers by key (their id), and the keys in an array for O(1) random picks.
        var containers: [String: Container] = [:]
        var keys: [String] = []
        var position: [String: Int] = [:]
        /// Host numbers in use per segment's /24.
        var used: [Set<UInt32>]
        var added = 0
        var streams: [Int: AsyncThrowingStream<SourceEvent, Error>.Continuation] = [:]
        var nextStream = 0

        mutating func insert(_ c: Container) {
            let key = c.id!
            containers[key] = c
            position[key] = keys.count
            keys.append(key)
        }

        mutating func remove(_ key: String) -> Container? {
            guard let c = containers.removeValue(forKey: key), let i = position.removeValue(forKey: key) else { return nil }
            let last = keys.removeLast()
            if i < keys.count { keys[i] = last; position[last] = i }
            return c
        }
    }

    private let state: Mutex<State>
    /// Called at the start of every `snapshot()` (the benchmark marks the CPU time a resync starts at).
    private let onSnapshot: @Sendable () -> Void

    public init(shape: Shape = .issue10, seed: UInt64, onSnapshot: @escaping @Sendable () -> Void = {}) {
        self.shape = shape
        self.seed = seed
        self.onSnapshot = onSnapshot
        var s = State(rng: SplitMix64(seed: seed), networks: [], used: Array(repeating: [], count: shape.segments))
        for seg in 0..<shape.segments {
            let base = Self.subnetBase(seg)
            s.networks.append(Network(name: Self.network(seg), subnets: [IPNetwork(address: .v4(base), prefixLength: 24)], gateways: [.v4(base + 1)]))
            for svc in 0..<shape.servicesPerSegment {
                for r in 0..<shape.replicas {
                    let host = UInt32(2 + svc * shape.replicas + r)
                    s.used[seg].insert(host)
                    s.insert(Self.container(segment: seg, service: svc, name: "\(Self.segment(seg))-svc\(svc)-\(r)", host: host))
                }
            }
        }
        state = Mutex(s)
    }

    // MARK: Names and addresses

    public static func segment(_ seg: Int) -> String { "seg" + pad(seg, 3) }
    public static func network(_ seg: Int) -> String { "net" + pad(seg, 3) }

    /// 10.100.0.0/24 for segment 0, then one /24 each.
    static func subnetBase(_ seg: Int) -> UInt32 { (10 << 24) | UInt32(100 * 256 + seg) << 8 }

    static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    static func container(segment seg: Int, service svc: Int, name: String, host: UInt32) -> Container {
        Container(name: name, id: makeID(name), labels: ["app": segment(seg), "svc": "svc\(svc)"],
                  networks: [network(seg): Attachment(ipv4: .v4(subnetBase(seg) + host))])
    }

    /// A stable 64-hex-digit id derived from a name (FNV-1a, four rounds).
    public static func makeID(_ name: String) -> String {
        var out = ""
        var hash: UInt64 = 0xcbf29ce484222325
        for round in 0..<4 {
            for b in Array(name.utf8) + [UInt8(round)] { hash = (hash ^ UInt64(b)) &* 0x100000001b3 }
            let hex = String(hash, radix: 16)
            out += String(repeating: "0", count: 16 - hex.count) + hex
        }
        return out
    }

    // MARK: Policies

    /// One policy file per segment (file name, YAML). Service `svcK` of segment S is reached on
    /// tcp/(1000+K) from the `sourcesPerFlow - crossSegmentSources` next services of its own
    /// segment (itself included first, so replicas talk to each other) and from `svcK` of the
    /// `crossSegmentSources` following segments.
    public func policyFiles() -> [(name: String, yaml: String)] {
        let sh = shape
        return (0..<sh.segments).map { seg in
            var lines = ["segment: \(Self.segment(seg))", "networks: [\(Self.network(seg))]", "services:"]
            for svc in 0..<sh.servicesPerSegment {
                lines += ["  svc\(svc):", "    labels: {app: \(Self.segment(seg)), svc: svc\(svc)}"]
            }
            lines.append("flows:")
            for svc in 0..<sh.servicesPerSegment {
                let local = (0..<(sh.sourcesPerFlow - sh.crossSegmentSources)).map { "svc\((svc + $0) % sh.servicesPerSegment)" }
                let remote = (1..<(1 + sh.crossSegmentSources)).map { "\(Self.segment((seg + $0) % sh.segments))/svc\(svc)" }
                lines += ["  - from: [\((local + remote).joined(separator: ", "))]", "    to: svc\(svc)", "    ports: [tcp/\(1000 + svc)]"]
            }
            return (Self.segment(seg) + ".yaml", lines.joined(separator: "\n") + "\n")
        }
    }

    // MARK: ContainerSource

    public func snapshot() async throws -> Inventory {
        onSnapshot()
        return currentInventory
    }

    public func inspect(id: String) async throws -> Container? {
        state.withLock { $0.containers[id] }
    }

    public func events() -> AsyncThrowingStream<SourceEvent, Error> {
        let (stream, continuation) = AsyncThrowingStream<SourceEvent, Error>.makeStream()
        state.withLock { s in
            let id = s.nextStream
            s.nextStream += 1
            s.streams[id] = continuation
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.streams.removeValue(forKey: id) }
            }
        }
        return stream
    }

    public func outageDescription(_ error: (any Error)?) -> String {
        "the generated source failed (it never should)"
    }

    // MARK: Driving it

    /// The inventory as `snapshot()` lists it: containers sorted by name, then id.
    public var currentInventory: Inventory {
        state.withLock { s in
            return Inventory(networks: s.networks,
                             containers: s.containers.values.sorted { ($0.name, $0.id ?? "") < ($1.name, $1.id ?? "") })
        }
    }

    public var containerCount: Int { state.withLock { $0.containers.count } }
    /// Event streams currently open.
    public var openStreams: Int { state.withLock { $0.streams.count } }

    /// One change, drawn from the seed: with even odds (and the count kept within one replica per
    /// service of the start), a new replica of a random service on the lowest free address of its
    /// segment, or a random container removed. The inventory changes first, then the event goes to
    /// every open stream. Returns the event and the container it concerns.
    @discardableResult
    public func step() -> (event: SourceEvent, container: Container) {
        let sh = shape
        let (event, container, open) = state.withLock { s -> (SourceEvent, Container, [AsyncThrowingStream<SourceEvent, Error>.Continuation]) in
            let roll = s.rng.next()
            let low = sh.containers - sh.services, high = sh.containers + sh.services
            let add = s.containers.count <= low ? true : s.containers.count >= high ? false : roll & 1 == 0
            let open = s.streams.keys.sorted().map { s.streams[$0]! }
            if add {
                let drawn = Int(s.rng.next() % UInt64(sh.segments)), svc = Int(s.rng.next() % UInt64(sh.servicesPerSegment))
                // A full /24 passes the replica to the next segment with room (there always is one:
                // the count stays below 200 + one replica per service per segment on average).
                let seg = (0..<sh.segments).lazy.map { (drawn + $0) % sh.segments }.first { s.used[$0].count < 253 }!
                let host = (2...254).lazy.map(UInt32.init).first { !s.used[seg].contains($0) }!
                s.used[seg].insert(host)
                s.added += 1
                let c = Self.container(segment: seg, service: svc, name: "\(Self.segment(seg))-svc\(svc)-g\(s.added)", host: host)
                s.insert(c)
                return (SourceEvent(.added, containerID: c.id!, containerName: c.name), c, open)
            }
            let key = s.keys[Int(s.rng.next() % UInt64(s.keys.count))]
            let c = s.remove(key)!
            if case .v4(let a)? = c.networks.values.first?.ipv4 {
                let seg = Int((a >> 8) & 0xffff) - 100 * 256
                s.used[seg].remove(a & 0xff)
            }
            return (SourceEvent(.removed, containerID: key, containerName: c.name), c, open)
        }
        for c in open { c.yield(event) }
        return (event, container)
    }

    /// Delivers `event` to every open stream (a `.resynced`, say).
    public func send(_ event: SourceEvent) {
        let open = state.withLock { s in s.streams.keys.sorted().map { s.streams[$0]! } }
        for c in open { c.yield(event) }
    }
}

/// SplitMix64: a small generator that gives the same sequence on every platform and run, unlike
/// the system one.
struct SplitMix64: Sendable {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
