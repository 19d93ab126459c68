import BulkheadAgent
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `run` serves through `connectionInitializer()`, the pipeline the HTTP fuzz target drives on an
/// EmbeddedChannel: one request over a real loopback connection proves the two are the same path.
struct HTTPInitializerTests {
    @Test func theServerAnswersThroughTheSharedInitializer() async throws {
        let endpoint = HTTPEndpoint(host: "127.0.0.1", port: 0) { path in
            HTTPEndpoint.Response(body: "path \(path)\n")
        }
        let bound = AsyncStream<Int>.makeStream()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await endpoint.run(onBound: { bound.continuation.yield($0) }) }
            var ports = bound.stream.makeAsyncIterator()
            let port = try #require(await ports.next())
            let answer = try await Task.detached { try Self.get("/healthz?x=1", port: port) }.value
            #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(answer.hasSuffix("\r\n\r\npath /healthz\n"))
            group.cancelAll()
        }
    }

    /// One HTTP/1.0 request with a blocking socket (off the cooperative pool); the server closes.
    static func get(_ path: String, port: Int) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure.socket(errno) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw Failure.socket(errno) }
        let request = Array("GET \(path) HTTP/1.0\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { throw Failure.socket(errno) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 { throw Failure.socket(errno) }
            if n == 0 { break }
            out += buffer[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    enum Failure: Error { case socket(Int32) }
}
