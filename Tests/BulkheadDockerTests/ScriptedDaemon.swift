import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Unix-socket stand-ins for dockerd, for what the real one will not do on demand: answer one
/// request with a scripted byte stream and hang up, refuse connections, or never answer.
enum UnixSocket {
    static func temporaryPath(_ what: String) -> String {
        "/tmp/bulkhead-\(what)-\(UInt32.random(in: 0...UInt32.max)).sock"
    }

    /// A socket bound at `path`; listening (connects succeed, nothing is ever read) or not
    /// (connects are refused, like a socket left behind by a dead dockerd).
    static func bind(_ path: String, listen: Bool) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        if listen { Glibc.listen(fd, 16) }
        return fd
    }
}

/// Accepts one connection, records the request head, writes `pieces` with a pause between them
/// (so each arrives as its own read), then closes everything.
final class ScriptedDaemon: @unchecked Sendable {
    let path = UnixSocket.temporaryPath("scripted")
    private let listener: Int32
    private let lock = NSLock()
    private var recorded = ""
    private let done = DispatchSemaphore(value: 0)
    private let released = DispatchSemaphore(value: 0)

    /// `keepListening`: after hanging up, the socket stays bound and listening until `release()`,
    /// as dockerd's does when only one connection is cut (the client then sees a cut stream, not
    /// a daemon that went away).
    init(pieces: [String], keepListening: Bool = false) throws {
        listener = try UnixSocket.bind(path, listen: true)
        let listener = self.listener
        // A plain thread, not a Task: it blocks in accept/read and must not hold a cooperative thread.
        let thread = Thread { [self] in
            defer {
                if keepListening { released.wait() }
                close(listener)
                unlink(path)
                done.signal()
            }
            var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 10_000) == 1 else { return }
            let conn = accept(listener, nil, nil)
            guard conn >= 0 else { return }
            defer { close(conn) }
            var head: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !head.ends(with: Array("\r\n\r\n".utf8)) {
                let n = read(conn, &buffer, buffer.count)
                guard n > 0 else { return }
                head += buffer[0..<n]
            }
            lock.withLock { recorded = String(decoding: head, as: UTF8.self) }
            for piece in pieces {
                _ = piece.utf8CString.withUnsafeBufferPointer { write(conn, $0.baseAddress, $0.count - 1) }
                usleep(50_000)
            }
        }
        thread.start()
    }

    /// The request head dockerd would have seen.
    var request: String { lock.withLock { recorded } }

    /// Waits for the connection to be served and closed.
    func wait() { done.wait() }

    /// Lets a `keepListening` daemon close its socket.
    func release() { released.signal() }

    /// An HTTP/1.1 chunked response carrying `chunks`, as dockerd streams `/events`.
    static func chunked(_ chunks: [String], end: Bool) -> [String] {
        ["HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"]
            + chunks.map { "\(String($0.utf8.count, radix: 16))\r\n\($0)\r\n" }
            + (end ? ["0\r\n\r\n"] : [])
    }
}

extension Array where Element: Equatable {
    func ends(with suffix: [Element]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
