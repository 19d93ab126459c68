import BulkheadAgent
import BulkheadDocker
import BulkheadTestSupport
import Foundation
import Synchronization

/// Records Docker's own events while a test runs, to time the agent's commits against them.
final class EventRecorder: Sendable {
    private let log = Mutex<[DockerEvent]>([])

    var events: [DockerEvent] { log.withLock { $0 } }

    /// Follows `GET /events` for the duration of `body`; a dropped stream only ends the record.
    ///
    /// `body` starts once the stream has delivered an event the recorder caused itself (the
    /// `create` of a marker container, removed again at once), not after a guessed delay: from
    /// then on every event reaches the record.
    static func during<T>(_ network: TestNetwork, _ body: (EventRecorder) async throws -> T) async throws -> T {
        let recorder = EventRecorder()
        let stream = DockerClient().events(since: Date())
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await event in stream { recorder.log.withLock { $0.append(event) } }
                } catch {}
            }
            defer { group.cancelAll() }
            let marker = "\(network.tag)-recorder-\(UInt32.random(in: 0...UInt32.max))"
            try await Command.check(["docker", "create", "--name", marker, "--network", "none",
                                     "--label", "\(DockerE2E.label)=\(network.tag)", DockerE2E.image, "true"])
            let seen = await eventually(10) { recorder.events.contains { $0.containerName == marker && $0.action == .create } }
            try await Command.check(["docker", "rm", "-f", marker])
            // Hang guard, not a timing: the marker's event normally arrives within milliseconds.
            guard seen else { throw TestSystem.Failure("Docker's event stream delivered no event within 10 s of `docker create \(marker)`") }
            return try await body(recorder)
        }
    }
    /// For each of `containers`: the time from Docker's `start` event to the end of the first
    /// commit that began after its `connect` event (when its address is known) and covered it.
    /// Negative: the rules were in the kernel before Docker reported the start.
    func commitLatency(_ containers: [String], reports: [ReconcileReport]) -> [String: (afterConnect: Double, afterStart: Double)] {
        var out: [String: (Double, Double)] = [:]
        let events = self.events
        for name in containers {
            guard let connect = events.first(where: { $0.containerName == name && $0.action == .connect }),
                  let start = events.first(where: { $0.containerName == name && $0.action == .start }) else { continue }
            let connectTime = Double(connect.timeNano) / 1e9, startTime = Double(start.timeNano) / 1e9
            guard let commit = reports.first(where: { r in
                r.finishedAt.timeIntervalSince1970 - r.seconds >= connectTime && r.containers.contains(name)
            }) else { continue }
            let done = commit.finishedAt.timeIntervalSince1970
            out[name] = (done - connectTime, done - startTime)
        }
        return out
    }
}

/// "median 4 ms, max 9 ms" of values in seconds.
func summary(_ seconds: [Double]) -> String {
    guard !seconds.isEmpty else { return "no samples" }
    let s = seconds.sorted()
    func f(_ v: Double) -> String { String(format: "%.1f ms", v * 1000) }
    return "median \(f(s[s.count / 2])), min \(f(s[0])), max \(f(s[s.count - 1])) over \(s.count)"
}
