import BulkheadInventory
import Synchronization

// BulkheadConntrack: the kernel's connection tracking table as Bulkhead sees it — the entry model,
// the side-effect protocol (`ConnectionTracking`) and its in-memory fake. Pure Swift: the netlink
// implementation is `NetlinkConntrack` in BulkheadNetfilter, the only target that imports C.

/// One direction of a tracked connection: addresses, IP protocol number and (for TCP, UDP,
/// SCTP, DCCP, UDP-Lite) ports. ICMP entries carry their echo id as the "source port" in the
/// kernel; Bulkhead keeps ports nil for every protocol that has none.
public struct ConntrackTuple: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var source: IPAddress
    public var destination: IPAddress
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    public var proto: UInt8
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?

    public init(source: IPAddress, destination: IPAddress, proto: UInt8, sourcePort: UInt16? = nil, destinationPort: UInt16? = nil) {
        self.source = source
        self.destination = destination
        self.proto = proto
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    public var protocolName: String {
        switch proto {
        case 6: return "tcp"
        case 17: return "udp"
        case 1: return "icmp"
        case 58: return "icmpv6"
        case 132: return "sctp"
        case 33: return "dccp"
        case 136: return "udplite"
        default: return "proto \(proto)"
        }
    }

    public var description: String {
        func endpoint(_ a: IPAddress, _ p: UInt16?) -> String {
            guard let p else { return a.description }
            return a.isIPv4 ? "\(a):\(p)" : "[\(a)]:\(p)"
        }
        return "\(protocolName) \(endpoint(source, sourcePort)) -> \(endpoint(destination, destinationPort))"
    }

    public static func < (a: ConntrackTuple, b: ConntrackTuple) -> Bool {
        (a.source, a.destination, a.proto, a.sourcePort ?? 0, a.destinationPort ?? 0)
            < (b.source, b.destination, b.proto, b.sourcePort ?? 0, b.destinationPort ?? 0)
    }
}

/// One conntrack entry: the original direction (as the first packet went), the reply direction
/// (what answers look like; it differs from the swapped original when NAT rewrote the
/// connection), and the zone, which is part of the key the kernel deletes by.
public struct ConntrackEntry: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var original: ConntrackTuple
    public var reply: ConntrackTuple
    /// Conntrack zone (0: the default zone).
    public var zone: UInt16
    /// The kernel's id of the entry (CTA_ID), when it gave one: a delete that names it cannot
    /// remove a newer connection that re-used the same tuple.
    public var id: UInt32?
    /// The kernel's own encoding of the original tuple (the CTA_TUPLE_ORIG attribute, header
    /// included), sent back verbatim to delete the entry: a tuple carries protocol fields
    /// Bulkhead does not model (ICMP id/type/code, GRE keys), and the kernel matches on all of them.
    public var kernelTuple: [UInt8]?

    public init(original: ConntrackTuple, reply: ConntrackTuple? = nil, zone: UInt16 = 0, id: UInt32? = nil, kernelTuple: [UInt8]? = nil) {
        self.original = original
        self.reply = reply ?? ConntrackTuple(source: original.destination, destination: original.source, proto: original.proto,
                                              sourcePort: original.destinationPort, destinationPort: original.sourcePort)
        self.zone = zone
        self.id = id
        self.kernelTuple = kernelTuple
    }

    /// The connection as the filter hooks judged its first packet: the source before any source
    /// NAT (the original source) and the destination after destination NAT (where the replies
    /// come from), so a port Docker publishes on the host is judged as the container's port.
    public var effective: ConntrackTuple {
        ConntrackTuple(source: original.source, destination: reply.source, proto: original.proto,
                       sourcePort: original.sourcePort, destinationPort: reply.sourcePort)
    }

    public var description: String {
        var s = original.description
        if effective.destination != original.destination || effective.destinationPort != original.destinationPort {
            s += " (to \(effective.destination)\(effective.destinationPort.map { ":\($0)" } ?? "") after NAT)"
        }
        if zone != 0 { s += " zone \(zone)" }
        return s
    }

    public static func < (a: ConntrackEntry, b: ConntrackEntry) -> Bool {
        (a.original, a.zone, a.id ?? 0) < (b.original, b.zone, b.id ?? 0)
    }
}

