#if canImport(Glibc)
import Glibc
#endif

/// Why talking to dockerd failed: what was attempted, against which socket, and what to do next.
///
/// The cases are the ones an operator can act on differently: the daemon is not there, we may not
/// talk to it, it said no, it is too slow, or it answered something we cannot read.
public enum DockerClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The endpoint string is neither a socket path nor a `unix://` URL.
    case invalidEndpoint(String)
    /// No socket file at the path: dockerd is not running, or it listens somewhere else.
    case socketMissing(path: String)
    /// The socket exists but this process may not connect to it (not root, not in group `docker`).
    case permissionDenied(path: String)
    /// The socket file exists but nobody accepts on it: a stale socket left by a dead dockerd.
    case connectionRefused(path: String)
    /// The path exists but is not a socket.
    case notASocket(path: String)
    /// Connecting or sending failed for another reason (`detail` is the transport's own words).
    case transport(path: String, request: String, detail: String)
    /// dockerd did not answer `request` within `seconds`.
    case timeout(path: String, request: String, seconds: Double)
    /// dockerd answered with an error status; `message` is Docker's own `{"message": …}`.
    case api(request: String, status: Int, message: String)
    /// dockerd answered 2xx with a body we cannot decode (an API change, or a proxy in the way).
    case malformedResponse(request: String, detail: String)
    /// The calling task was cancelled before dockerd answered.
    case cancelled(request: String)
    /// The events stream ended. dockerd closes it only when it stops or restarts, so whoever
    /// follows events must reconnect and re-list everything: events in the gap are lost.
    case eventStreamEnded(path: String)

    public var description: String {
        switch self {
        case .invalidEndpoint(let text):
            return "'\(text)' is not a Docker endpoint: use a socket path or unix:///var/run/docker.sock (tcp:// is not supported)"
        case .socketMissing(let path):
            return "cannot connect to Docker at \(path): no such socket — is dockerd running? (systemctl start docker)"
        case .permissionDenied(let path):
            return "cannot connect to Docker at \(path): permission denied — run as root or as a member of the 'docker' group"
        case .connectionRefused(let path):
            return "cannot connect to Docker at \(path): connection refused (a stale socket?) — is dockerd running? (systemctl start docker)"
        case .notASocket(let path):
            return "cannot connect to Docker at \(path): the path is not a unix socket — check --docker"
        case .transport(let path, let request, let detail):
            return "\(request) to Docker at \(path) failed: \(detail) — is dockerd healthy? (journalctl -u docker)"
        case .timeout(let path, let request, let seconds):
            return "\(request) to Docker at \(path) got no answer within \(Self.format(seconds)) s — dockerd may be overloaded or hung (journalctl -u docker)"
        case .api(let request, let status, let message):
            return "Docker refused \(request): HTTP \(status): \(message.isEmpty ? "(no message)" : message)"
        case .malformedResponse(let request, let detail):
            return "cannot read Docker's answer to \(request): \(detail) — is this a Docker Engine API (1.41 or later)?"
        case .cancelled(let request):
            return "\(request) to Docker was cancelled"
        case .eventStreamEnded(let path):
            return "the Docker event stream from \(path) ended (dockerd stopped or restarted): reconnect and re-list"
        }
    }

    private static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    /// Names the reason a unix-socket connection to `path` fails, by trying one directly.
    ///
    /// AsyncHTTPClient reports a refused connect as a NIO error whose errno we cannot match on
    /// without importing NIOCore; a direct `connect(2)` gives the errno itself, and it runs only
    /// after a request has already failed. Nil when the connect succeeds (the failure was elsewhere).
    static func diagnoseSocket(at path: String) -> DockerClientError? {
        var st = stat()
        if stat(path, &st) != 0 {
            switch errno {
            case ENOENT, ENOTDIR: return .socketMissing(path: path)
            case EACCES: return .permissionDenied(path: path)
            default: return nil
            }
        }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else { return .notASocket(path: path) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return .invalidEndpoint(path) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result != 0 else { return nil }
        switch errno {
        case ENOENT: return .socketMissing(path: path)
        case EACCES, EPERM: return .permissionDenied(path: path)
        case ECONNREFUSED: return .connectionRefused(path: path)
        case ENOTSOCK: return .notASocket(path: path)
        default: return nil
        }
    }
}
