import BulkheadAgent
import BulkheadDocker
import Foundation
import Synchronization

/// Records Docker's own events while a test runs, to time the agent's commits against them.
final class EventRecorder: Sendable {
    private let log = Mutex<[DockerEvent]>([])

    var events: [DockerEvent] { log.withLock { $0 } }

    /// Follows `GET /events` for the duration of `body`; a dropped stream only ends the record.
    static func during<T>(_ body: (EventRecorder) async throws -> T) async throws -> T {
        let recorder = EventRecorder()
        let stream = DockerClient().events(since: Date())
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await event in stream { recorder.log.withLock { $0.append(event) } }
                } catch {}
            }
            defer { group.cancelAll() }
            // The stream is open once the first request is answered; give it a moment.
            try await Task.sleep(for: .milliseconds(200))
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