/// What can go wrong reading or changing connection tracking. Each case says what to do next.
public enum ConntrackError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No CAP_NET_ADMIN in the namespace.
    case permissionDenied(operation: String)
    /// The kernel has no connection tracking for this namespace (module not loaded).
    case unavailable(String)
    /// A system call or netlink request failed.
    case failed(operation: String, errno: Int32, detail: String)
    /// A reply did not parse.
    case malformedReply(String)

    public var description: String {
        switch self {
        case .permissionDenied(let op):
            return "\(op): permission denied: reading or changing connection tracking needs CAP_NET_ADMIN (run as root)"
        case .unavailable(let why):
            return "connection tracking is not available: \(why); check that the nf_conntrack module is loaded (modprobe nf_conntrack)"
        case .failed(let op, let err, let detail):
            return "\(op) failed (errno \(err)): \(detail)"
        case .malformedReply(let what):
            return "unexpected reply from connection tracking: \(what)"
        }
    }
}

/// The kernel's connection tracking table of one network namespace.
///
/// `NetlinkConntrack` (BulkheadNetfilter) is the real one; `FakeConntrack` serves unit tests.
public protocol ConnectionTracking: AnyObject, Sendable {
    /// Every entry, IPv4 and IPv6, of every zone.
    func entries() throws(ConntrackError) -> [ConntrackEntry]
    /// Removes one entry. Returns false when it was already gone (the connection ended, or the
    /// kernel timed it out, between the dump and the delete): not an error.
    func delete(_ entry: ConntrackEntry) throws(ConntrackError) -> Bool
}

/// An in-memory conntrack table. Deletes match like the kernel's: by original tuple and zone,
/// and by id when the request names one. Thread-safe: an agent's reconcile and a test read it at once.
public final class FakeConntrack: ConnectionTracking, Sendable {
    private struct State {
        var table: [ConntrackEntry]
        var dumpError: ConntrackError?
        var deleteErrors: [ConntrackTuple: ConntrackError] = [:]
        var deleted: [ConntrackEntry] = []
    }

    private let state: Mutex<State>

    public init(_ table: [ConntrackEntry] = []) { state = Mutex(State(table: table)) }

    /// The entries it holds now.
    public var table: [ConntrackEntry] { state.withLock { $0.table } }
    /// Thrown by `entries()` when set.
    public var dumpError: ConntrackError? {
        get { state.withLock { $0.dumpError } }
        set { state.withLock { $0.dumpError = newValue } }
    }
    /// Thrown by `delete` for these original tuples.
    public var deleteErrors: [ConntrackTuple: ConntrackError] {
        get { state.withLock { $0.deleteErrors } }
        set { state.withLock { $0.deleteErrors = newValue } }
    }
    /// Every delete asked for, in order.
    public var deleted: [ConntrackEntry] { state.withLock { $0.deleted } }

    /// A connection opens (tests: after the flow it uses was allowed).
    public func open(_ entry: ConntrackEntry) { state.withLock { $0.table.append(entry) } }

    public func entries() throws(ConntrackError) -> [ConntrackEntry] {
        let (table, error) = state.withLock { ($0.table, $0.dumpError) }
        if let error { throw error }
        return table
    }

    public func delete(_ entry: ConntrackEntry) throws(ConntrackError) -> Bool {
        let result: Result<Bool, ConntrackError> = state.withLock { s in
            if let error = s.deleteErrors[entry.original] { return .failure(error) }
            s.deleted.append(entry)
            guard let i = s.table.firstIndex(where: { $0.original == entry.original && $0.zone == entry.zone && (entry.id == nil || $0.id == entry.id) }) else {
                return .success(false)
            }
            s.table.remove(at: i)
            return .success(true)
        }
        return try result.get()
    }
}
