import BulkheadInventory
import BulkheadSource
import Foundation
import Testing
@testable import BulkheadDocker

/// The events body becomes events whatever the chunking; the fake keeps the source contract.
struct EventDecoderTests {
    static let lines = [
        #"{"Type":"container","Action":"create","Actor":{"ID":"c1","Attributes":{"name":"web","image":"x"}},"time":1,"timeNano":1000000001}"#,
        #"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c1","name":"net","type":"bridge"}},"time":1,"timeNano":1000000002}"#,
        #"{"Type":"container","Action":"exec_create: sh","Actor":{"ID":"c1","Attributes":{"name":"web"}},"time":1,"timeNano":1000000003}"#,
        #"{"Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"name":"web"}},"time":1,"timeNano":1000000004}"#,
        #"{"Type":"container","Action":"destroy","Actor":{"ID":"c1","Attributes":{"name":"web"}},"time":2}"#,
        #"{"Type":"network","Action":"disconnect","Actor":{"ID":"n1","Attributes":{"container":"c1","name":"net"}},"time":2,"timeNano":2000000001}"#,
    ]

    static let expected = [
        DockerEvent(action: .create, containerID: "c1", containerName: "web", timeNano: 1_000_000_001),
        DockerEvent(action: .connect, containerID: "c1", containerName: "web", networkID: "n1", networkName: "net", timeNano: 1_000_000_002),
        DockerEvent(action: .start, containerID: "c1", containerName: "web", timeNano: 1_000_000_004),
        DockerEvent(action: .destroy, containerID: "c1", containerName: "web", timeNano: 2_000_000_000),
        // After destroy the name is forgotten (the cache holds live containers only).
        DockerEvent(action: .disconnect, containerID: "c1", containerName: nil, networkID: "n1", networkName: "net", timeNano: 2_000_000_001),
    ]

    @Test(arguments: [1, 7, 64, 100_000])
    func anyChunkingGivesTheSameEvents(chunkSize: Int) throws {
        let body = Array(Self.lines.joined(separator: "\n").appending("\n").utf8)
        var decoder = DockerEventDecoder()
        var events: [DockerEvent] = []
        var offset = 0
        while offset < body.count {
            events += try decoder.feed(body[offset..<min(offset + chunkSize, body.count)])
            offset += chunkSize
        }
        #expect(events == Self.expected)
    }

    @Test func aLineWithoutEndIsRefused() throws {
        var decoder = DockerEventDecoder()
        #expect(throws: DockerClientError.malformedResponse(request: "GET /events", detail: "more than \(DockerEventDecoder.maximumLine) bytes without a newline")) {
            _ = try decoder.feed([UInt8](repeating: UInt8(ascii: "x"), count: DockerEventDecoder.maximumLine + 1))
        }
    }

    @Test func sinceIsSentWithNanoseconds() {
        let query = DockerClient.eventQuery(since: Date(timeIntervalSince1970: 1_700_000_000.25))
        #expect(query.last?.0 == "since")
        #expect(query.last?.1 == "1700000000.250000000")
        #expect(DockerClient.eventQuery(since: nil).map(\.0) == ["filters"])
        #expect(DockerClient.percentEncode(#"{"a":["b c"]}"#) == "%7B%22a%22%3A%5B%22b%20c%22%5D%7D")
    }

    @Test func descriptionsNameTheContainer() {
        #expect(Self.expected[0].description == "container create web")
        #expect(Self.expected[1].description == "network connect web to net")
    }
}

struct FakeContainerSourceTests {
    static let web = Container(name: "shop-web-1", labels: ["com.docker.compose.service": "web"],
                               networks: ["shop_default": Attachment(ipv4: IPAddress("172.20.0.2"), ipv6: IPAddress("fd00:20::2"))])

