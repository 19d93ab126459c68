import BulkheadAgent
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// Bytes from a client of the agent's port, through the very pipeline `HTTPEndpoint.run` installs
/// on each connection, on an `EmbeddedChannel` (no socket, no threads: thousands of requests a
/// second). The input is cut into reads at a size taken from its length, as TCP may deliver it.
enum HTTPFuzz {
    static let endpoint = HTTPEndpoint(host: "127.0.0.1", port: 0) { path in
        switch path {
        case "/metrics": HTTPEndpoint.Response(contentType: "text/plain; version=0.0.4", body: "bulkhead_up 1\n")
        case "/healthz", "/readyz": HTTPEndpoint.Response(body: "ok\n")
        default: HTTPEndpoint.Response(status: .notFound, body: "not found\n")
        }
    }
    static let initializer = endpoint.connectionInitializer()

    static func run(_ bytes: [UInt8]) {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        guard (try? initializer(channel).wait()) != nil else { return }
        _ = try? channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        let step = 1 + bytes.count % 61
        var start = 0
        while start < bytes.count, channel.isActive {
            let end = min(start + step, bytes.count)
            // A parse error is the pipeline's answer to bad bytes (it closes): not a finding.
            guard (try? channel.writeInbound(channel.allocator.buffer(bytes: bytes[start..<end]))) != nil else { break }
            while (try? channel.readOutbound(as: IOData.self)) != nil {}
            start = end
        }
        channel.embeddedEventLoop.run()
        while (try? channel.readOutbound(as: IOData.self)) != nil {}
    }
}
