import BulkheadConntrack
import CNetfilter
import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

/// The kernel's connection tracking table of one network namespace, over ctnetlink.
///
/// A socket of its own (not the nf_tables one), so a dump's replies never interleave with a
/// batch's acks. Dumps read every zone and both families; deletes name the entry's id.
public final class NetlinkConntrack: ConnectionTracking, @unchecked Sendable {
    private let connection: NetlinkConnection
    /// The namespace (nil: the caller's).
    public let namespace: String?

    /// Opens a ctnetlink socket in `namespace` (a name under /var/run/netns or a path), or in the
    /// caller's namespace.
    public init(namespace: String? = nil) throws(ConntrackError) {
        self.namespace = namespace
        do {
            connection = NetlinkConnection(transport: try NetfilterSocket(namespace: namespace))
        } catch {
            throw Self.map(error, operation: "opening a connection tracking socket")
        }
        // A busy host may hold many entries; a dump reply is many 32 KiB datagrams.
        connection.transport.reserveBuffers(send: 0, receive: 4 << 20)
    }

    public func entries() throws(ConntrackError) -> [ConntrackEntry] {
        var result: [ConntrackEntry] = []
        var firstProblem: ConntrackError?
        do {
            try connection.request(context: "dumping connection tracking (IPCTNL_MSG_CT_GET)", build: { buf, seq in
                Self.write(ConntrackCodec.dumpRequest(seq: seq), to: buf)
            }, onData: { nlh in
                let bytes = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(nlh), count: Int(bh_nlmsg_len(nlh))))
                // One entry that does not parse must not hide the others: keep going, report the first.
                do throws(ConntrackError) {
                    if let entry = try ConntrackCodec.decodeEntry(bytes) { result.append(entry) }
                } catch {
                    if firstProblem == nil { firstProblem = error }
                }
            })
        } catch {
            throw Self.map(error, operation: "dumping connection tracking")
        }
        if result.isEmpty, let firstProblem { throw firstProblem }
        return result
    }

    public func delete(_ entry: ConntrackEntry) throws(ConntrackError) -> Bool {
        do {
            try connection.request(context: "deleting the conntrack entry \(entry)", build: { buf, seq in
                Self.write(ConntrackCodec.deleteRequest(entry, seq: seq), to: buf)
            }, onData: { _ in })
            return true
        } catch NetfilterError.systemCall(_, let err, _) where err == ENOENT {
            return false  // gone since the dump (ended, timed out, or a new connection re-used the tuple)
        } catch {
            throw Self.map(error, operation: "deleting the conntrack entry \(entry)")
        }
    }

    private static func write(_ bytes: [UInt8], to buffer: UnsafeMutableRawPointer) -> UnsafeMutablePointer<nlmsghdr> {
        // The request buffer is 8 KiB; our messages are under 200 bytes.
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: min($0.count, 8192)) }
        return buffer.assumingMemoryBound(to: nlmsghdr.self)
    }

    static func map(_ error: any Error, operation: String) -> ConntrackError {
        switch error {
        case let e as ConntrackError:
            return e
        case NetfilterError.permissionDenied:
            return .permissionDenied(operation: operation)
        case NetfilterError.systemCall(_, let err, let context) where err == EOPNOTSUPP || err == EPROTONOSUPPORT || err == EAFNOSUPPORT:
            return .unavailable("\(context): \(String(cString: strerror(err)))")
        case NetfilterError.systemCall(let call, let err, let context):
            return .failed(operation: operation, errno: err, detail: "\(context): \(call): \(String(cString: strerror(err)))")
        case NetfilterError.namespace(let name, let err, let step):
            return .failed(operation: operation, errno: err, detail: "network namespace \(name): \(step)")
        default:
            return .failed(operation: operation, errno: 0, detail: "\(error)")
        }
    }
}