    @Test func runAndRemoveEmitDockersOrderWithTheInventoryAlreadyUpdated() async throws {
        let source = FakeContainerSource(inventory: Inventory(networks: [Network(name: "shop_default", subnets: [IPNetwork("172.20.0.0/16")!])]))
        let stream = source.events()
        source.run(Self.web)
        let id = FakeContainerSource.makeID("shop-web-1")
        #expect(try await source.snapshot().containers.first?.networks["shop_default"]?.ipv4 == IPAddress("172.20.0.2"))
        #expect(try await source.inspect(id: id)?.networks["shop_default"]?.ipv4 == IPAddress("172.20.0.2"))
        source.remove("shop-web-1")
        #expect(try await source.snapshot().containers.isEmpty)
        #expect(try await source.inspect(id: id) == nil)
        source.disconnect()

        var kinds: [SourceEvent.Kind] = []
        var ending: Error?
        do {
            for try await event in stream {
                #expect(event.containerName == "shop-web-1")
                #expect(event.containerID == id)
                kinds.append(event.kind)
            }
        } catch {
            ending = error
        }
        #expect(kinds == [.added, .connected(network: "shop_default"), .changed, .removed, .disconnected(network: "shop_default"), .removed])
        #expect(ending as? DockerClientError == .eventStreamEnded(path: "fake"))
        #expect(source.openStreams == 0)
        #expect(source.subscriptions == 1)
        #expect(source.snapshotCalls == 2)
        #expect(source.inspected == [id, id])
    }

    @Test func dockerActionsMapToNeutralEvents() {
        func kind(_ action: DockerEvent.Action) -> SourceEvent.Kind {
            DockerEvent(action: action, containerID: "c1", containerName: "web", networkID: "n1", networkName: "net", timeNano: 1).sourceEvent.kind
        }
        #expect([DockerEvent.Action.create, .start, .die, .destroy, .connect, .disconnect].map(kind)
            == [.added, .changed, .removed, .removed, .connected(network: "net"), .disconnected(network: "net")])
        #expect(DockerEvent(action: .start, containerID: "c1", containerName: "web", timeNano: 1).sourceEvent
            == SourceEvent(.changed, containerID: "c1", containerName: "web"))
    }

    @Test func anUnreachableDockerFailsListingAndStreams() async throws {
        let source = FakeContainerSource()
        let open = source.events()
        source.setFailure(.socketMissing(path: "/var/run/docker.sock"))
        await #expect(throws: DockerClientError.socketMissing(path: "/var/run/docker.sock")) { _ = try await source.snapshot() }
        await #expect(throws: DockerClientError.socketMissing(path: "/var/run/docker.sock")) { _ = try await source.inspect(id: "x") }
        await #expect(throws: DockerClientError.socketMissing(path: "/var/run/docker.sock")) { for try await _ in open {} }
        await #expect(throws: DockerClientError.socketMissing(path: "/var/run/docker.sock")) { for try await _ in source.events() {} }
        source.setFailure(nil)
        #expect(try await source.snapshot() == Inventory())
    }

    @Test func aDroppedConsumerClosesItsStream() async throws {
        let source = FakeContainerSource()
        do {
            let stream = source.events()
            #expect(source.openStreams == 1)
            _ = stream
        }
        // Terminated when the stream (and its iterator) is released.
        #expect(source.openStreams == 0)
    }
}

/// Inputs that crashed the Docker decoders (fuzz target `docker`, Tests/Fuzz), kept as tests.
struct DockerFuzzRegressionTests {
    /// An event with `time` (seconds) but no `timeNano`, past the year 2262: converting it to
    /// nanoseconds overflowed Int64 and trapped, which stopped the agent on one line of /events.
    @Test func anEventTimeBeyondInt64NanosecondsSaturates() throws {
        var decoder = DockerEventDecoder()
        let lines = #"""
        {"Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"name":"web"}},"time":10000000000}
        {"Type":"container","Action":"start","Actor":{"ID":"c2","Attributes":{"name":"db"}},"time":-10000000000}

        """#
        let events = try decoder.feed(Array(lines.utf8))
        #expect(events == [
            DockerEvent(action: .start, containerID: "c1", containerName: "web", timeNano: .max),
            DockerEvent(action: .start, containerID: "c2", containerName: "db", timeNano: .min),
        ])
    }
}
