import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A unix-socket HTTP proxy in front of a Docker socket that injects the faults a loaded or
/// broken dockerd shows: slow answers, answers that never come, error statuses, bodies cut short,
/// and an event stream cut in the middle of an event.
///
/// Every request goes upstream on its own connection with `Connection: close`, so the proxy frames
/// nothing: an answer is everything upstream sends until it hangs up (the client's connection is
/// closed after it too). Threads, not tasks: it blocks in poll/read and must never hold a thread of
/// the cooperative pool the code under test runs on.
///
/// ```swift
/// let proxy = try FaultProxy(upstream: "/var/run/docker.sock")
/// proxy.inject(.status(500), on: "/containers/json", times: 3)
/// let docker = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path))
/// ```
public final class FaultProxy: @unchecked Sendable {
    public enum Fault: Sendable, Equatable, CustomStringConvertible {
        /// Relay upstream's answer only after this long (the request reaches dockerd at once, so the
        /// answer describes the moment it was asked, like a list that is slow to come back).
        case delay(milliseconds: Int)
        /// Send the request upstream but never relay an answer (until the client gives up).
        case hang
        /// Like `delay`, but until `release()` is called.
        case hold
        /// Answer this status with a Docker-style `{"message": …}` body, without asking upstream.
        case status(Int)
        /// Relay the head and the first half of the body, then hang up.
        case truncate

        public var description: String {
            switch self {
            case .delay(let ms): return "delay \(ms) ms"
            case .hang: return "hang"
            case .hold: return "hold until released"
            case .status(let s): return "HTTP \(s)"
            case .truncate: return "truncated body"
            }
        }
    }

    public let path: String
    public let upstream: String

    private let lock = NSLock()
    private var rules: [(prefix: String, fault: Fault, remaining: Int)] = []
    private var cutArmed = false
    private var released = 0
    private var stopped = false
    private var counts: [String: Int] = [:]
    private var seenTargets: [String] = []
    private var faultsServed: [String] = []
    private var cleanAnswers: [(path: String, at: ContinuousClock.Instant)] = []
    private var openEventStreams = 0
    private var listener: Int32 = -1
    private var threads = 0
    private let idle = NSCondition()

    public init(upstream: String) throws {
        self.upstream = upstream
        path = "/tmp/bulkhead-faultproxy-\(UInt32.random(in: 0...UInt32.max)).sock"
        listener = try Self.listen(path)
        spawn { [self] in acceptLoop() }
    }

    deinit { stop() }

    // MARK: Scripting

    /// The next `times` requests whose path starts with `prefix` get `fault` (earlier injections first).
    public func inject(_ fault: Fault, on prefix: String, times: Int = 1) {
        lock.withLock { rules.append((prefix, fault, times)) }
    }

    /// Cuts every open event stream at the next event Docker sends on it: the client gets half of
    /// that event and then the connection closes (the event is lost to it).
    public func cutEventStreamsAtNextEvent() {
        lock.withLock { cutArmed = true }
    }

    /// Lets every `hold` answer through.
    public func release() {
        lock.withLock { released += 1 }
    }

    /// Requests seen per path (without the query).
    public func requests(_ path: String) -> Int { lock.withLock { counts[path, default: 0] } }
    /// Every request target (path and query, percent-decoded), in order.
    public var targets: [String] { lock.withLock { seenTargets } }
    /// "GET /containers/json: HTTP 500", in the order the faults were served.
    public var faultLog: [String] { lock.withLock { faultsServed } }
    /// When the first answer to `path` without a fault was relayed after every injected fault had
    /// been served: the moment "Docker answers again".
    public func firstCleanAnswer(to path: String, after: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        lock.withLock { cleanAnswers.first { $0.path == path && $0.at >= after }?.at }
    }

    /// Whether every injected fault has been used up.
    public var injectionsDone: Bool { lock.withLock { rules.allSatisfy { $0.remaining == 0 } } }
    /// Event streams currently relayed.
    public var eventStreams: Int { lock.withLock { openEventStreams } }
    public var cutPending: Bool { lock.withLock { cutArmed } }

    /// Stops accepting, closes every connection and waits for the proxy's threads to end.
    public func stop() {
        let fd: Int32 = lock.withLock {
            if stopped { return -1 }
            stopped = true
            let fd = listener
            listener = -1
            return fd
        }
        guard fd >= 0 else { return }
        unlink(path)
        idle.lock()
        while lock.withLock({ threads }) > 0 { idle.wait(until: Date().addingTimeInterval(0.05)) }
        idle.unlock()
        close(fd)
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    // MARK: Serving

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        lock.withLock { threads += 1 }
        let thread = Thread { [self] in
            body()
            lock.withLock { threads -= 1 }
            idle.lock(); idle.broadcast(); idle.unlock()
        }
        thread.start()
    }

