import BulkheadInventory
import BulkheadSource
import Foundation
import Synchronization
import Testing

/// A temp directory holding one inventory file, edited the ways people and editors edit it.
final class InventoryFile: Sendable {
    let directory: String
    let path: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("bh-inventory-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/inventory.yaml"
    }

    /// Writes in place (open with truncation, write, close: as `>` in a shell does).
    func write(_ text: String) throws {
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// Writes a new file beside it and renames it over the old one, as editors save.
    func replace(_ text: String) throws {
        let temp = directory + "/.inventory.yaml.swp"
        try text.write(toFile: temp, atomically: false, encoding: .utf8)
        guard rename(temp, path) == 0 else { throw POSIXError(.EIO) }
    }

    func delete() throws { try FileManager.default.removeItem(atPath: path) }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    static func text(_ containers: [(name: String, ip: String)], subnet: String = "10.1.0.0/24") -> String {
        var out = "networks:\n  - name: n\n    subnets: [\(subnet)]\ncontainers:\n"
        if containers.isEmpty { out = out.replacingOccurrences(of: "containers:\n", with: "containers: []\n") }
        for c in containers {
            out += "  - name: \(c.name)\n    labels: {app: \(c.name)}\n    networks:\n      n: {ipv4: \(c.ip)}\n"
        }
        return out
    }
}

/// Collects what a source's event stream yields, and how it ended.
final class StreamRecorder: Sendable {
    let events = Mutex<[SourceEvent]>([])
    let ending = Mutex<String?>(nil)

    func follow(_ stream: AsyncThrowingStream<SourceEvent, Error>) async {
        do {
            for try await e in stream { events.withLock { $0.append(e) } }
            ending.withLock { $0 = "finished" }
        } catch {
            ending.withLock { $0 = "\(error)" }
        }
    }
}

/// Polls `condition` every 10 ms; `seconds` is a hang guard, not a delay.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

@Suite(.serialized) struct InventoryFileSourceTests {
    /// With a recheck interval of an hour, only inotify can tell the source about an edit.
    static func source(_ file: InventoryFile) -> InventoryFileSource {
        InventoryFileSource(path: file.path, recheckInterval: .seconds(3600))
    }

