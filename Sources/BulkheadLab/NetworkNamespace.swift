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
/// probe batch and per server socket set, never cached across a lab's lifetime.
final class NetworkNamespace {
    let name: String
    let fd: FileDescriptor
    /// The namespace's identity (device, inode): a re-created namespace of the same name differs.
    let identity: NamespaceIdentity

    init(named name: String) throws(LabError) {
        self.name = name
        let path = "/var/run/netns/\(name)"
        let raw = open(path, O_RDONLY | O_CLOEXEC)
        guard raw >= 0 else { throw .system(call: "open", target: path, errno: errno) }
        fd = FileDescriptor(raw)
        var st = stat()
        guard fstat(raw, &st) == 0 else { throw .system(call: "fstat", target: path, errno: errno) }
        identity = NamespaceIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Creates a socket inside this namespace. A socket belongs for life to the namespace it was
    /// created in, so only `socket(2)` runs there: the calling thread enters the namespace, creates
    /// the socket and returns at once, with no suspension point in between (the closure is synchronous).
    func socket(domain: Int32, type: Int32, protocol proto: Int32) throws(LabError) -> FileDescriptor {
        let original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard original >= 0 else { throw .system(call: "open", target: "/proc/thread-self/ns/net", errno: errno) }
        defer { close(original) }
        guard setns(fd.raw, cloneNewNet) == 0 else { throw .system(call: "setns", target: name, errno: errno) }
        let s = Glibc.socket(domain, type, proto)
        let socketErrno = errno
        // A thread left in a lab namespace would send everything it does later (including `nft` and
        // netlink from other libraries) to the wrong place; failing to return must stop the process.
        guard setns(original, cloneNewNet) == 0 else {
            fatalError("cannot return thread to its network namespace after entering \(name): errno \(errno)")
        }
        guard s >= 0 else { throw .system(call: "socket", target: name, errno: socketErrno) }
        return FileDescriptor(s)
    }
}

/// `setns(2)` and `CLONE_NEWNET` are behind `_GNU_SOURCE`, which Swift's Glibc module does not define, so
/// neither is imported. The function is looked up in libc once; the flag is the kernel ABI value from
/// `<linux/sched.h>` (stable since Linux 2.6.24). A C shim target would be the tidier home for both.
private let setnsFunction: @convention(c) (Int32, Int32) -> Int32 = {
    guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "setns") else {
        fatalError("libc has no setns(2): network namespaces are unavailable")
    }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
}()
private let cloneNewNet: Int32 = 0x4000_0000

private func setns(_ fd: Int32, _ type: Int32) -> Int32 { setnsFunction(fd, type) }

struct NamespaceIdentity: Hashable {
    var device: UInt64
    var inode: UInt64
}
