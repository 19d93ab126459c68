import BulkheadSpawn
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

struct SpawnTests {
    /// Runs `command` on a thread that blocks SIGTERM and ignores SIGUSR1, as the Swift runtime's
    /// threads block signals, and returns what it printed.
    static func runFromBlockingThread(_ command: [String]) async throws -> (status: Int32, out: String) {
        try await withCheckedThrowingContinuation { c in
            Thread {
                var block = sigset_t(), old = sigset_t()
                sigemptyset(&block)
                sigaddset(&block, SIGTERM)
                pthread_sigmask(SIG_BLOCK, &block, &old)
                let previous = signal(SIGUSR1, SIG_IGN)
                defer {
                    signal(SIGUSR1, previous)
                    pthread_sigmask(SIG_SETMASK, &old, nil)
                }
                c.resume(with: Result {
                    var fds: [Int32] = [0, 0]
                    guard pipe(&fds) == 0 else { throw Spawn.Failure(command: ["pipe"], errno: errno) }
                    let pid = try Spawn.start(command, stdin: .null, stdout: .descriptor(fds[1]))
                    close(fds[1])
                    let out = FileHandle(fileDescriptor: fds[0], closeOnDealloc: true).readDataToEndOfFile()
                    return (Spawn.wait(pid).status, String(decoding: out, as: UTF8.self))
                })
            }.start()
        }
    }

    @Test func childStartsWithNoSignalBlockedOrIgnored() async throws {
        let (status, out) = try await Self.runFromBlockingThread(["cat", "/proc/self/status"])
        #expect(status == 0)
        func mask(_ key: String) -> UInt64? {
            out.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { UInt64($0.dropFirst(key.count).trimmingCharacters(in: .whitespaces), radix: 16) }
        }
        // Signals 32 and 33 are glibc's own (thread cancellation, setxid): sigfillset leaves them
        // out, so they keep the parent's disposition. Every other signal is at its default.
        let glibcInternal: UInt64 = 1 << 31 | 1 << 32
        #expect(mask("SigBlk:") == 0, "SIGTERM (blocked by the spawning thread) is not blocked in the child")
        #expect(mask("SigIgn:").map { $0 & ~glibcInternal } == 0, "SIGUSR1 (ignored by the parent) is not ignored in the child")
    }

    @Test func exitCodesAndSignalsAreReportedAsShellsDo() throws {
        let three = try Spawn.start(["sh", "-c", "exit 3"])
        #expect(Spawn.wait(three).status == 3)
        let killed = try Spawn.start(["sh", "-c", "kill -TERM $$"])
        #expect(Spawn.wait(killed).status == 128 + SIGTERM)
    }

    @Test func aMissingCommandIsAFailureNamingIt() {
        #expect(throws: Spawn.Failure(command: ["bh-no-such-command"], errno: ENOENT)) {
            try Spawn.start(["bh-no-such-command"])
        }
    }
}
