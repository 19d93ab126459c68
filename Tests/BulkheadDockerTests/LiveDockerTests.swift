import BulkheadInventory
import BulkheadSource
import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadDocker

/// Against the real dockerd: each test makes its own network and containers and removes them.
@Suite(.enabled(if: DockerTests.enabled, "needs a reachable dockerd (or CI=true, where it must fail instead of skip)"))
struct LiveDockerTests {
    let docker = DockerClient()

    @Test func pingAndVersion() async throws {
        try DockerTests.require()
        try await docker.ping()
        let version = try await docker.version()
        #expect(!version.version.isEmpty)
        #expect(version.apiVersion.split(separator: ".").count == 2)
    }

    @Test func inventoryListsContainersWithLabelsAddressesAndSubnets() async throws {
        let scratch = try DockerScratch.make()
        defer { scratch.remove() }
        let web = try scratch.run("web")
        let db = try scratch.run("db")
        let pending = try scratch.run("worker", start: false)

        let inventory = try await docker.inventory()

        let network = try #require(inventory.network(named: scratch.network))
        #expect(network.subnets == [IPNetwork(scratch.subnetV4)!, IPNetwork(scratch.subnetV6)!])
        // Docker 20.10 reports no IPAM gateway for these networks; the inventory still knows the
        // bridge's addresses, and they are the ones the containers were handed.
        #expect(network.gateways == network.subnets.map { DockerInventory.firstHost(of: $0) })
        let gatewayV4 = try TestSystem.check(["docker", "inspect", "--format", "{{with index .NetworkSettings.Networks \"\(scratch.network)\"}}{{.Gateway}} {{.IPv6Gateway}}{{end}}", web])
        #expect(gatewayV4.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } == network.gateways.map(\.description))

        for (name, service) in [(web, "web"), (db, "db")] {
            let container = try #require(inventory.containers.first { $0.name == name })
            let truth = try scratch.inspect(name)
            #expect(container.id == truth.id)
            #expect(container.labels["com.docker.compose.project"] == scratch.project)
            #expect(container.labels["com.docker.compose.service"] == service)
            let attachment = try #require(container.networks[scratch.network])
            #expect(attachment.ipv4 == IPAddress(truth.ipv4))
            #expect(attachment.ipv6 == IPAddress(truth.ipv6))
            #expect(attachment.ipv4.map { network.subnets[0].contains($0) } == true)
            #expect(attachment.ipv6.map { network.subnets[1].contains($0) } == true)
        }
        // Created but never started: listed with its labels and network, with no address yet.
        let created = try #require(inventory.containers.first { $0.name == pending })
        #expect(created.labels["com.docker.compose.service"] == "worker")
        #expect(created.networks == [scratch.network: Attachment()])

        #expect(inventory.containers.map(\.name) == inventory.containers.map(\.name).sorted())
        #expect(inventory.networks.map(\.name) == inventory.networks.map(\.name).sorted())

        let details = try #require(try await docker.networks().first { $0.name == scratch.network })
        #expect(details.driver == "bridge")
        #expect(details.enableIPv6)
        #expect(details.bridgeInterface == "br-\(details.id.prefix(12))")
        #expect(details.labels["io.bulkhead.test"] == scratch.tag)
    }

    @Test func snapshotOfTheLiveInventoryRoundTrips() async throws {
        let scratch = try DockerScratch.make()
        defer { scratch.remove() }
        try scratch.run("api")
        try scratch.run("cache", start: false)

        let inventory = try await docker.inventory()
        let yaml = InventorySnapshot.render(inventory, header: "bulkhead inventory")
        let (loaded, diagnostics) = InventoryLoader.load(Array(yaml.utf8), file: "snapshot.yaml")
        #expect(diagnostics.isEmpty, "\(diagnostics)\n\(yaml)")
        #expect(loaded.map(SnapshotTests.withoutSources) == inventory)
        #expect(yaml.contains("\(scratch.tag)-api-1"))
        #expect(yaml.contains("\"\(scratch.subnetV6)\""))
    }

