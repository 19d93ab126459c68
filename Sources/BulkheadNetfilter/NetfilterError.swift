#if canImport(Glibc)
import Glibc
#endif

/// Everything that can go wrong between Bulkhead and the kernel's nf_tables.
///
/// Each case says what failed, where, and (in `description`) what to do next.
public enum NetfilterError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The process lacks CAP_NET_ADMIN in the network namespace it talks to.
    case permissionDenied(operation: String)
    /// A system call failed (`call` names it, `context` says what we were doing).
    case systemCall(call: String, errno: Int32, context: String)
    /// The named network namespace does not exist or cannot be entered.
    case namespace(name: String, errno: Int32, step: String)
    /// The kernel refused one operation of a batch; nothing in the batch was applied.
    case operationFailed(index: Int, operation: String, errno: Int32, kernelMessage: String?)
    /// The kernel refused the batch as a whole (no single operation is to blame).
    case batchFailed(errno: Int32, kernelMessage: String?)
    /// The ruleset changed since it was read (generation `expected`, now different): the
    /// kernel refused the commit and nothing was written.
    case generationChanged(expected: UInt32)
    /// A reply from the kernel could not be understood.
    case malformedReply(String)
    /// The kernel did not answer in time.
    case timeout(waitingFor: String)
    /// An object cannot be encoded (model value outside what netlink can carry).
    case unsupported(String)
    /// Another live process holds the table (NFT_TABLE_F_OWNER): only it can change it.
    case tableOwnedByAnotherProcess(table: String)
    /// The table does not exist in the kernel.
    case tableNotFound(family: String, name: String)

    public var description: String {
        switch self {
        case .permissionDenied(let op):
            return "\(op): the kernel answered EPERM: Bulkhead needs CAP_NET_ADMIN (run as root, "
                + "or grant the capability) to read or change nftables"
        case .systemCall(let call, let err, let ctx):
            return "\(ctx): \(call) failed: \(errnoText(err)) (errno \(err))"
        case .namespace(let name, let err, let step):
            return "network namespace \(name): \(step) failed: \(errnoText(err)); "
                + "check that /var/run/netns/\(name) exists (ip netns list)"
        case .operationFailed(let index, let op, let err, let msg):
            var s = "operation #\(index + 1) (\(op)) was refused by the kernel: \(errnoText(err)) (errno \(err))"
            if let msg, !msg.isEmpty { s += ": \(msg)" }
            s += "; the whole transaction was rolled back, nothing changed"
            return s
        case .batchFailed(let err, let msg):
            var s = "the kernel refused the transaction: \(errnoText(err)) (errno \(err))"
            if let msg, !msg.isEmpty { s += ": \(msg)" }
            return s + "; nothing changed"
        case .generationChanged(let gen):
            return "the nftables ruleset changed after it was read (generation \(gen)); "
                + "the kernel refused the commit and nothing was overwritten: read again and retry"
        case .malformedReply(let what):
            return "unexpected netlink reply: \(what)"
        case .timeout(let what):
            return "no answer from the kernel while waiting for \(what)"
        case .unsupported(let what):
            return "cannot encode for netlink: \(what)"
        case .tableOwnedByAnotherProcess(let what):
            return "\(what): refused with EPERM: another running process owns the table (flags owner,persist), "
                + "probably the bulkhead agent; stop it or make the change through it"
        case .tableNotFound(let family, let name):
            return "table \(family) \(name) does not exist"
        }
    }
}

/// strerror() text for an errno value.
func errnoText(_ err: Int32) -> String {
    String(cString: strerror(err))
}

/// Turns a failed call into a typed error: EPERM always becomes `.permissionDenied`.
func systemError(_ call: String, _ err: Int32 = errno, context: String) -> NetfilterError {
    if err == EPERM || err == EACCES { return .permissionDenied(operation: context) }
    return .systemCall(call: call, errno: err, context: context)
}
