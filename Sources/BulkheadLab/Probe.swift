import BulkheadInventory
import BulkheadPolicy

/// One connection attempt: from a party of the lab to an address, with a protocol and port.
public struct Probe: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var from: Party
    public var to: IPAddress
    public var traffic: Traffic
    /// For a link-local destination: the sender's interface (its scope), e.g. `eth0` in a
    /// container or the bridge in the host. The probe binds to it and lets the kernel pick the
    /// interface's own link-local source.
    public var interface: String?

    public init(from: Party, to: IPAddress, traffic: Traffic, interface: String? = nil) {
        self.from = from
        self.to = to
        self.traffic = traffic
        self.interface = interface
    }

    public var description: String { "\(from) → \(to)\(interface.map { "%" + $0 } ?? "") \(traffic)" }

    private var trafficKey: (Int, Int) {
        switch traffic {
        case .tcp(let p): return (0, Int(p))
        case .udp(let p): return (1, Int(p))
        case .icmp: return (2, 0)
        case .other(let n): return (3, Int(n))
        }
    }

    public static func < (a: Probe, b: Probe) -> Bool {
        if a.from != b.from { return a.from < b.from }
        if a.to != b.to { return a.to < b.to }
        if a.trafficKey != b.trafficKey { return a.trafficKey < b.trafficKey }
        return (a.interface ?? "") < (b.interface ?? "")
    }
}

/// What happened to a probe.
public enum ProbeOutcome: String, Sendable, Hashable, Codable, CustomStringConvertible {
    /// TCP connected, the UDP echo came back, or the ICMP echo was answered.
    case answered
    /// The destination said no: a TCP reset, or ICMP port unreachable for UDP. The packet got there.
    case refused
    /// Nothing came back before the timeout: the packet (or its answer) was dropped.
    case timedOut
    /// An ICMP error (host, network or administratively unreachable) or a local routing error.
    case unreachable
    /// The sender's own kernel refused to send (EPERM/EACCES): a drop in its output path.
    case blockedLocally

    public var description: String { rawValue }

    /// The packet reached the destination's stack (answered or refused).
    public var delivered: Bool { self == .answered || self == .refused }
}

/// A probe and what came of it.
public struct ProbeResult: Sendable, Hashable, CustomStringConvertible {
    public var probe: Probe
    public var outcome: ProbeOutcome
    /// The errno or ICMP error behind a refused, unreachable or blocked outcome, for reports.
    public var detail: String?
    /// From sending to the outcome.
    public var elapsed: Duration

    public init(probe: Probe, outcome: ProbeOutcome, detail: String? = nil, elapsed: Duration = .zero) {
        self.probe = probe
        self.outcome = outcome
        self.detail = detail
        self.elapsed = elapsed
    }

    public var description: String {
        "\(probe): \(outcome)" + (detail.map { " (\($0))" } ?? "")
    }
}

/// Why a probe batch could not run at all (individual probe failures are outcomes, not errors).
public enum ProbeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Only TCP, UDP and ICMP can be probed.
    case unsupportedTraffic(Probe)
    /// The probe's source is not a party of the lab.
    case unknownParty(Party)
    /// The world has no address of the destination's family to send from.
    case noSourceAddress(Probe)
    /// Opening a namespace or creating a socket failed.
    case lab(LabError)

    public var description: String {
        switch self {
        case .unsupportedTraffic(let p): return "cannot probe \(p): only tcp, udp and icmp probes exist"
        case .unknownParty(let p): return "'\(p)' is not a party of the lab: use .host, .world or a container of the lab"
        case .noSourceAddress(let p): return "cannot probe \(p): the world has no address of that family (LabConfiguration.worldAddresses)"
        case .lab(let e): return e.description
        }
    }
}
