import CNetfilterShim
#if canImport(Glibc)
import Glibc
#endif

/// Entering a named network namespace for the duration of a synchronous call: the one way the
/// netlink sockets (BulkheadNetfilter) and the lab's probe sockets (BulkheadLab) get into a
/// namespace. `setns(2)` and `CLONE_NEWNET` need `_GNU_SOURCE`, which Swift's Glibc import does
/// not set, so the call goes through the C shim (`bh_setns_net`).
public enum NetworkNamespace {
    /// Opening the namespace, or entering it, failed: which namespace, which call, the errno.
    public struct Failure: Error, Sendable, Hashable, CustomStringConvertible {
        public var name: String
        public var path: String
        /// `open` (the namespace file, or the thread's own) or `setns`.
        public var call: String
        public var errno: Int32

        public init(name: String, path: String, call: String, errno: Int32) {
            (self.name, self.path, self.call, self.errno) = (name, path, call, errno)
        }

        /// setns refused for lack of CAP_SYS_ADMIN.
        public var isPermissionDenied: Bool { call == "setns" && (errno == EPERM || errno == EACCES) }

        public var description: String {
            "network namespace \(name): \(call) \(path) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }

    /// `/var/run/netns/NAME` (what `ip netns add NAME` makes), or `name` when it is a path.
    public static func path(of name: String) -> String {
        name.hasPrefix("/") ? name : "/var/run/netns/\(name)"
    }

    /// Opens the namespace file of `name` (close-on-exec). The descriptor keeps the namespace alive
    /// after `ip netns del` until it is closed.
    public static func open(_ name: String) throws(Failure) -> Int32 {
        let path = path(of: name)
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(name: name, path: path, call: "open", errno: Glibc.errno) }
        return fd
    }

    /// Runs `body` with the calling thread inside network namespace `name` and returns to the
    /// thread's own namespace before returning. `body` must be synchronous: `setns` affects only
    /// the calling thread, so there must be no suspension point in between. Throws `Failure`, or
    /// what `body` throws.
    public static func withEntered<T>(_ name: String, _ body: () throws -> T) throws -> T {
        let target = try open(name)
        defer { close(target) }
        return try withEntered(fd: target, name: name, body)
    }

    /// The same with a namespace already open at `fd` (`open`).
    public static func withEntered<T>(fd target: Int32, name: String, _ body: () throws -> T) throws -> T {
        let own = "/proc/thread-self/ns/net"
        let original = Glibc.open(own, O_RDONLY | O_CLOEXEC)
        guard original >= 0 else { throw Failure(name: name, path: own, call: "open", errno: Glibc.errno) }
        defer { close(original) }
        guard bh_setns_net(target) == 0 else { throw Failure(name: name, path: path(of: name), call: "setns", errno: Glibc.errno) }
        defer {
            // A thread left in the wrong namespace would program the wrong firewall or probe the
            // wrong lab later: that cannot be reported and recovered from, so stop here.
            if bh_setns_net(original) != 0 {
                fatalError("could not return to the original network namespace after entering \(name): errno \(Glibc.errno)")
            }
        }
        return try body()
    }
}
