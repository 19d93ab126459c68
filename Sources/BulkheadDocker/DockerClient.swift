// Docker Engine API client over the daemon's unix socket.
//
// Event stream contract (see `ContainerSource`): `events(since:)` follows `GET /events` for
// container create/start/die/destroy and network connect/disconnect and yields them in Docker's
// order. It only ever ends by throwing — `DockerClientError.eventStreamEnded` when dockerd closes the
// stream (it stops or restarts), or the transport error — unless the consuming task is cancelled.
// Events that happen while no stream is open are lost: after any error the caller reconnects and
// re-lists with `inventory()`. Passing `since:` replays what dockerd still holds (it keeps the last
// 256 events), which narrows but never closes the gap, so the re-list is not optional.
//
// Ordering observed on dockerd 20.10 for `docker run`: container create, network connect (the
// address is assigned by then), container start; for `docker rm -f`: die, network disconnect,
// destroy. A container is classifiable at `connect`, before its first instruction runs — but only
// through the network: at `connect`, `GET /containers/json` still lists the container as `created`
// with empty addresses (dockerd updates that view when start completes, ~50–700 ms later here) and
// `GET /containers/{id}/json` blocks on the container's lock until start is done, while
// `GET /networks/{id}` already holds the endpoint with both addresses. So `inventory()` fills a
// listed container's missing addresses from the inspect of its networks.

import AsyncHTTPClient
import BulkheadInventory
import BulkheadSource
import Foundation
import NIOHTTP1

/// Talks to dockerd over its unix socket with AsyncHTTPClient (`http+unix`).
///
/// ```swift
/// let docker = try DockerClient(endpoint: "unix:///var/run/docker.sock")
/// try await docker.ping()
/// let inventory = try await docker.inventory()
/// print(InventorySnapshot.render(inventory))
/// for try await event in docker.events(since: nil) { print(event) }
/// ```
public struct DockerClient: ContainerSource, Sendable {
    public let endpoint: DockerEndpoint
    /// Bound on each request (connect, answer and body); the event stream is bounded only until
    /// its headers arrive, then it may idle for as long as Docker has nothing to say.
    public var requestTimeout: Duration
    private let http: HTTPClient

