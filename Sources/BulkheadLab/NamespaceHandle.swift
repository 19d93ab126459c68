import BulkheadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// An open file descriptor, closed when the last reference goes away.
final class FileDescriptor {
    let raw: Int32
    init(_ raw: Int32) { self.raw = raw }
    deinit { close(raw) }
}

/// An open handle on a named network namespace (`/var/run/netns/NAME`, as `ip netns add` makes it).
///
/// Holding the handle keeps the namespace alive even after `ip netns del`; handles are opened per
/// probe batch and per server socket set, never cached across a lab's lifetime. Entering goes
/// through `BulkheadNamespace.NetworkNamespace`, as the netlink sockets do.
final class NamespaceHandle {
    let name: String
    let fd: FileDescriptor
    /// The namespace's identity (device, inode): a re-created namespace of the same name differs.
    let identity: NamespaceIdentity

    init(named name: String) throws(LabError) {
        self.name = name
        let path = NetworkNamespace.path(of: name)
        do {
            fd = FileDescriptor(try NetworkNamespace.open(name))
        } catch {
            throw .system(call: error.call, target: error.path, errno: error.errno)
        }
        var st = stat()
        guard fstat(fd.raw, &st) == 0 else { throw .system(call: "fstat", target: path, errno: errno) }
        identity = NamespaceIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Creates a socket inside this namespace. A socket belongs for life to the namespace it was
    /// created in, so only `socket(2)` runs there: the calling thread enters the namespace, creates
    /// the socket and returns at once, with no suspension point in between (the closure is synchronous).
    func socket(domain: Int32, type: Int32, protocol proto: Int32) throws(LabError) -> FileDescriptor {
        let made: (fd: Int32, errno: Int32)
        do {
            made = try NetworkNamespace.withEntered(fd: fd.raw, name: name) {
                let s = Glibc.socket(domain, type, proto)
                return (s, errno)
            }
        } catch let failure as NetworkNamespace.Failure {
            throw .system(call: failure.call, target: failure.call == "setns" ? name : failure.path, errno: failure.errno)
        } catch {
            fatalError("unreachable: socket(2) throws nothing: \(error)")
        }
        guard made.fd >= 0 else { throw .system(call: "socket", target: name, errno: made.errno) }
        return FileDescriptor(made.fd)
    }
}

struct NamespaceIdentity: Hashable {
    var device: UInt64
    var inode: UInt64
}
