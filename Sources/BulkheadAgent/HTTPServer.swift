import NIOCore
import NIOHTTP1
import NIOPosix

/// The agent's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`. Plain HTTP/1.1 on a loopback
/// address by default; every answer is computed by `handler` from the agent's state.
public struct HTTPEndpoint: Sendable {
    public struct Response: Sendable {
        public var status: HTTPResponseStatus
        public var contentType: String
        public var body: String

        public init(status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", body: String) {
            self.status = status
            self.contentType = contentType
            self.body = body
        }
    }

    public var host: String
    public var port: Int
    public var handler: @Sendable (String) -> Response

    public init(host: String, port: Int, handler: @escaping @Sendable (String) -> Response) {
        self.host = host
        self.port = port
        self.handler = handler
    }

    /// Binds, calls `onBound` with the bound port (useful with port 0), and serves until the task
    /// is cancelled.
    public func run(onBound: @Sendable (Int) -> Void = { _ in }) async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer(connectionInitializer())
            .bind(host: host, port: port).get()
        onBound(channel.localAddress?.port ?? port)
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// Installs the whole per-connection pipeline (NIO's HTTP/1.1 server handlers and ours) on an
    /// accepted connection. One function for the server and for the HTTP fuzzer, which runs it on
    /// an `EmbeddedChannel`: whatever guards the real connections is what gets fuzzed.
    public func connectionInitializer() -> @Sendable (any Channel) -> EventLoopFuture<Void> {
        let handler = self.handler
        return { channel in
            channel.pipeline.configureHTTPServerPipeline().flatMap {
                channel.pipeline.addHandler(RequestHandler(handler: handler))
            }
        }
    }

    private final class RequestHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let handler: @Sendable (String) -> Response
        var path = "/"
        var keepAlive = false

        init(handler: @escaping @Sendable (String) -> Response) { self.handler = handler }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "/")
                keepAlive = head.isKeepAlive
            case .body:
                break
            case .end:
                let response = handler(path)
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: response.contentType)
                headers.add(name: "Content-Length", value: String(response.body.utf8.count))
                if !keepAlive { headers.add(name: "Connection", value: "close") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
                let keep = keepAlive
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                    if !keep { context.close(promise: nil) }
                }
            }
        }
    }
}
