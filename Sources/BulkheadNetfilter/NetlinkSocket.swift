import CNetfilter
import CNetfilterShim
import BulkheadNamespace
#if canImport(Glibc)
import Glibc
#endif

/// The one side effect of this target: a NETLINK_NETFILTER socket.
///
/// `NetfilterSocket` is the real one; tests pass a double to exercise ack handling without a
/// kernel.
public protocol NetlinkTransport: AnyObject {
    /// The port id the kernel assigned to this socket (acks are addressed to it).
    var portID: UInt32 { get }
    /// Sends `parts` as ONE datagram (one sendmsg with a gather list): nf_tables treats a
    /// datagram as the unit of a batch, so a batch must never be split across datagrams.
    func send(_ parts: [UnsafeRawBufferPointer]) throws
    /// Receives one datagram into `buffer`; returns its length, or nil after
    /// `timeoutMilliseconds` without data.
    func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutMilliseconds: Int32) throws -> Int?
    /// Grows the kernel socket buffers to at least these sizes (best effort).
    func reserveBuffers(send: Int, receive: Int)
}

/// A `mnl_socket` bound to NETLINK_NETFILTER, optionally created inside a named network
/// namespace. The socket stays in the namespace it was created in for its whole life.
public final class NetfilterSocket: NetlinkTransport {
    private let handle: OpaquePointer
    /// The socket's file descriptor.
    public let fd: Int32
    public let portID: UInt32
    /// The network namespace the socket talks to (nil: the caller's).
    public let namespace: String?
    private var sendBufferSize: Int = 0
    private var receiveBufferSize: Int = 0

    /// Opens a socket in the calling thread's network namespace, or in `namespace`
    /// (a name under /var/run/netns, or an absolute path to a netns file).
    public init(namespace: String? = nil) throws {
        self.namespace = namespace
        let handle: OpaquePointer
        if let namespace {
            handle = try withNamespaceEntered(namespace) { try Self.openSocket() }
        } else {
            handle = try Self.openSocket()
        }
        self.handle = handle
        self.fd = mnl_socket_get_fd(handle)
        self.portID = mnl_socket_get_portid(handle)
        // Extended acks carry the kernel's own explanation (NLMSGERR_ATTR_MSG) and the offset of
        // the offending attribute; capped acks stop the kernel from echoing our whole request
        // back in every error, which for a 64 KiB element message would flood the receive buffer.
        var one: Int32 = 1
        _ = mnl_socket_setsockopt(handle, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(handle, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        sendBufferSize = Self.getBuffer(fd, SO_SNDBUF)
        receiveBufferSize = Self.getBuffer(fd, SO_RCVBUF)
    }

    deinit {
        mnl_socket_close(handle)
    }

    private static func openSocket() throws -> OpaquePointer {
        guard let nl = mnl_socket_open2(NETLINK_NETFILTER, Int32(SOCK_CLOEXEC.rawValue)) else {
            throw systemError("socket(AF_NETLINK, NETLINK_NETFILTER)", context: "opening the netfilter netlink socket")
        }
        if mnl_socket_bind(nl, 0, pid_t(MNL_SOCKET_AUTOPID)) < 0 {
            let err = errno
            mnl_socket_close(nl)
            throw systemError("bind", err, context: "binding the netfilter netlink socket")
        }
        return nl
    }

    public func send(_ parts: [UnsafeRawBufferPointer]) throws {
        var iov = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        let total = parts.reduce(0) { $0 + $1.count }
        let sent: Int = withUnsafeMutablePointer(to: &kernel) { addr in
            iov.withUnsafeMutableBufferPointer { iovs in
                var msg = msghdr()
                msg.msg_name = UnsafeMutableRawPointer(addr)
                msg.msg_namelen = socklen_t(MemoryLayout<sockaddr_nl>.size)
                msg.msg_iov = iovs.baseAddress
                msg.msg_iovlen = iovs.count
                while true {
                    let n = sendmsg(fd, &msg, 0)
                    if n < 0 && errno == EINTR { continue }
                    return n
                }
            }
        }
        if sent < 0 {
            let err = errno
            if err == EMSGSIZE {
                throw NetfilterError.systemCall(call: "sendmsg", errno: err,
                    context: "sending a \(total)-byte batch (larger than the socket send buffer of \(sendBufferSize) bytes)")
            }
            throw systemError("sendmsg", err, context: "sending \(total) bytes to nf_tables")
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeoutMilliseconds: Int32) throws -> Int? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let r = poll(&pfd, 1, timeoutMilliseconds)
            if r < 0 {
                if errno == EINTR { continue }
                throw systemError("poll", context: "waiting for nf_tables")
            }
            if r == 0 { return nil }
            break
        }
        while true {
            let n = mnl_socket_recvfrom(handle, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let err = errno
            if err == EINTR { continue }
            if err == ENOBUFS {
                throw NetfilterError.systemCall(call: "recvmsg", errno: err,
                    context: "receiving from nf_tables: the receive buffer (\(receiveBufferSize) bytes) overflowed and replies were lost")
            }
            throw systemError("recvmsg", err, context: "receiving from nf_tables")
        }
    }

    public func reserveBuffers(send: Int, receive: Int) {
        if send > sendBufferSize {
            Self.setBuffer(fd, force: SO_SNDBUFFORCE, plain: SO_SNDBUF, size: send)
            sendBufferSize = Self.getBuffer(fd, SO_SNDBUF)
        }
        if receive > receiveBufferSize {
            Self.setBuffer(fd, force: SO_RCVBUFFORCE, plain: SO_RCVBUF, size: receive)
            receiveBufferSize = Self.getBuffer(fd, SO_RCVBUF)
        }
    }

    private static func getBuffer(_ fd: Int32, _ option: Int32) -> Int {
        var value: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, option, &value, &len)
        return Int(value)
    }

    private static func setBuffer(_ fd: Int32, force: Int32, plain: Int32, size: Int) {
        // The kernel doubles the value it is given (for bookkeeping overhead) and reports the
        // doubled size back; *FORCE ignores net.core.[rw]mem_max and needs CAP_NET_ADMIN, which
        // we need anyway. Without it, fall back to the capped plain option, like nft does.
        var value = Int32(clamping: size)
        if setsockopt(fd, SOL_SOCKET, force, &value, socklen_t(MemoryLayout<Int32>.size)) < 0 {
            _ = setsockopt(fd, SOL_SOCKET, plain, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }
}

/// `NetworkNamespace.withEntered`, its failures as `NetfilterError`s.
func withNamespaceEntered<T>(_ namespace: String, _ body: () throws -> T) throws -> T {
    do {
        return try NetworkNamespace.withEntered(namespace, body)
    } catch let failure as NetworkNamespace.Failure {
        throw NetfilterError(failure)
    }
}

extension NetfilterError {
    /// The netlink socket's view of a namespace it could not enter (`NetworkNamespace.Failure`).
    init(_ failure: NetworkNamespace.Failure) {
        if failure.call == "setns", failure.errno == EPERM {
            self = .permissionDenied(operation: "entering network namespace \(failure.name) (setns needs CAP_SYS_ADMIN)")
        } else {
            self = .namespace(name: failure.name, errno: failure.errno, step: failure.call == "setns" ? "setns into \(failure.path)" : "opening \(failure.path)")
        }
    }
}