    @Test func eventsFollowRunAndRemoveInDockerOrder() async throws {
        let scratch = try DockerScratch.make()
        defer { scratch.remove() }
        let name = "\(scratch.tag)-web-1"
        let since = Date()
        let stream = docker.events(since: since)

        let docker = self.docker
        // The removal waits until the consumer has listed at `connect`; otherwise a consumer that
        // is scheduled late would list a container that is already gone.
        let (listedSignal, signalListed) = AsyncStream<Void>.makeStream()
        let (events, atConnect) = try await withThrowingTaskGroup(of: ([DockerEvent], Inventory?)?.self) { group in
            group.addTask {
                var seen: [DockerEvent] = []
                var listedAtConnect: Inventory?
                for try await event in stream where event.containerName == name {
                    seen.append(event)
                    // What the agent does: re-list on connect. The address must be there already.
                    if event.action == .connect {
                        listedAtConnect = try await docker.inventory()
                        signalListed.yield()
                    }
                    if event.action == .destroy { return (seen, listedAtConnect) }
                }
                return (seen, listedAtConnect)
            }
            group.addTask {
                try scratch.run("web")
                for await _ in listedSignal { break }
                try TestSystem.check(["docker", "rm", "-f", name])
                scratch.forget(name)
                return nil
            }
            group.addTask {
                try await Task.sleep(for: .seconds(60))
                throw TestSystem.Failure("no destroy event for \(name) within 60 s")
            }
            var result: ([DockerEvent], Inventory?) = ([], nil)
            var finished = 0
            while let next = try await group.next() {
                if let events = next { result = events }
                finished += 1
                if finished == 2 { break }
            }
            group.cancelAll()
            return result
        }

        #expect(events.map(\.action) == [.create, .connect, .start, .die, .disconnect, .destroy])
        let listed = try #require(atConnect?.containers.first { $0.name == name })
        let attachment = try #require(listed.networks[scratch.network])
        #expect(attachment.ipv4.map { IPNetwork(scratch.subnetV4)!.contains($0) } == true, "address at connect: \(attachment)")
        #expect(attachment.ipv6.map { IPNetwork(scratch.subnetV6)!.contains($0) } == true, "address at connect: \(attachment)")
        #expect(events.allSatisfy { $0.containerName == name })
        #expect(Set(events.map(\.containerID)).count == 1)
        let network = events.filter { $0.type == .network }
        #expect(network.count == 2)
        #expect(network.allSatisfy { $0.networkName == scratch.network && $0.networkID?.count == 64 })
        #expect(events.map(\.timeNano) == events.map(\.timeNano).sorted())
        #expect(events.first.map { $0.time >= since.addingTimeInterval(-1) } == true)
        let gaps = zip(events, events.dropFirst()).map { "\($0.action.rawValue)→\($1.action.rawValue) \(String(format: "%.1f", Double($1.timeNano - $0.timeNano) / 1e6)) ms" }
        print("docker event gaps for \(name): \(gaps.joined(separator: ", "))")

        // Replay: a new stream from the same `since` gets the same events from dockerd's buffer.
        let replay = docker.events(since: since)
        let replayed = try await withTimeout(.seconds(30), "replayed events of \(name)") {
            var seen: [DockerEvent] = []
            for try await event in replay where event.containerName == name {
                seen.append(event)
                if event.action == .destroy { break }
            }
            return seen
        }
        #expect(replayed == events)
    }

    @Test func cancellingTheConsumerEndsTheStreamQuietly() async throws {
        try DockerTests.require()
        let clock = ContinuousClock()
        let start = clock.now
        let outcome = await withTaskGroup(of: String.self) { group in
            group.addTask {
                do {
                    for try await _ in docker.events(since: nil) {}
                    return "finished"
                } catch {
                    return "threw \(error)"
                }
            }
            try? await Task.sleep(for: .milliseconds(300))
            group.cancelAll()
            return await group.next() ?? "none"
        }
        #expect(outcome == "finished")
        // Not a timing claim: a hang guard (the stream must end on cancellation, not on a timeout).
        #expect(clock.now - start < .seconds(30))
    }

    @Test func apiErrorsCarryDockersMessage() async throws {
        try DockerTests.require()
        let missing = "bulkhead-no-such-container-\(UInt32.random(in: 0...UInt32.max))"
        await #expect(throws: DockerClientError.api(request: "GET /containers/\(missing)/json", status: 404, message: "No such container: \(missing)")) {
            _ = try await docker.get("/containers/\(missing)/json")
        }
    }
}

/// The Docker source's per-event read against the real dockerd, counted by a proxy: each event
/// costs one read of the container it names (the container list filtered to that one id), never
/// the full list.
@Suite(.enabled(if: DockerTests.enabled, "needs a reachable dockerd (or CI=true, where it must fail instead of skip)"))
struct DockerSourceTests {
    @Test(.timeLimit(.minutes(1)))
    func oneEventIsOneReadOfThatContainer() async throws {
        let scratch = try DockerScratch.make()
        defer { scratch.remove() }
        let proxy = try FaultProxy(upstream: "/var/run/docker.sock")
        defer { proxy.stop() }
        let source: any ContainerSource = DockerClient(endpoint: DockerEndpoint(socketPath: proxy.path))
        let stream = source.events()
        let read: [(SourceEvent, Container?)] = try await withThrowingTaskGroup(of: [(SourceEvent, Container?)]?.self) { group in
            group.addTask {
                var read: [(SourceEvent, Container?)] = []
                for try await event in stream where event.containerName?.hasPrefix(scratch.tag) == true {
                    guard event.kind != .removed, let id = event.containerID else { continue }
                    read.append((event, try await source.inspect(id: id)))
                    if event.kind == .changed { return read }  // start: the last event of `docker run`
                }
                return nil
            }
            group.addTask {
                // Subscribed (through the proxy) before the container is run, then run it.
                while proxy.eventStreams == 0 { try await Task.sleep(for: .milliseconds(10)) }
                _ = try scratch.run("web")
                try await Task.sleep(for: .seconds(30))  // a hang guard, not a delay: the reader returns first
                return nil
            }
            defer { group.cancelAll() }
            return try #require(try await group.next() ?? nil)
        }
        let truth = try scratch.inspect("\(scratch.tag)-web-1")
        #expect(read.map(\.0.kind) == [.added, .connected(network: scratch.network), .changed])
        #expect(read.allSatisfy { $0.0.containerID == truth.id })
        // From `connect` on, the read has the address (before `start`, from the network's endpoints).
        for (event, container) in read.dropFirst() {
            #expect(container?.networks[scratch.network]?.ipv4 == IPAddress(truth.ipv4), "\(event): \(String(describing: container))")
            #expect(container?.labels["com.docker.compose.service"] == "web")
        }
        let lists = proxy.targets.filter { $0.hasPrefix("/containers/json") }
        #expect(lists.count == 3, "one read per event: \(lists)")
        #expect(lists.allSatisfy { $0.contains(#""id":[""# + truth.id + #""]"#) }, "each read names the event's container: \(lists)")
        #expect(!proxy.targets.contains { $0.hasPrefix("/containers/\(truth.id)") }, "no container inspect (it waits for start): \(proxy.targets)")
    }
}
