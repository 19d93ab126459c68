#if canImport(Glibc)
import Glibc
#endif

/// Bridge netfilter: whether traffic between two containers on one Docker bridge passes the IPv4
/// and IPv6 hooks (where our forward chain is). It is per network namespace (kernel ≥ 5.3), and
/// off by default in a new namespace, so `apply` checks it in the namespace it programs.
public enum BridgeNetfilter {
    static let keys = ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"]

    /// Turns both sysctls on where they are off; returns one line per change for the user.
    /// `/proc/sys/net` shows the namespace of the thread that opens the file, so the files are
    /// opened while inside `namespace`.
    public static func ensureEnabled(namespace: String?) throws -> [String] {
        func body() throws -> [String] {
            var changed: [String] = []
            for key in keys {
                let path = "/proc/sys/net/bridge/\(key)"
                guard let current = read(path) else {
                    throw NetfilterError.systemCall(call: "open", errno: errno,
                        context: "reading \(path) (is bridge netfilter available? load the br_netfilter module)")
                }
                if current == "1" { continue }
                guard write(path, "1") else {
                    throw NetfilterError.systemCall(call: "write", errno: errno, context: "turning on \(path)")
                }
                changed.append("turned on net.bridge.\(key)=1\(namespace.map { " in network namespace \($0)" } ?? "") so traffic between containers on one bridge is filtered")
            }
            return changed
        }
        if let namespace { return try withNamespaceEntered(namespace, body) }
        return try body()
    }

    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = Glibc.read(fd, &buffer, buffer.count)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self).filter { !$0.isWhitespace }
    }

    static func write(_ path: String, _ value: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        return Glibc.write(fd, bytes, bytes.count) == bytes.count
    }
}
