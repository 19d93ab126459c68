import BulkheadSpawn
import BulkheadTestSupport
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The built `bulkhead` binary, next to the test bundle (both live in the same build directory).
/// `swift build --build-tests` (what scripts/test.sh runs first) builds it.
let bulkheadBinary: String = {
    let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [bundleDir.appendingPathComponent("bulkhead").path,
                      bundleDir.deletingLastPathComponent().appendingPathComponent("bulkhead").path,
                      TestSystem.repositoryRoot + "/.build/debug/bulkhead"] where FileManager.default.isExecutableFile(atPath: candidate) {
        return candidate
    }
    return TestSystem.repositoryRoot + "/.build/debug/bulkhead"
}()

/// `bulkhead agent …` running as a process of its own, as systemd runs it: its stdout and stderr
/// (the log) are collected while it runs, signals go to its pid, and its exit status is kept.
///
/// Started by `Spawn` (empty signal mask, like `Command`): the test's threads block SIGTERM and
/// SIGINT, and a child that inherited that mask would never see the signals this test sends.
final class AgentProcess: Sendable {
    let pid: pid_t
    let arguments: [String]
    private let output = Mutex<String>("")
    private let exit = Mutex<Int32?>(nil)

    init(_ arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: bulkheadBinary) else {
            throw TestSystem.Failure("the bulkhead binary is missing at \(bulkheadBinary): run `swift build --build-tests` first")
        }
        self.arguments = arguments
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw TestSystem.Failure("pipe: errno \(errno)") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        defer { close(fds[1]) }
        do {
            pid = try Spawn.start([bulkheadBinary] + arguments, stdin: .null, stdout: .descriptor(fds[1]), stderr: .descriptor(fds[1]))
        } catch {
            close(fds[0])
            throw TestSystem.Failure("\(error)")
        }
        let readFD = fds[0]
        // Threads of their own: both block (read, waitpid) and must not hold the cooperative pool.
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(readFD, &buffer, buffer.count)
                if n > 0 {
                    let text = String(decoding: buffer[0..<n], as: UTF8.self)
                    self.output.withLock { $0 += text }
                    continue
                }
                if n < 0 && errno == EINTR { continue }
                break
            }
            close(readFD)
        }.start()
        Thread { [self, pid] in
            let code = Spawn.wait(pid).status
            self.exit.withLock { $0 = code }
        }.start()
    }

    /// Everything it printed so far (stdout and stderr interleaved, as the journal shows them).
    var log: String { output.withLock { $0 } }
    var lines: [Substring] { log.split(separator: "\n") }
    var exitStatus: Int32? { exit.withLock { $0 } }

    func send(_ signal: Int32) throws {
        guard kill(pid, signal) == 0 else { throw TestSystem.Failure("kill -\(signal) \(pid): errno \(errno)") }
    }

    /// The first log line that satisfies `matches`, waiting up to `seconds` (a hang guard).
    func line(within seconds: Double = 30, _ what: String, where matches: @escaping (Substring) -> Bool) async throws -> Substring {
        if await eventually(seconds, { self.lines.contains(where: matches) || self.exitStatus != nil }),
           let line = lines.first(where: matches) {
            return line
        }
        throw TestSystem.Failure("bulkhead agent \(arguments.joined(separator: " ")): no \(what) in its log within \(seconds) s (exit status \(exitStatus.map(String.init) ?? "none: still running")); log:\n\(log.suffix(3000))")
    }

    /// The exit status, waiting up to `seconds` (a hang guard; nil if it still runs).
    func waitForExit(_ seconds: Double = 15) async -> Int32? {
        _ = await eventually(seconds, every: .milliseconds(10)) { self.exitStatus != nil }
        return exitStatus
    }

    /// The port from its `listening address=HOST:PORT` line (`--listen 127.0.0.1:0` picks one).
    func listeningPort() async throws -> Int {
        let line = try await line("`listening` line") { $0.hasSuffix("[BulkheadAgent] listening") }
        guard let field = line.split(separator: " ").first(where: { $0.hasPrefix("address=") }),
              let port = field.split(separator: ":").last.flatMap({ Int($0) }) else {
            throw TestSystem.Failure("no port in the listening line: \(line)")
        }
        return port
    }

    /// SIGKILL if it still runs: for `defer`, when a test failed before stopping it.
    func kill9() {
        if exitStatus == nil { _ = kill(pid, SIGKILL) }
    }
}

/// One Prometheus text exposition, as scraped.
struct Scrape: CustomStringConvertible {
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    let text: String
    let samples: [Sample]

    init(_ text: String) {
        self.text = text
        var samples: [Sample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var labels: [String: String] = [:]
            let name: Substring
            if let open = series.firstIndex(of: "{"), series.hasSuffix("}") {
                name = series[..<open]
                // Our label values hold no `"`, `,` or `=`: a plain split is enough here.
                for pair in series[series.index(after: open)..<series.index(before: series.endIndex)].split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    guard kv.count == 2 else { continue }
                    labels[String(kv[0])] = String(kv[1].dropFirst().dropLast())
                }
            } else {
                name = series
            }
            samples.append(Sample(name: String(name), labels: labels, value: value))
        }
        self.samples = samples
    }

    /// The value of `name` with exactly `labels`, nil when there is no such series.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// Every series of `name`, by its labels.
    func series(_ name: String) -> [[String: String]: Double] {
        Dictionary(samples.filter { $0.name == name }.map { ($0.labels, $0.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// Whether the exposition declares `name` (`# TYPE name …`).
    func declares(_ name: String) -> Bool { text.contains("# TYPE \(name) ") }

    var description: String { text }
}
