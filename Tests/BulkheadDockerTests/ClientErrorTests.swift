import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadDocker
#if canImport(Glibc)
import Glibc
#endif

/// What the client says when dockerd is not there, not listening, too slow, or hangs up.
struct ClientErrorTests {
    @Test func missingSocketSaysToStartDockerd() async throws {
        let path = UnixSocket.temporaryPath("missing")
        let docker = try DockerClient(endpoint: "unix://\(path)", requestTimeout: .seconds(30))
        await #expect(throws: DockerClientError.socketMissing(path: path)) { try await docker.ping() }
        await #expect(throws: DockerClientError.socketMissing(path: path)) { _ = try await docker.inventory() }
        await #expect(throws: DockerClientError.socketMissing(path: path)) {
            for try await _ in docker.events(since: nil) {}
        }
        // No connection retries until the 30 s request timeout: had the client waited for it, the
        // error would be `.timeout`, so the exact case above proves it without timing anything.
        #expect(DockerClientError.socketMissing(path: path).description
            == "cannot connect to Docker at \(path): no such socket — is dockerd running? (systemctl start docker)")
    }

    @Test func staleSocketIsRefused() async throws {
        let path = UnixSocket.temporaryPath("stale")
        let fd = try UnixSocket.bind(path, listen: false)
        defer { close(fd); unlink(path) }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: path))
        await #expect(throws: DockerClientError.connectionRefused(path: path)) { try await docker.ping() }
    }

    @Test func aFileIsNotASocket() async throws {
        let path = UnixSocket.temporaryPath("file")
        try Data().write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: path))
        await #expect(throws: DockerClientError.notASocket(path: path)) { try await docker.ping() }
    }

    @Test func aDaemonThatNeverAnswersTimesOut() async throws {
        let path = UnixSocket.temporaryPath("hung")
        let fd = try UnixSocket.bind(path, listen: true)
        defer { close(fd); unlink(path) }
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: path), requestTimeout: .milliseconds(300))
        await #expect(throws: DockerClientError.timeout(path: path, request: "GET /_ping", seconds: 0.3)) { try await docker.ping() }
        await #expect(throws: DockerClientError.timeout(path: path, request: "GET /events", seconds: 0.3)) {
            for try await _ in docker.events(since: nil) {}
        }
        // The exact `.timeout(seconds: 0.3)` cases prove the request timeout applies; nothing is timed.
    }

    @Test func permissionDeniedSaysWhatToDo() {
        #expect(DockerClientError.permissionDenied(path: "/var/run/docker.sock").description
            == "cannot connect to Docker at /var/run/docker.sock: permission denied — run as root or as a member of the 'docker' group")
    }

    @Test func endpointsParse() throws {
        #expect(try DockerEndpoint(parsing: "unix:///var/run/docker.sock").socketPath == "/var/run/docker.sock")
        #expect(try DockerEndpoint(parsing: "/run/user/1000/docker.sock").socketPath == "/run/user/1000/docker.sock")
        #expect(DockerEndpoint().description == "unix:///var/run/docker.sock")
        #expect(throws: DockerClientError.invalidEndpoint("tcp://10.0.0.1:2375")) { try DockerEndpoint(parsing: "tcp://10.0.0.1:2375") }
        #expect(throws: DockerClientError.invalidEndpoint("unix://")) { try DockerEndpoint(parsing: "unix://") }
    }

    /// The stream ends with an error when dockerd hangs up, after delivering every complete event
    /// however the bytes were chunked; network events get the container's name from its create.
    @Test func eventStreamEndsWithAnErrorWhenDockerdHangsUp() async throws {
        let create = #"{"status":"create","id":"c1","Type":"container","Action":"create","Actor":{"ID":"c1","Attributes":{"image":"x","name":"web"}},"scope":"local","time":1700000000,"timeNano":1700000000000000001}"#
        let connect = #"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c1","name":"shop_default","type":"bridge"}},"scope":"local","time":1700000000,"timeNano":1700000000000000002}"#
        let netCreate = #"{"Type":"network","Action":"create","Actor":{"ID":"n2","Attributes":{"name":"other","type":"bridge"}},"scope":"local","time":1700000000,"timeNano":1700000000000000003}"#
        let start = #"{"status":"start","id":"c1","Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"image":"x","name":"web"}},"scope":"local","time":1700000000,"timeNano":1700000000000000004}"#
        let split = create.index(create.startIndex, offsetBy: 40)
        let daemon = try ScriptedDaemon(pieces: ScriptedDaemon.chunked([
            String(create[..<split]), String(create[split...]) + "\n",
            connect + "\n" + netCreate + "\n" + start + "\n",
        ], end: true))
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: daemon.path))

        var received: [DockerEvent] = []
        var ending: Error?
        do {
            for try await event in docker.events(since: Date(timeIntervalSince1970: 1_700_000_000.5)) { received.append(event) }
        } catch {
            ending = error
        }
        daemon.wait()

        #expect(received == [
            DockerEvent(action: .create, containerID: "c1", containerName: "web", timeNano: 1_700_000_000_000_000_001),
            DockerEvent(action: .connect, containerID: "c1", containerName: "web", networkID: "n1", networkName: "shop_default", timeNano: 1_700_000_000_000_000_002),
            DockerEvent(action: .start, containerID: "c1", containerName: "web", timeNano: 1_700_000_000_000_000_004),
        ])
        #expect(ending as? DockerClientError == .eventStreamEnded(path: daemon.path))
        let request = daemon.request.lowercased()
        #expect(request.hasPrefix("get /events?filters=%7b%22type%22%3a%5b%22container%22%2c%22network%22%5d"))
        #expect(request.contains("&since=1700000000.500000000 http/1.1\r\n"))
        #expect(request.contains("\r\nhost: docker\r\n"))
    }

    @Test func eventStreamCutMidEventThrows() async throws {
        // dockerd stays up (its socket still answers): only this connection is cut.
        let daemon = try ScriptedDaemon(pieces: ScriptedDaemon.chunked([#"{"Type":"container","Action":"cre"#], end: false), keepListening: true)
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: daemon.path))
        // The half event is dropped with the connection: the stream ends (reconnect and re-list).
        var received: [DockerEvent] = []
        await #expect(throws: DockerClientError.eventStreamEnded(path: daemon.path)) {
            for try await e in docker.events(since: nil) { received.append(e) }
        }
        #expect(received.isEmpty, "a half event must never be decoded: \(received)")
        daemon.release()
        daemon.wait()
    }

    @Test func garbageOnTheEventStreamIsMalformed() async throws {
        let daemon = try ScriptedDaemon(pieces: ScriptedDaemon.chunked(["<html>proxy error</html>\n"], end: true))
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: daemon.path))
        await #expect(throws: DockerClientError.malformedResponse(request: "GET /events", detail: "not an event: <html>proxy error</html>")) {
            for try await _ in docker.events(since: nil) {}
        }
        daemon.wait()
    }

    @Test func apiErrorStatusCarriesTheMessage() async throws {
        let body = #"{"message":"client version 1.99 is too new. Maximum supported API version is 1.41"}"#
        let daemon = try ScriptedDaemon(pieces: ["HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"])
        let docker = DockerClient(endpoint: DockerEndpoint(socketPath: daemon.path))
        await #expect(throws: DockerClientError.api(request: "GET /version", status: 400, message: "client version 1.99 is too new. Maximum supported API version is 1.41")) {
            _ = try await docker.version()
        }
        daemon.wait()
    }
}