    /// One process-wide HTTP client for every `DockerClient`, never shut down (like
    /// `HTTPClient.shared`), so a client value can be copied and dropped freely.
    ///
    /// Why not `HTTPClient.shared`: its 90 s read timeout would cut an idle event stream, its
    /// connection retries would turn "no socket" into a 90 s wait, and it follows redirects.
    public static let sharedHTTPClient: HTTPClient = {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(5), read: nil),
            decompression: .disabled
        )
        // A missing or refused socket is an answer, not a flake: fail now and let the caller's
        // backoff decide when to try again.
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// Largest list body accepted: thousands of containers fit in a few MB.
    static let maximumBody = 64 << 20

    public init(endpoint: DockerEndpoint = DockerEndpoint(), requestTimeout: Duration = .seconds(10), httpClient: HTTPClient = DockerClient.sharedHTTPClient) {
        self.endpoint = endpoint
        self.requestTimeout = requestTimeout
        self.http = httpClient
    }

    /// `endpoint` is `unix:///path` or a socket path (what `--docker` takes).
    public init(endpoint: String, requestTimeout: Duration = .seconds(10)) throws(DockerClientError) {
        self.init(endpoint: try DockerEndpoint(parsing: endpoint), requestTimeout: requestTimeout)
    }

    // MARK: Requests

    /// `GET /_ping`: succeeds when dockerd answers.
    public func ping() async throws(DockerClientError) {
        _ = try await get("/_ping")
    }

    /// `GET /version`.
    public func version() async throws(DockerClientError) -> DockerVersion {
        try await get("/version", as: DockerVersion.self)
    }

    /// `GET /networks`: every network, sorted by name.
    public func networks() async throws(DockerClientError) -> [DockerNetwork] {
        try await get("/networks", as: [WireNetwork].self).map(\.model).sorted { ($0.name, $0.id) < ($1.name, $1.id) }
    }

    /// `GET /containers/json`: the containers that hold or are about to hold addresses — created,
    /// running, paused and restarting ones — sorted by name. Exited and dead containers have no
    /// addresses and are left out. A created container that never started lists its networks with
    /// no address yet.
    public func containers() async throws(DockerClientError) -> [DockerContainer] {
        let filters = #"{"status":["created","running","paused","restarting"]}"#
        return try await get("/containers/json", query: [("all", "1"), ("filters", filters)], as: [WireContainer].self)
            .map(\.model).sorted { ($0.name, $0.id) < ($1.name, $1.id) }
    }

    /// `GET /networks/{id}`: the endpoints dockerd has allocated on the network, by container id.
    /// Unlike the container list, this holds a starting container's addresses from its `connect`
    /// event on. Nil when the network no longer exists.
    public func endpoints(onNetwork id: String) async throws(DockerClientError) -> [String: DockerContainer.Endpoint]? {
        do {
            let inspect = try await get("/networks/\(id)", as: WireNetworkInspect.self)
            return (inspect.containers ?? [:]).mapValues { $0.endpoint(networkID: inspect.id) }
        } catch .api(_, 404, _) {
            return nil
        }
    }

    /// `GET /containers/{id}/json`: the container's network namespace — `SandboxKey` (Docker
    /// creates it before the container starts), else `/proc/PID/ns/net` of a running container.
    /// Nil when the container is gone or has neither. The id is percent-encoded into the path.
    public func networkNamespace(ofContainer id: String) async throws(DockerClientError) -> String? {
        let inspect: WireContainerInspect
        do {
            inspect = try await get("/containers/\(Self.percentEncode(id))/json", as: WireContainerInspect.self)
        } catch .api(_, 404, _) {
            return nil
        }
        if let key = inspect.networkSettings?.sandboxKey, key.hasPrefix("/"), !key.contains("/../") { return key }
        if let pid = inspect.state?.pid, pid > 0 { return "/proc/\(pid)/ns/net" }
        return nil
    }

    /// One live container as `inventory()` would list it: the per-event read (`ContainerSource`).
    /// Nil when the container is gone or no longer live (exited, dead).
    ///
    /// `GET /containers/json` filtered to this one id, not `GET /containers/{id}/json`: the inspect
    /// waits for the container's lock, held until `start` completes — measured here, 515 ms after
    /// the `connect` event, by which time the container's process runs — while the filtered list
    /// answers at once from dockerd's view. At `connect` that view has no address yet, so the
    /// addresses come from the inspect of the container's unaddressed networks, as in `inventory()`.
    public func container(id: String) async throws(DockerClientError) -> Container? {
        struct Filters: Encodable { var id: [String]; var status: [String] }
        let filters = String(decoding: (try? JSONEncoder().encode(Filters(id: [id], status: ["created", "running", "paused", "restarting"]))) ?? Data(), as: UTF8.self)
        // Docker matches ids by prefix: keep the exact one.
        guard let listed = try await get("/containers/json", query: [("all", "1"), ("filters", filters)], as: [WireContainer].self)
            .map(\.model).first(where: { $0.id == id }) else { return nil }
        var endpoints: [String: [String: DockerContainer.Endpoint]] = [:]
        for (name, endpoint) in listed.networks.sorted(by: { $0.key < $1.key }) where endpoint.ipv4 == nil && endpoint.ipv6 == nil {
            // Docker takes a network's name where it takes its id.
            endpoints[name] = try await self.endpoints(onNetwork: endpoint.networkID ?? name)
        }
        return DockerInventory.make(networks: [], containers: [listed], endpoints: endpoints).containers.first
    }

    /// Networks and live containers as an `Inventory` (see `DockerInventory.make` for gateways).
    public func inventory() async throws(DockerClientError) -> Inventory {
        // Containers first: a network created in between then appears (empty) rather than a
        // container whose network is missing from the list.
        let containers = try await containers()
        let networks = try await networks()
        // A container between `connect` and the end of `start` lists no address (see the top of
        // this file); its networks' inspect has it. Steady state (all started) needs no extra call.
        let unaddressed = Set(containers.flatMap { c in c.networks.filter { $0.value.ipv4 == nil && $0.value.ipv6 == nil }.keys })
        var endpoints: [String: [String: DockerContainer.Endpoint]] = [:]
        for network in networks where unaddressed.contains(network.name) {
            endpoints[network.name] = try await self.endpoints(onNetwork: network.id)
        }
        return DockerInventory.make(networks: networks, containers: containers, endpoints: endpoints)
    }

    // MARK: Events

    /// Follows `GET /events` (see the contract at the top of this file).
    ///
    /// - Parameter since: replay events from this time on (dockerd keeps only its last 256).
    public func events(since: Date?) -> AsyncThrowingStream<DockerEvent, Error> {
        let reader = EventReader(client: self, since: since)
        // `unfolding` runs each step in the consumer's own task: no task of our own to leak, and
        // cancelling the consumer cancels the HTTP request.
        return AsyncThrowingStream(unfolding: { try await reader.next() })
    }

    /// The followed events as `SourceEvent`s (`ContainerSource`): replayed from a second before the
    /// subscription (what a snapshot taken right after may already hold is read again, harmlessly).
    public func events() -> AsyncThrowingStream<SourceEvent, Error> {
        let docker = events(since: Date().addingTimeInterval(-1))
        let iterator = SendableIterator(docker.makeAsyncIterator())
        return AsyncThrowingStream(unfolding: { try await iterator.next().map(\.sourceEvent) })
    }

    /// `AsyncThrowingStream(unfolding:)` calls `next()` once at a time from its single consumer.
    private final class SendableIterator: @unchecked Sendable {
        var base: AsyncThrowingStream<DockerEvent, Error>.AsyncIterator
        init(_ base: AsyncThrowingStream<DockerEvent, Error>.AsyncIterator) { self.base = base }
        func next() async throws -> DockerEvent? { try await base.next() }
    }

    // MARK: ContainerSource

    public func snapshot() async throws -> Inventory { try await inventory() }

    public func inspect(id: String) async throws -> Container? { try await container(id: id) }

    public func outageDescription(_ error: (any Error)?) -> String {
        "Docker is unreachable (the last rules stay enforced)"
    }

    /// The query that asks dockerd for the followed events only.
    static func eventQuery(since: Date?) -> [(String, String)] {
        let filters = #"{"type":["container","network"],"event":["create","start","die","destroy","connect","disconnect"]}"#
        var query = [("filters", filters)]
        if let since {
            // Seconds and nanoseconds apart: a Double of nanoseconds since 1970 loses the last digits.
            let t = since.timeIntervalSince1970
            var seconds = Int64(t.rounded(.down))
            var nanos = Int64(((t - Double(seconds)) * 1e9).rounded())
            if nanos >= 1_000_000_000 { seconds += 1; nanos -= 1_000_000_000 }
            let fraction = String(nanos)
            query.append(("since", "\(seconds).\(String(repeating: "0", count: 9 - fraction.count))\(fraction)"))
        }
        return query
    }

    /// Holds the open events response between steps of the stream.
    ///
    /// `@unchecked Sendable`: `AsyncThrowingStream(unfolding:)` calls `next()` once at a time from
    /// the single consumer, so the state is never touched concurrently.
    private final class EventReader: @unchecked Sendable {
        let client: DockerClient
        let since: Date?
        var body: HTTPClientResponse.Body.AsyncIterator?
        var decoder = DockerEventDecoder()
        var ready: [DockerEvent] = []
        var ended = false

        init(client: DockerClient, since: Date?) {
            self.client = client
            self.since = since
        }

        func next() async throws -> DockerEvent? {
            while ready.isEmpty {
                if ended || Task.isCancelled { return nil }
                if body == nil {
                    do {
                        // Bounded until the answer's head (and an error status's body) is in;
                        // after that the stream may idle as long as Docker has nothing to say.
                        let query = DockerClient.eventQuery(since: since), client = self.client
                        let response = try await client.bounded("GET /events") { try await client.send("/events", query: query, streaming: true) }
                        body = response.body.makeAsyncIterator()
                    } catch {
                        ended = true
                        // Cancelled while waiting for the answer: the consumer left, not dockerd.
                        if Task.isCancelled { return nil }
                        throw error
                    }
                }
                let chunk: [UInt8]?
                do {
                    chunk = try await body?.next().map { Array($0.readableBytesView) }
                } catch {
                    end()
                    if Task.isCancelled { return nil }
                    throw client.mapError(error, request: "GET /events")
                }
                guard let chunk else {
                    end()
                    if Task.isCancelled { return nil }
                    throw DockerClientError.eventStreamEnded(path: client.endpoint.socketPath)
                }
                do {
                    ready = try decoder.feed(chunk)
                } catch {
                    // Whatever follows garbage cannot be trusted either: drop the connection now
                    // rather than when the stream value happens to be released.
                    end()
                    throw error
                }
            }
            return ready.removeFirst()
        }

        /// No more events from this stream: a half-read event is dropped with the connection.
        private func end() {
            ended = true
            body = nil
        }
    }

    // MARK: HTTP

    func get<T: Decodable>(_ path: String, query: [(String, String)] = [], as type: T.Type) async throws(DockerClientError) -> T {
        let body = try await get(path, query: query)
        do {
            return try JSONDecoder().decode(T.self, from: Data(body))
        } catch {
            throw .malformedResponse(request: "GET \(path)", detail: "\(error)")
        }
    }

    /// The body of a 2xx answer, within `requestTimeout`.
    func get(_ path: String, query: [(String, String)] = []) async throws(DockerClientError) -> [UInt8] {
        try await bounded("GET \(path)") {
            let response = try await self.send(path, query: query, streaming: false)
            let buffer = try await response.body.collect(upTo: Self.maximumBody)
            return Array(buffer.readableBytesView)
        }
    }

    /// Runs `work` (one request: connect, head, body) within `requestTimeout`.
    ///
    /// AsyncHTTPClient's own deadline stops at the response head: a body that stalls half-way
    /// (dockerd wedged mid-answer, a proxy that hangs) would otherwise hold the caller forever.
    /// The request is cancelled at the deadline, which closes its connection, so a late answer
    /// can never be read by the next request on a reused connection.
    func bounded<T: Sendable>(_ request: String, _ work: @escaping @Sendable () async throws -> T) async throws(DockerClientError) -> T {
        let result: Result<T, DockerClientError>? = await withTaskGroup(of: Result<T, DockerClientError>?.self) { group in
            group.addTask {
                do {
                    return .success(try await work())
                } catch let error as DockerClientError {
                    return .failure(error)
                } catch {
                    return .failure(self.mapError(error, request: request))
                }
            }
            group.addTask {
                // Cancelled (and so returning early) as soon as the request finishes.
                try? await Task.sleep(for: self.requestTimeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        switch result {
        case .success(let value): return value
        case .failure(let error): throw error
        case nil:
            if Task.isCancelled { throw .cancelled(request: request) }
            throw .timeout(path: endpoint.socketPath, request: request, seconds: requestTimeout.seconds)
        }
    }

    /// Sends a GET and returns the response once its head says 2xx; other statuses become `.api`.
    func send(_ path: String, query: [(String, String)], streaming: Bool) async throws -> HTTPClientResponse {
        let request = "GET \(path)"
        var uri = path
        if !query.isEmpty {
            uri += "?" + query.map { "\($0.0)=\(Self.percentEncode($0.1))" }.joined(separator: "&")
        }
        guard let url = URL(httpURLWithSocketPath: endpoint.socketPath, uri: uri) else {
            throw DockerClientError.invalidEndpoint(endpoint.socketPath)
        }
        var http = HTTPClientRequest(url: url.absoluteString)
        http.method = .GET
        // dockerd answers 400 to a request without Host, and http+unix URLs have no host to send.
        http.headers.add(name: "Host", value: "docker")
        http.headers.add(name: "User-Agent", value: "bulkhead")
        let response: HTTPClientResponse
        do {
            response = try await self.http.execute(http, timeout: .nanoseconds(Int64(requestTimeout.seconds * 1e9)))
        } catch {
            throw mapError(error, request: request)
        }
        guard (200..<300).contains(response.status.code) else {
            let body = (try? await response.body.collect(upTo: 1 << 16)).map { Array($0.readableBytesView) } ?? []
            let message = (try? JSONDecoder().decode(WireMessage.self, from: Data(body)).message)
                ?? String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw DockerClientError.api(request: request, status: Int(response.status.code), message: message)
        }
        return response
    }

    /// Turns an AsyncHTTPClient or NIO error into one that says what to do.
    func mapError(_ error: Error, request: String) -> DockerClientError {
        if let error = error as? DockerClientError { return error }
        if error is CancellationError || Task.isCancelled { return .cancelled(request: request) }
        let path = endpoint.socketPath
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .connectTimeout, .readTimeout, .getConnectionFromPoolTimeout:
                return .timeout(path: path, request: request, seconds: requestTimeout.seconds)
            case .remoteConnectionClosed:
                // The daemon went away mid-answer; for the event stream that is its normal end.
                return DockerClientError.diagnoseSocket(at: path)
                    ?? (request == "GET /events" ? .eventStreamEnded(path: path) : .transport(path: path, request: request, detail: "dockerd closed the connection"))
            default:
                break
            }
        }
        if let error = error as? HTTPParserError, error == .invalidEOFState {
            // The connection closed in the middle of a body (a chunk or Content-Length short): for
            // the event stream, the end of it (a half event is dropped); for anything else, an
            // answer we must not use.
            return DockerClientError.diagnoseSocket(at: path)
                ?? (request == "GET /events" ? .eventStreamEnded(path: path) : .transport(path: path, request: request, detail: "dockerd closed the connection in the middle of its answer"))
        }
        return DockerClientError.diagnoseSocket(at: path) ?? .transport(path: path, request: request, detail: "\(error)")
    }

    /// Percent-encodes a query value (filters are JSON, full of `{":,}`).
    static func percentEncode(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
