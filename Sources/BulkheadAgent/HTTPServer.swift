import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The agent's HTTP endpoint: `/metrics`, `/healthz`, `/readyz`. Plain HTTP/1.1 on a loopback
/// address by default; every answer is computed by `handler` from the agent's state.
///
/// Clients of this port must never starve the agent (1,068 idle connections once used up its 1,024
/// file descriptors: `/readyz` hung, a policy reload failed, the Docker stream could not
/// reconnect). So:
/// - at most `limits.maxConnections` are open, and never more than a quarter of the process's
///   file descriptor limit, keeping the rest for netlink, Docker and policy files. At the cap a new
///   connection evicts the connection that has been idle longest (no request in progress), so a
///   probe still gets through a flood of idle sockets; when every one is mid-request, the new one
///   is closed instead;
/// - a connection with no request is closed after `idleTimeout`; a request must be complete
///   `headerTimeout` after its first byte (slowloris);
/// - a request (head and body) is at most `maxRequestBytes`; only GET and HEAD are served
///   (405 with `Allow` otherwise).
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

    public struct Limits: Sendable {
        public var maxConnections = 256
        public var idleTimeout: TimeAmount = .seconds(30)
        public var headerTimeout: TimeAmount = .seconds(10)
        /// Request line, headers and body together. Scrapes and probes send a few hundred bytes.
        public var maxRequestBytes = 16 * 1024

        public init() {}

        /// The cap actually used: `maxConnections`, but at most a quarter of RLIMIT_NOFILE.
        public var effectiveMaxConnections: Int {
            var limit = rlimit()
            guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return maxConnections }
            return max(1, min(maxConnections, Int(limit.rlim_cur / 4)))
        }
    }

    /// Why the server closed a connection (the `reason` label of `bulkhead_http_connections_closed_total`).
    public enum CloseReason: String, Sendable, CaseIterable {
        /// Evicted (the idlest) or refused (every one busy) at the connection cap.
        case evicted, refused
        case idleTimeout = "idle_timeout"
        case headerTimeout = "header_timeout"
        case tooLarge = "too_large"
        case methodNotAllowed = "method_not_allowed"
    }

    public var host: String
    public var port: Int
    public var limits: Limits
    public var handler: @Sendable (String) -> Response
    /// Called when the server closes a connection on purpose, with the reason and the number still open.
    public var onClose: @Sendable (CloseReason) -> Void
    public var onOpenCount: @Sendable (Int) -> Void

    public init(host: String, port: Int, limits: Limits = Limits(),
                onClose: @escaping @Sendable (CloseReason) -> Void = { _ in },
                onOpenCount: @escaping @Sendable (Int) -> Void = { _ in },
                handler: @escaping @Sendable (String) -> Response) {
        self.host = host
        self.port = port
        self.limits = limits
        self.onClose = onClose
        self.onOpenCount = onOpenCount
        self.handler = handler
    }

    /// Binds, calls `onBound` with the bound port (useful with port 0), and serves until the task
    /// is cancelled.
    public func run(onBound: @Sendable (Int) -> Void = { _ in }) async throws {
        let tracker = ConnectionTracker(capacity: limits.effectiveMaxConnections)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer(connectionInitializer(tracker: tracker))
            .bind(host: host, port: port).get()
        onBound(channel.localAddress?.port ?? port)
        await withTaskCancellationHandler {
            try? await channel.closeFuture.get()
        } onCancel: {
            channel.close(promise: nil)
        }
    }

    /// Installs the whole per-connection pipeline (the connection cap, the guard's timeouts and
    /// size limit, NIO's HTTP/1.1 server handlers and ours) on an accepted connection. One
    /// function for the server and for the HTTP fuzzer, which runs it on an `EmbeddedChannel`:
    /// whatever guards the real connections is what gets fuzzed. Each call has its own cap.
    public func connectionInitializer() -> @Sendable (any Channel) -> EventLoopFuture<Void> {
        connectionInitializer(tracker: ConnectionTracker(capacity: limits.effectiveMaxConnections))
    }

    func connectionInitializer(tracker: ConnectionTracker) -> @Sendable (any Channel) -> EventLoopFuture<Void> {
        let handler = self.handler
        let limits = self.limits
        let onClose = self.onClose
        let onOpenCount = self.onOpenCount
        return { channel in
            let id = ObjectIdentifier(channel)
            switch tracker.admit(id, channel) {
            case .refused:
                onClose(.refused)
                return channel.close()
            case .admitted(let evicted):
                if let evicted {
                    onClose(.evicted)
                    evicted.close(promise: nil)
                }
            }
            onOpenCount(tracker.count)
            channel.closeFuture.whenComplete { _ in
                tracker.remove(id)
                onOpenCount(tracker.count)
            }
            let guardHandler = ConnectionGuard(id: id, tracker: tracker, limits: limits, onClose: onClose)
            return channel.pipeline.addHandler(guardHandler).flatMap {
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true)
            }.flatMap {
                channel.pipeline.addHandler(RequestHandler(handler: handler, guardHandler: guardHandler, onClose: onClose))
            }
        }
    }

    /// Every open connection, and since when it has been idle (nil: a request is in progress).
    final class ConnectionTracker: Sendable {
        enum Admission { case admitted(evicted: (any Channel)?), refused }

        private struct Entry {
            var channel: any Channel
            var idleSince: NIODeadline?
        }

        let capacity: Int
        private let entries = Mutex<[ObjectIdentifier: Entry]>([:])

        init(capacity: Int) { self.capacity = capacity }

        var count: Int { entries.withLock { $0.count } }

        func admit(_ id: ObjectIdentifier, _ channel: any Channel) -> Admission {
            entries.withLock { e in
                var evicted: (any Channel)?
                if e.count >= capacity {
                    guard let idlest = e.filter({ $0.value.idleSince != nil }).min(by: { $0.value.idleSince! < $1.value.idleSince! }) else {
                        return .refused
                    }
                    e.removeValue(forKey: idlest.key)
                    evicted = idlest.value.channel
                }
                e[id] = Entry(channel: channel, idleSince: .now())
                return .admitted(evicted: evicted)
            }
        }

        func setIdle(_ id: ObjectIdentifier, _ idle: Bool) {
            entries.withLock { e in e[id]?.idleSince = idle ? .now() : nil }
        }

        func remove(_ id: ObjectIdentifier) {
            _ = entries.withLock { $0.removeValue(forKey: id) }
        }
    }

    /// First in the pipeline, on raw bytes: the idle and header deadlines, the request size limit,
    /// and the idle/busy state the tracker evicts by.
    final class ConnectionGuard: ChannelDuplexHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        typealias OutboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let id: ObjectIdentifier
        let tracker: ConnectionTracker
        let limits: Limits
        let onClose: @Sendable (CloseReason) -> Void
        /// Bytes received since the last response: nil while idle.
        private var requestBytes: Int?
        /// Over the size limit: the 413 is on its way and nothing more is read.
        private var refused = false
        private var deadline: Scheduled<Void>?
        private var context: ChannelHandlerContext?

        init(id: ObjectIdentifier, tracker: ConnectionTracker, limits: Limits, onClose: @escaping @Sendable (CloseReason) -> Void) {
            self.id = id
            self.tracker = tracker
            self.limits = limits
            self.onClose = onClose
        }

        func handlerAdded(context: ChannelHandlerContext) {
            self.context = context
            arm(limits.idleTimeout, .idleTimeout)
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            deadline?.cancel()
            self.context = nil
        }

        private func arm(_ timeout: TimeAmount, _ reason: CloseReason) {
            deadline?.cancel()
            guard let context else { return }
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            deadline = context.eventLoop.scheduleTask(in: timeout) {
                let this = loopBound.value
                guard let context = this.context else { return }
                this.onClose(reason)
                context.close(promise: nil)
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !refused else { return }
            let buffer = unwrapInboundIn(data)
            if requestBytes == nil {
                requestBytes = 0
                tracker.setIdle(id, false)
                arm(limits.headerTimeout, .headerTimeout)
            }
            requestBytes! += buffer.readableBytes
            if requestBytes! > limits.maxRequestBytes {
                refused = true
                deadline?.cancel()
                onClose(.tooLarge)
                let answer = "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: answer))).whenComplete { _ in
                    context.close(promise: nil)
                }
                return
            }
            context.fireChannelRead(data)
        }

        /// The whole request has arrived: no deadline while the answer is computed and written.
        func requestComplete() {
            deadline?.cancel()
            deadline = nil
        }

        /// The response is written: the connection is idle again (keep-alive).
        func responseSent() {
            requestBytes = nil
            tracker.setIdle(id, true)
            arm(limits.idleTimeout, .idleTimeout)
        }
    }

    final class RequestHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let handler: @Sendable (String) -> Response
        let guardHandler: ConnectionGuard
        let onClose: @Sendable (CloseReason) -> Void
        var head: HTTPRequestHead?

        init(handler: @escaping @Sendable (String) -> Response, guardHandler: ConnectionGuard, onClose: @escaping @Sendable (CloseReason) -> Void) {
            self.handler = handler
            self.guardHandler = guardHandler
            self.onClose = onClose
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
            case .body:
                break  // bounded by the guard's request size limit, then ignored
            case .end:
                guard let head else { return }
                self.head = nil
                guardHandler.requestComplete()
                respond(to: head, context: context)
            }
        }

        private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
            var keepAlive = head.isKeepAlive
            var headers = HTTPHeaders()
            let response: Response
            switch head.method {
            case .GET, .HEAD:
                let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "/")
                response = handler(path)
            default:
                onClose(.methodNotAllowed)
                response = Response(status: .methodNotAllowed, body: "method not allowed: only GET and HEAD\n")
                headers.add(name: "Allow", value: "GET, HEAD")
                keepAlive = false
            }
            headers.add(name: "Content-Type", value: response.contentType)
            headers.add(name: "Content-Length", value: String(response.body.utf8.count))
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
            }
            let guardHandler = self.guardHandler
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if keepAlive { guardHandler.responseSent() } else { context.close(promise: nil) }
            }
        }
    }
}