    private func acceptLoop() {
        let fd = lock.withLock { listener }
        while !isStopped {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) == 1 else { continue }
            let conn = accept(fd, nil, nil)
            guard conn >= 0 else { continue }
            spawn { [self] in
                serve(conn)
                close(conn)
            }
        }
    }

    /// One client connection: one request, one answer, then close.
    private func serve(_ client: Int32) {
        guard var head = readHead(client) else { return }
        let line = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let target = line.split(separator: " ").dropFirst().first.map(String.init) ?? "/"
        let path = String(target.split(separator: "?", maxSplits: 1).first ?? "")
        let fault: Fault? = lock.withLock {
            counts[path, default: 0] += 1
            seenTargets.append(target.removingPercentEncoding ?? target)
            guard let i = rules.firstIndex(where: { $0.remaining > 0 && path.hasPrefix($0.prefix) }) else { return nil }
            rules[i].remaining -= 1
            faultsServed.append("GET \(path): \(rules[i].fault)")
            return rules[i].fault
        }
        if case .status(let status) = fault {
            let body = #"{"message":"injected by the test's fault proxy"}"#
            writeAll(client, Array("HTTP/1.1 \(status) Injected\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8))
            return
        }
        // One upstream connection per request, closed by upstream after its answer.
        head = head.replacingOccurrences(of: "\r\n\r\n", with: "\r\nConnection: close\r\n\r\n")
            .replacingOccurrences(of: "\r\nconnection: keep-alive", with: "", options: .caseInsensitive)
        guard let up = try? Self.connect(upstream) else { return }
        defer { close(up) }
        writeAll(up, Array(head.utf8))
        if path.hasSuffix("/events") && fault == nil {
            relayStream(from: up, to: client)
            return
        }
        switch fault {
        case .hang?:
            waitForHangUp(client)
            return
        default:
            break
        }
        let answer = readToEnd(up)
        switch fault {
        case .delay(let ms)?:
            let until = Date().addingTimeInterval(Double(ms) / 1000)
            while Date() < until, !isStopped { usleep(10_000) }
        case .hold?:
            let seen = lock.withLock { released }
            while lock.withLock({ released }) == seen, !isStopped { usleep(10_000) }
        case .truncate?:
            let split = Self.headEnd(answer) ?? 0
            writeAll(client, Array(answer[..<(split + (answer.count - split) / 2)]))
            return
        default:
            break
        }
        if !isStopped {
            writeAll(client, answer)
            if fault == nil { lock.withLock { cleanAnswers.append((path, ContinuousClock.now)) } }
        }
    }

    /// Relays an event stream until either side hangs up, or cuts it mid-event when armed.
    private func relayStream(from up: Int32, to client: Int32) {
        lock.withLock { openEventStreams += 1 }
        defer { lock.withLock { openEventStreams -= 1 } }
        var headDone = false
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !isStopped {
            var fds = [pollfd(fd: up, events: Int16(POLLIN), revents: 0), pollfd(fd: client, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, 50) > 0 else { continue }
            if fds[1].revents != 0 {
                // The client sends nothing after its request: readable means it hung up.
                if read(client, &buffer, buffer.count) <= 0 { return }
            }
            guard fds[0].revents != 0 else { continue }
            let n = read(up, &buffer, buffer.count)
            guard n > 0 else { return }
            var bytes = Array(buffer[0..<n])
            if !headDone {
                pending += bytes
                guard let end = Self.headEnd(pending) else { continue }
                writeAll(client, Array(pending[..<end]))
                bytes = Array(pending[end...])
                headDone = true
                if bytes.isEmpty { continue }
            }
            if lock.withLock({ cutArmed }) {
                lock.withLock { cutArmed = false; faultsServed.append("GET /events: cut mid-event") }
                // Cut inside the first event of what arrived: under load dockerd sends several in
                // one read, and half of all of them can hold the first one whole.
                var cut = max(1, bytes.count / 2)
                if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
                   let end = bytes[open...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes[open...].firstIndex(of: UInt8(ascii: "}")) {
                    cut = open + max(1, (end - open) / 2)
                }
                writeAll(client, Array(bytes[..<cut]))
                return
            }
            writeAll(client, bytes)
        }
    }

    private func waitForHangUp(_ client: Int32) {
        var byte: UInt8 = 0
        while !isStopped {
            var p = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) == 1 else { continue }
            if read(client, &byte, 1) <= 0 { return }
        }
    }

    private func readHead(_ fd: Int32) -> String? {
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(10)
        while Self.headEnd(head) == nil {
            if isStopped || Date() > deadline || head.count > 65536 { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) == 1 else { continue }
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { return nil }
            head += buffer[0..<n]
        }
        return String(decoding: head, as: UTF8.self)
    }

    private func readToEnd(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !isStopped {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) == 1 else { continue }
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            out += buffer[0..<n]
        }
        return out
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return }
            offset += n
        }
    }

    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i + 4
        }
        return nil
    }

    // MARK: Sockets

    private static func address(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.prefix(raw.count - 1).enumerated() { raw[i] = b }
            raw[min(bytes.count, raw.count - 1)] = 0
        }
        return address
    }

    static func listen(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var a = address(path)
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0, Glibc.listen(fd, 64) == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return fd
    }

    static func connect(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var a = address(path)
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return fd
    }
}
