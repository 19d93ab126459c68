import BulkheadSpawn
import BulkheadTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// External commands (`docker`, `nft`, `bash`) without blocking the Swift concurrency pool.
///
/// Why a thread per command: the agent under test runs in this process on the cooperative pool,
/// which has one thread per core (two here). `TestSystem.run` blocks in `waitUntilExit`; called
/// from a task it would pin those threads and stall the agent's reconcile loop, so every timing
/// the tests report would measure the test harness instead of the agent.
enum Command {
    struct Output: Sendable {
        var status: Int32
        var out: String
        var err: String
    }

    @discardableResult
    static func run(_ args: [String]) async throws -> Output {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Output, Error>) in
            Thread { c.resume(with: Result { try spawnAndWait(args) }) }.start()
        }
    }

    /// posix_spawn + waitpid, not Foundation's `Process`: with many processes started from
    /// several threads at once, `Process.waitUntilExit` here once never saw its child exit (the
    /// bash that ran `ensure_dockerd` stayed a zombie and the test hung). The pipes are
    /// close-on-exec so a child spawned concurrently does not hold another child's pipe open.
    private static func spawnAndWait(_ args: [String]) throws -> Output {
        var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw TestSystem.Failure("pipe: errno \(errno)") }
        // (pipe2 is not visible from Swift; the window before FD_CLOEXEC only matters to a child
        // spawned in between, which would hold the pipe until it exits.)
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // The spawning thread blocks signals (the Swift runtime's threads do); a child inherits
        // that mask, and `docker exec` with SIGCHLD blocked never returns: `Spawn` starts it clean.
        let pid: pid_t
        do {
            pid = try Spawn.start(["/usr/bin/env"] + args, stdin: .null, stdout: .descriptor(outPipe[1]), stderr: .descriptor(errPipe[1]))
        } catch {
            close(outPipe[0]); close(errPipe[0]); close(outPipe[1]); close(errPipe[1])
            throw TestSystem.Failure("\(error)")
        }
        close(outPipe[1])
        close(errPipe[1])
        // Both pipes at once, so a chatty command cannot fill one and block.
        final class Box: @unchecked Sendable { var data: [UInt8] = [] }  // written once, read after the join
        let err = Box()
        let errFD = errPipe[0]
        let done = DispatchSemaphore(value: 0)
        let reader = Thread {
            err.data = readAll(errFD)
            done.signal()
        }
        reader.start()
        let out = readAll(outPipe[0])
        done.wait()
        close(outPipe[0]); close(errPipe[0])
        let exit = Spawn.wait(pid).status
        return Output(status: exit, out: String(decoding: out, as: UTF8.self), err: String(decoding: err.data, as: UTF8.self))
    }

    private static func readAll(_ fd: Int32) -> [UInt8] {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 { data += buffer[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            return data
        }
    }

    /// Runs `args` and throws with its stderr unless it exits 0.
    @discardableResult
    static func check(_ args: [String]) async throws -> String {
        let r = try await run(args)
        guard r.status == 0 else { throw TestSystem.Failure("\(args.joined(separator: " ")) exited \(r.status): \(r.err)") }
        return r.out
    }

    /// `bash -c` with scripts/lib/docker.sh sourced (ensure_dockerd, ensure_test_image).
    @discardableResult
    static func dockerLib(_ script: String) async throws -> String {
        try await check(["bash", "-c", "source '\(TestSystem.repositoryRoot)/scripts/lib/common.sh' && source '\(TestSystem.repositoryRoot)/scripts/lib/docker.sh' && \(script)"])
    }
}

/// A plain HTTP/1.0 GET to the agent's loopback endpoint, on its own thread (blocking socket with
/// a 2 s timeout). The test target has no HTTP client, and one request needs none.
enum LoopbackHTTP {
    struct Answer: Sendable {
        var status: Int
        var body: String
    }

    static func get(port: Int, path: String) async throws -> Answer {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Answer, Error>) in
            Thread { c.resume(with: Result { try blockingGet(port: port, path: path) }) }.start()
        }
    }

    private static func blockingGet(port: Int, path: String) throws -> Answer {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSystem.Failure("socket: errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TestSystem.Failure("connect 127.0.0.1:\(port): errno \(errno)") }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { throw TestSystem.Failure("send: errno \(errno)") }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 { throw TestSystem.Failure("recv from 127.0.0.1:\(port)\(path): errno \(errno)") }
            if n == 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        // "HTTP/1.1 503 Service Unavailable"
        let statusLine = text.prefix { $0 != "\r" && $0 != "\n" }.split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
            throw TestSystem.Failure("not an HTTP answer from 127.0.0.1:\(port)\(path): \(text.prefix(200))")
        }
        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
        return Answer(status: status, body: body)
    }
}

/// Polls `condition` every `interval` for up to `seconds`; true as soon as it holds.
func eventually(_ seconds: Double, every interval: Duration = .milliseconds(20), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}

extension Duration {
    var milliseconds: Double {
        let (s, atto) = components
        return Double(s) * 1000 + Double(atto) / 1e15
    }
}

func ms(_ d: Duration) -> String { String(format: "%.0f ms", d.milliseconds) }
