import BulkheadAgent
import BulkheadDocker
import BulkheadEngine
import BulkheadRuleset
import BulkheadTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// A blocking TCP client on loopback, with a receive timeout as the hang guard.
final class LoopbackClient {
    let fd: Int32

    init?(port: Int, receiveTimeout seconds: Int = 10) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); return nil }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        self.fd = fd
    }

    deinit { close(fd) }

    @discardableResult
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Everything until the server closes (or the receive timeout: nil).
    func readToEnd() -> String? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return String(decoding: out, as: UTF8.self) }
            if n < 0 { return errno == ECONNRESET ? String(decoding: out, as: UTF8.self) : nil }
            out += buffer[0..<n]
        }
    }

    /// True when the server has closed the connection (EOF or reset is readable now).
    func closedByServer(waitingMilliseconds: Int32 = 0) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, waitingMilliseconds) == 1 else { return false }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }
}

/// One request with `Connection: close`; the whole answer, or nil when none came within the guard.
func request(_ port: Int, _ path: String, method: String = "GET") -> String? {
    guard let c = LoopbackClient(port: port) else { return nil }
    c.send("\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    return c.readToEnd()
}

final class PortBox: Sendable {
    private let port = Mutex<Int?>(nil)
    func set(_ p: Int) { port.withLock { $0 = p } }
    var value: Int? { port.withLock { $0 } }
}

/// Raises this process's soft RLIMIT_NOFILE to at least `n` (within the hard limit).
func raiseFileLimit(to n: rlim_t) throws {
    var limit = rlimit()
    #expect(getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
    guard limit.rlim_cur < n else { return }
    guard limit.rlim_max >= n else { throw TestSystem.Failure("RLIMIT_NOFILE hard limit \(limit.rlim_max) is under \(n)") }
    limit.rlim_cur = n
    #expect(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0)
}

@Suite(.serialized) struct AgentHTTPPort {
    /// 1,068 idle connections once used up the agent's 1,024 file descriptors. Now: the ones past
    /// the cap are closed, /readyz answers, a policy reload still works.
    @Test func idleConnectionFloodDoesNotStarveTheAgent() async throws {
        try raiseFileLimit(to: 4096)
        let dir = try PolicyDir()
        let backend = FakeNetfilter()
        let inventory = try exampleInventory()
        let source = FakeContainerSource(inventory: inventory)
        let port = PortBox()
        try await withAgent(dir, backend: backend, source: source, configure: { c in
            c.http.maxConnections = 64
            c.http.idleTimeout = .seconds(3600)  // only the cap may close them
        }, onListening: { port.set($0) }) { agent in
            #expect(await eventually { agent.isReady && port.value != nil })
            let p = try #require(port.value)
            var idle: [LoopbackClient] = []
            for _ in 0..<1100 {
                guard let c = LoopbackClient(port: p) else { break }
                idle.append(c)
            }
            #expect(idle.count == 1100, "connect failed after \(idle.count) connections")
            // Past the cap, the idlest connections are closed.
            #expect(await eventually(30) { idle.filter { $0.closedByServer() }.count >= 1100 - 64 })
            #expect(agent.metrics.value("bulkhead_http_connections") ?? 0 <= 64)
            #expect(agent.metrics.value("bulkhead_http_connections_closed_total", labels: ["reason": "evicted"]) ?? 0 >= 1100 - 64)
            // /readyz answers through the flood (the guard is the client's 10 s receive timeout).
            let ready = try #require(request(p, "/readyz"), "/readyz did not answer")
            #expect(ready.hasPrefix("HTTP/1.1 200 OK"))
            #expect(ready.hasSuffix("ready\n"))
            // A policy edit is read and enforced.
            let good = try dir.read("shop.yaml")
            try dir.write("shop.yaml", good.replacingOccurrences(of: "ports: [tcp/5432]", with: "ports: [tcp/5433]"))
            #expect(await eventually { inSync(backend, dir, inventory) })
            // The start-up load and at least one for the edit: under load the watcher may see one
            // rename as two changes and load the same good files twice, which is harmless. What
            // must not happen is a failed reload.
            #expect((agent.metrics.value("bulkhead_policy_reloads_total", labels: ["result": "loaded"]) ?? 0) >= 2)
            #expect((agent.metrics.value("bulkhead_policy_reloads_total", labels: ["result": "invalid"]) ?? 0) == 0)
            withExtendedLifetime(idle) {}
        }
    }

    /// Slowloris: a request whose head never completes is cut off after the header timeout, even
    /// though bytes keep arriving (so the idle timeout never fires).
    @Test func slowlorisIsDisconnectedAfterTheHeaderTimeout() async throws {
        let dir = try PolicyDir()
        let port = PortBox()
        try await withAgent(dir, backend: FakeNetfilter(), source: FakeContainerSource(inventory: try exampleInventory()), configure: { c in
            c.http.headerTimeout = .milliseconds(300)
            c.http.idleTimeout = .seconds(3600)
        }, onListening: { port.set($0) }) { agent in
            #expect(await eventually { port.value != nil })
            let p = try #require(port.value)
            let c = try #require(LoopbackClient(port: p))
            c.send("GET /readyz HTTP/1.1\r\nHost: localhost\r\n")
            var closed = false
            // One header byte every 100 ms, for at most 10 s (the hang guard).
            for _ in 0..<100 where !closed {
                closed = c.closedByServer(waitingMilliseconds: 100) || !c.send("X")
            }
            #expect(closed, "the server kept a request open for 10 s with no complete head")
            #expect(await eventually { agent.metrics.value("bulkhead_http_connections_closed_total", labels: ["reason": "header_timeout"]) == 1 })
        }
    }

    @Test func idleConnectionIsClosedAfterTheIdleTimeout() async throws {
        let dir = try PolicyDir()
        let port = PortBox()
        try await withAgent(dir, backend: FakeNetfilter(), source: FakeContainerSource(inventory: try exampleInventory()), configure: { c in
            c.http.idleTimeout = .milliseconds(200)
        }, onListening: { port.set($0) }) { agent in
            #expect(await eventually { port.value != nil })
            let p = try #require(port.value)
            let c = try #require(LoopbackClient(port: p))
            #expect(c.readToEnd() == "", "an idle connection stays open")
            #expect(agent.metrics.value("bulkhead_http_connections_closed_total", labels: ["reason": "idle_timeout"]) == 1)
        }
    }

    @Test func onlyGetAndHead() async throws {
        let dir = try PolicyDir()
        let port = PortBox()
        try await withAgent(dir, backend: FakeNetfilter(), source: FakeContainerSource(inventory: try exampleInventory()),
                            onListening: { port.set($0) }) { agent in
            #expect(await eventually { agent.isReady && port.value != nil })
            let p = try #require(port.value)
            for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
                let answer = try #require(request(p, "/readyz", method: method))
                #expect(answer.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"), "\(method): \(answer)")
                #expect(answer.lowercased().contains("\r\nallow: get, head\r\n"))
            }
            let head = try #require(request(p, "/readyz", method: "HEAD"))
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(head.hasSuffix("\r\n\r\n"), "HEAD has no body")
            #expect(try #require(request(p, "/healthz")).hasSuffix("\r\n\r\nok\n"))
        }
    }

    @Test func oversizedRequestIsRefused() async throws {
        let dir = try PolicyDir()
        let port = PortBox()
        try await withAgent(dir, backend: FakeNetfilter(), source: FakeContainerSource(inventory: try exampleInventory()),
                            onListening: { port.set($0) }) { agent in
            #expect(await eventually { port.value != nil })
            let p = try #require(port.value)
            let c = try #require(LoopbackClient(port: p))
            c.send("GET /readyz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + String(repeating: "a", count: 20_000) + "\r\n\r\n")
            let answer = try #require(c.readToEnd())
            #expect(answer.hasPrefix("HTTP/1.1 413 "))
            #expect(agent.metrics.value("bulkhead_http_connections_closed_total", labels: ["reason": "too_large"]) == 1)
        }
    }

    /// Every metric of the README's table is served, with its documented labels.
    @Test func documentedMetricsAreServed() async throws {
        let readme = try String(contentsOfFile: TestSystem.repositoryRoot + "/README.md", encoding: .utf8)
        let documented: [(name: String, label: String?)] = readme.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("| `bulkhead_") else { return nil }
            let cell = line.dropFirst(3).prefix { $0 != "`" }
            let parts = cell.split(separator: "{")
            return (String(parts[0]), parts.count > 1 ? String(parts[1].dropLast()) : nil)
        }
        #expect(documented.count >= 11)
        let dir = try PolicyDir()
        let port = PortBox()
        try await withAgent(dir, backend: FakeNetfilter(), source: FakeContainerSource(inventory: try exampleInventory()),
                            onListening: { port.set($0) }) { agent in
            #expect(await eventually { agent.isReady && port.value != nil })
            let p = try #require(port.value)
            let answer = try #require(request(p, "/metrics"))
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(answer.contains("Content-Type: text/plain; version=0.0.4"))
            let lines = answer.components(separatedBy: "\r\n\r\n").last!.split(separator: "\n").map(String.init)
            for (name, label) in documented {
                #expect(lines.contains { $0.hasPrefix("# TYPE \(name) ") }, "no TYPE line for \(name)")
                let samples = lines.filter { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") || $0.hasPrefix(name + "_bucket{") }
                #expect(!samples.isEmpty, "no sample of \(name)")
                if let label { #expect(samples.contains { $0.hasPrefix("\(name){\(label)=\"") }, "\(name) has no \(label) label: \(samples)") }
            }
        }
    }

    /// `systemd-analyze verify` accepts the shipped unit (with this build's binary in ExecStart),
    /// and the unit raises the file descriptor limit.
    @Test func systemdUnitVerifies() throws {
        let unit = try String(contentsOfFile: TestSystem.repositoryRoot + "/scripts/bulkhead-agent.service", encoding: .utf8)
        #expect(unit.contains("\nLimitNOFILE=65536\n"))
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else {
            #expect(!TestSystem.inCI, "systemd-analyze is missing (package systemd)")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-unit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try unit.replacingOccurrences(of: "/usr/local/bin/bulkhead", with: "/bin/true")
            .write(toFile: dir + "/bulkhead-agent.service", atomically: true, encoding: .utf8)
        let r = try TestSystem.run(["systemd-analyze", "verify", dir + "/bulkhead-agent.service"])
        #expect(r.status == 0, "\(r.err)")
        #expect(!r.err.contains("bulkhead-agent.service:"), "\(r.err)")
    }
}
