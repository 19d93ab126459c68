import BulkheadInventory
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadDocker

/// The client against the real dockerd behind a `FaultProxy`: each fault gives one exact error
/// (what failed, where, and what to do), the client is usable again at once, and nothing hangs.
@Suite(.enabled(if: DockerTests.enabled, "needs a reachable dockerd (or CI=true, where it must fail instead of skip)"))
struct FaultyDaemonTests {
    static func proxy() throws -> FaultProxy {
        try DockerTests.require()
        return try FaultProxy(upstream: "/var/run/docker.sock")
    }

    @Test func errorStatusIsAnAPIErrorAndTheNextRequestWorks() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path), requestTimeout: .seconds(10))
        proxy.inject(.status(500), on: "/containers/json")
        await #expect(throws: DockerClientError.api(request: "GET /containers/json", status: 500, message: "injected by the test's fault proxy")) {
            _ = try await docker.inventory()
        }
        _ = try await docker.inventory()
    }

    /// A body cut short (the connection closes mid-answer) is a transport error, never a partial list.
    @Test func truncatedBodyIsATransportError() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path), requestTimeout: .seconds(10))
        proxy.inject(.truncate, on: "/containers/json")
        await #expect(throws: DockerClientError.transport(path: proxy.path, request: "GET /containers/json", detail: "dockerd closed the connection in the middle of its answer")) {
            _ = try await docker.inventory()
        }
        proxy.inject(.truncate, on: "/networks")
        await #expect(throws: DockerClientError.transport(path: proxy.path, request: "GET /networks", detail: "dockerd closed the connection in the middle of its answer")) {
            _ = try await docker.networks()
        }
        _ = try await docker.inventory()
    }

    /// An answer that never comes, and one that comes too late: both end at the request timeout
    /// (the whole request is bounded, not only its head), and the next request works.
    @Test(.timeLimit(.minutes(1)))
    func hungAndSlowAnswersTimeOut() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path), requestTimeout: .milliseconds(500))
        proxy.inject(.hang, on: "/containers/json")
        await #expect(throws: DockerClientError.timeout(path: proxy.path, request: "GET /containers/json", seconds: 0.5)) {
            _ = try await docker.containers()
        }
        proxy.inject(.delay(milliseconds: 1500), on: "/networks")
        await #expect(throws: DockerClientError.timeout(path: proxy.path, request: "GET /networks", seconds: 0.5)) {
            _ = try await docker.networks()
        }
        _ = try await docker.containers()
    }

    /// A subscription whose answer never comes ends at the request timeout, like any request.
    @Test(.timeLimit(.minutes(1)))
    func hungEventSubscriptionTimesOut() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path), requestTimeout: .milliseconds(500))
        proxy.inject(.hang, on: "/events")
        await #expect(throws: DockerClientError.timeout(path: proxy.path, request: "GET /events", seconds: 0.5)) {
            for try await _ in docker.events(since: nil) {}
        }
    }

    /// An event stream cut in the middle of an event: the half event is never delivered and the
    /// stream ends with `eventStreamEnded` (reconnect and re-list).
    @Test(.timeLimit(.minutes(1)))
    func eventStreamCutMidEventEndsTheStream() async throws {
        let proxy = try Self.proxy()
        defer { proxy.stop() }
        let scratch = try DockerScratch.make()
        defer { scratch.remove() }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path), requestTimeout: .seconds(10))
        let events = docker.events(since: nil)
        let consumer = Task {
            var received: [DockerEvent] = []
            do {
                for try await e in events { received.append(e) }
                return (received, nil as DockerClientError?)
            } catch {
                return (received, error as? DockerClientError)
            }
        }
        let clock = ContinuousClock(), start = clock.now
        while proxy.eventStreams == 0 {
            guard clock.now - start < .seconds(20) else { throw TestSystem.Failure("the client did not subscribe") }
            try await Task.sleep(for: .milliseconds(10))
        }
        proxy.cutEventStreamsAtNextEvent()
        try scratch.run("web")
        let (received, ending) = try await withTimeout(.seconds(20), "the cut stream to end") { await consumer.value }
        // Other tests run containers at the same time: their events may come before the cut.
        let own = received.filter { $0.containerName?.hasPrefix(scratch.tag) == true }
        #expect(own.isEmpty, "the half event is dropped, not decoded: \(received)")
        #expect(ending == .eventStreamEnded(path: proxy.path))
        #expect(proxy.faultLog == ["GET /events: cut mid-event"])
    }
}