    static func following(_ source: InventoryFileSource, _ body: (StreamRecorder) async throws -> Void) async throws {
        let recorder = StreamRecorder()
        // The watch is armed before `events()` returns, so an edit right after it is seen.
        let stream = source.events()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await recorder.follow(stream) }
            defer { group.cancelAll() }
            try await body(recorder)
        }
    }

    @Test func editsAreReportedPerContainer() async throws {
        let file = try InventoryFile()
        try file.write(InventoryFile.text([("a", "10.1.0.2"), ("b", "10.1.0.3")]))
        let source = Self.source(file)
        #expect(try await source.snapshot().containers.map(\.name) == ["a", "b"])
        try await Self.following(source) { recorder in
            // In place: add c, change b's address, remove a.
            try file.write(InventoryFile.text([("b", "10.1.0.9"), ("c", "10.1.0.4")]))
            #expect(await eventually { recorder.events.withLock { $0.count } == 3 })
            #expect(recorder.events.withLock { $0 } == [
                SourceEvent(.removed, containerID: "a", containerName: "a"),
                SourceEvent(.changed, containerID: "b", containerName: "b"),
                SourceEvent(.added, containerID: "c", containerName: "c"),
            ])
            #expect(try await source.inspect(id: "b")?.networks["n"]?.ipv4 == IPAddress("10.1.0.9"))
            #expect(try await source.inspect(id: "c")?.name == "c")
            #expect(try await source.inspect(id: "a") == nil)
        }
    }

    @Test func aRenameOverTheFileIsFollowed() async throws {
        let file = try InventoryFile()
        try file.write(InventoryFile.text([("a", "10.1.0.2")]))
        let source = Self.source(file)
        _ = try await source.snapshot()
        try await Self.following(source) { recorder in
            try file.replace(InventoryFile.text([("a", "10.1.0.2"), ("b", "10.1.0.3")]))
            #expect(await eventually { !recorder.events.withLock { $0 }.isEmpty })
            #expect(recorder.events.withLock { $0 } == [SourceEvent(.added, containerID: "b", containerName: "b")])
            // And again: the watch is on the directory, so the new inode is followed too.
            try file.replace(InventoryFile.text([("b", "10.1.0.3")]))
            #expect(await eventually { recorder.events.withLock { $0 }.count == 2 })
            #expect(recorder.events.withLock { $0 }.last == SourceEvent(.removed, containerID: "a", containerName: "a"))
        }
    }

    @Test func aNetworkEditAsksForANewSnapshot() async throws {
        let file = try InventoryFile()
        try file.write(InventoryFile.text([("a", "10.1.0.2")]))
        let source = Self.source(file)
        _ = try await source.snapshot()
        try await Self.following(source) { recorder in
            try file.write(InventoryFile.text([("a", "10.2.0.2")], subnet: "10.2.0.0/24"))
            #expect(await eventually { !recorder.events.withLock { $0 }.isEmpty })
            #expect(recorder.events.withLock { $0 } == [.resynced])
        }
        #expect(try await source.snapshot().networks.map(\.subnets) == [[IPNetwork("10.2.0.0/24")!]])
    }

    @Test func invalidContentEndsTheStreamAndKeepsTheLastGood() async throws {
        let file = try InventoryFile()
        try file.write(InventoryFile.text([("a", "10.1.0.2")]))
        let source = Self.source(file)
        _ = try await source.snapshot()
        try await Self.following(source) { recorder in
            try file.write("containers: [{name: a, networks: {n: {ipv4: not-an-address}}}]\n")
            #expect(await eventually { recorder.ending.withLock { $0 } != nil })
            let ending = try #require(recorder.ending.withLock { $0 })
            #expect(ending.hasPrefix("inventory file \(file.path) is invalid: "), "\(ending)")
            #expect(recorder.events.withLock { $0 }.isEmpty)
        }
        // Until it is fixed, a snapshot says why; the per-container reads answer from the last good file.
        await #expect {
            _ = try await source.snapshot()
        } throws: { error in
            guard case .invalid(let path, let errors, _) = error as? InventoryFileError else { return false }
            return path == file.path && errors >= 1
        }
        #expect(try await source.inspect(id: "a")?.networks["n"]?.ipv4 == IPAddress("10.1.0.2"))
        #expect(source.outageDescription(InventoryFileError.missing(path: file.path))
            == "inventory file \(file.path) is missing; restore it (the last good inventory stays enforced)")
        try file.write(InventoryFile.text([("a", "10.1.0.5")]))
        #expect(try await source.snapshot().containers.first?.networks["n"]?.ipv4 == IPAddress("10.1.0.5"))
    }

    @Test func deletionEndsTheStream() async throws {
        let file = try InventoryFile()
        try file.write(InventoryFile.text([("a", "10.1.0.2")]))
        let source = Self.source(file)
        _ = try await source.snapshot()
        try await Self.following(source) { recorder in
            try file.delete()
            #expect(await eventually { recorder.ending.withLock { $0 } != nil })
            #expect(recorder.ending.withLock { $0 } == "\(InventoryFileError.missing(path: file.path))")
        }
        await #expect(throws: InventoryFileError.missing(path: file.path)) { _ = try await source.snapshot() }
    }

    @Test func aFileMissingOnlyForAMomentIsNotADeletion() async throws {
        let file = try InventoryFile()
        try file.write(InventoryFile.text([("a", "10.1.0.2")]))
        let source = InventoryFileSource(path: file.path, recheckInterval: .seconds(3600), missingGrace: .seconds(30))
        _ = try await source.snapshot()
        try await Self.following(source) { recorder in
            // An editor renaming the old file away, then writing the new one.
            #expect(rename(file.path, file.directory + "/inventory.yaml~") == 0)
            try file.write(InventoryFile.text([("a", "10.1.0.2"), ("b", "10.1.0.3")]))
            #expect(await eventually { !recorder.events.withLock { $0 }.isEmpty })
            #expect(recorder.events.withLock { $0 } == [SourceEvent(.added, containerID: "b", containerName: "b")])
            #expect(recorder.ending.withLock { $0 } == nil)
        }
    }

    @Test func changesBetweenInventories() {
        let net = [Network(name: "n", subnets: [IPNetwork("10.1.0.0/24")!])]
        let a = Container(name: "a", id: "1", labels: [:], networks: ["n": Attachment(ipv4: IPAddress("10.1.0.2"))])
        var moved = a
        moved.source = FilePosition(file: "f", mark: .start)
        #expect(InventoryFileSource.changes(from: Inventory(networks: net, containers: [a]), to: Inventory(networks: net, containers: [moved])).isEmpty,
                "a container only written on another line is the same endpoint")
        var placed = net
        placed[0].source = FilePosition(file: "f", mark: .start)
        #expect(InventoryFileSource.changes(from: Inventory(networks: net), to: Inventory(networks: placed)).isEmpty,
                "a network only written on another line is the same network")
        #expect(InventoryFileSource.changes(from: Inventory(networks: net), to: Inventory(networks: net, containers: [a]))
            == [SourceEvent(.added, containerID: "1", containerName: "a")])
        #expect(InventoryFileSource.changes(from: Inventory(networks: net), to: Inventory(networks: net, hostAddresses: [IPAddress("192.0.2.1")!]))
            == [.resynced])
    }
}
