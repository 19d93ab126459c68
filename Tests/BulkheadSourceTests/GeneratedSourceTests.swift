import BulkheadInventory
import BulkheadPolicy
import BulkheadSource
import Testing

/// The generated host the agent benchmark runs on (`bulkhead-bench agent-scale`) must be the
/// same on every run and must keep the source contract, or the figures would measure a source
/// that lies to the agent.
struct GeneratedSourceTests {
    static let small = GeneratedSource.Shape(segments: 5, servicesPerSegment: 4, replicas: 3, sourcesPerFlow: 4, crossSegmentSources: 1)

    @Test func sameSeedGivesTheSameHostAndEvents() async throws {
        let a = GeneratedSource(shape: Self.small, seed: 7), b = GeneratedSource(shape: Self.small, seed: 7)
        let other = GeneratedSource(shape: Self.small, seed: 8)
        #expect(try await a.snapshot() == b.snapshot())
        #expect(a.containerCount == 60)
        let eventsA = (0..<300).map { _ in a.step().event }
        let eventsB = (0..<300).map { _ in b.step().event }
        let eventsOther = (0..<300).map { _ in other.step().event }
        #expect(eventsA.count == 300)
        #expect(eventsA == eventsB)
        #expect(try await a.snapshot() == b.snapshot())
        #expect(eventsA != eventsOther, "another seed draws other changes")
        #expect(a.policyFiles().map(\.yaml) == b.policyFiles().map(\.yaml))
    }

    @Test func snapshotEqualsTheReplayOfItsEvents() async throws {
        let source = GeneratedSource(shape: Self.small, seed: 42)
        var index = EndpointIndex(try await source.snapshot())
        var events = source.events().makeAsyncIterator()
        var adds = 0, removes = 0
        for _ in 0..<500 {
            let (sent, container) = source.step()
            let received = try await events.next()
            #expect(received == sent, "each step's event reaches open streams")
            let key = try #require(sent.containerID)
            #expect(key == EndpointIndex.key(of: container))
            switch sent.kind {
            case .removed:
                removes += 1
                #expect(try await source.inspect(id: key) == nil, "a removed container is gone before its event")
                index.update(key, to: nil)
            case .added:
                adds += 1
                let read = try await source.inspect(id: key)
                #expect(read == container)
                #expect(read.map(index.knowsNetworks(of:)) == true)
                index.update(key, to: read)
            default:
                Issue.record("unexpected event \(sent)")
            }
        }
        #expect(adds > 50 && removes > 50, "both kinds drawn: \(adds) adds, \(removes) removes")
        let now = try await source.snapshot()
        #expect(index.inventory == now)
        // Consistent: every address is unique and lies in its network's subnet.
        let addresses = now.containers.flatMap(\.addresses)
        #expect(addresses.count == now.containers.count)
        #expect(Set(addresses).count == addresses.count)
        for c in now.containers {
            for (name, attachment) in c.networks {
                let subnet = try #require(now.networks.first { $0.name == name }?.subnets.first)
                #expect(subnet.contains(try #require(attachment.ipv4)), "\(c.name) outside \(subnet)")
            }
        }
    }

    @Test func policiesGiveEveryContainerExactlyOneOfAThousandServices() async throws {
        let source = GeneratedSource(seed: 1)
        #expect(source.shape == .issue10)
        for _ in 0..<100 { source.step() }
        let files = source.policyFiles()
        let loaded = PolicyLoader.load(sources: files.map { ($0.name, Array($0.yaml.utf8)) })
        #expect(loaded.diagnostics.filter { $0.severity == .error }.map(\.formatted) == [])
        #expect(loaded.policies.segments.count == 100)
        #expect(loaded.policies.services.count == 1_000)
        let inventory = try await source.snapshot()
        #expect(inventory.containers.count > 9_000)
        let membership = Evaluator(policies: loaded.policies, inventory: inventory).membership
        let unmatched = inventory.containers.filter { membership[$0.name]?.count != 1 }.map(\.name)
        #expect(unmatched == [])
    }
}
