import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why building, changing or tearing down a lab failed: what was attempted, where, and what to do next.
public enum LabError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Network namespaces, veths and raw sockets need CAP_NET_ADMIN and CAP_SYS_ADMIN.
    case notRoot
    /// A command (`ip`, `sysctl` through `ip netns exec`) exited non-zero or could not start.
    case commandFailed(command: [String], status: Int32, stderr: String, purpose: String)
    /// The inventory cannot be turned into a lab (for example a container on an unknown network).
    case invalidInventory(String)
    /// A sysctl read back a different value than the lab set.
    case sysctlMismatch(namespace: String, key: String, expected: String, actual: String)
    /// `addContainer` of a name the lab already has, or `removeContainer` of one it does not.
    case unknownContainer(String)
    case duplicateContainer(String)
    /// The lab was destroyed and can no longer be changed or probed.
    case destroyed(String)
    /// `Lab.run(in:)` was asked to run in a namespace that is not one of the lab's.
    case foreignNamespace(String, lab: String)
    /// A system call on a namespace or socket failed.
    case system(call: String, target: String, errno: Int32)

    public var description: String {
        switch self {
        case .notRoot:
            return "the lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces: run the tests as root"
        case .commandFailed(let command, let status, let stderr, let purpose):
            let why = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            let next: String
            if status == 127 || why.contains("No such file") && why.contains("exec") {
                next = "install iproute2 (and the tool named) or put it in /usr/sbin"
            } else if why.contains("File exists") {
                next = "a leftover of an earlier run holds the name: remove it with Lab.cleanupStale(prefix:)"
            } else if why.contains("Operation not permitted") || why.contains("Permission denied") {
                next = "run as root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
            } else {
                next = "run the command by hand to see more"
            }
            return "\(purpose): `\(command.joined(separator: " "))` failed (exit \(status))"
                + (why.isEmpty ? "" : ": \(why)") + " — \(next)"
        case .invalidInventory(let why):
            return "cannot build a lab from this inventory: \(why)"
        case .sysctlMismatch(let ns, let key, let expected, let actual):
            return "sysctl \(key) in namespace \(ns) reads \(actual) after setting \(expected): this kernel may not namespace it"
        case .unknownContainer(let name):
            return "the lab has no container named '\(name)'"
        case .duplicateContainer(let name):
            return "the lab already has a container named '\(name)': remove it first"
        case .destroyed(let name):
            return "lab \(name) was destroyed: create a new one"
        case .foreignNamespace(let ns, let lab):
            return "namespace \(ns) does not belong to lab \(lab): use lab.hostNamespace, lab.worldNamespace or lab.namespace(ofContainer:)"
        case .system(let call, let target, let e):
            return "\(call) on \(target) failed: \(errnoName(e)) (\(String(cString: strerror(e))))"
        }
    }
}

/// The symbolic name of the errno values probes and namespaces meet, for messages and probe details.
func errnoName(_ e: Int32) -> String {
    switch e {
    case EPERM: return "EPERM"
    case ENOENT: return "ENOENT"
    case EACCES: return "EACCES"
    case EINVAL: return "EINVAL"
    case EMFILE: return "EMFILE"
    case ENFILE: return "ENFILE"
    case EADDRINUSE: return "EADDRINUSE"
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL"
    case ENETDOWN: return "ENETDOWN"
    case ENETUNREACH: return "ENETUNREACH"
    case ECONNRESET: return "ECONNRESET"
    case ETIMEDOUT: return "ETIMEDOUT"
    case ECONNREFUSED: return "ECONNREFUSED"
    case EHOSTDOWN: return "EHOSTDOWN"
    case EHOSTUNREACH: return "EHOSTUNREACH"
    case EPROTO: return "EPROTO"
    case EMSGSIZE: return "EMSGSIZE"
    default: return "errno \(e)"
    }
}
