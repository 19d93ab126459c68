import BulkheadTestSupport
import Foundation
import Testing

/// `scripts/lib/test-summary.sh`, which closes `scripts/test.sh`: CI must not pass when a kernel or
/// Docker test skipped, when a test process died before its summary, or when a run ran nothing.
/// The logs below are Swift Testing's console output as `swift test` prints it (6.3.1).
@Suite struct TestSummaryScript {
    static let script = TestSystem.repositoryRoot + "/scripts/lib/test-summary.sh"

    static let passing = """
        ↳ Testing Library Version: 6.3.1 (937120cbc281cf2)
        ✔ Test d() passed after 0.001 seconds.
        ✔ Test e() passed after 0.001 seconds.
        ✔ Test run with 2 tests in 1 suite passed after 0.001 seconds.
        """
    static let skipping = """
        ➜ Suite S skipped: "needs root"
        ➜ Test a() skipped: "needs root"
        ➜ Test b() skipped: "needs root"
        ✔ Test d() passed after 0.001 seconds.
        ✔ Test run with 3 tests in 1 suite passed after 0.001 seconds.
        """
    static let failing = """
        ✘ Test e() recorded an issue at T.swift:5:29: Expectation failed: Bool(false)
        ✔ Test d() passed after 0.001 seconds.
        ✘ Test e() failed after 0.001 seconds with 1 issue.
        ✘ Test run with 2 tests in 1 suite failed after 0.001 seconds with 1 issue.
        """
    /// A test process that crashed (or was killed) mid-run prints no closing line.
    static let crashed = """
        ◇ Test d() started.
        ✔ Test d() passed after 0.001 seconds.
        ◇ Test e() started.
        """
    static let empty = "✔ Test run with 0 tests in 0 suites passed after 0.001 seconds.\n"

    func summarise(_ logs: [String], ci: Bool) throws -> TestSystem.Output {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-summary-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var paths: [String] = []
        for (i, log) in logs.enumerated() {
            let path = "\(dir)/run\(i).log"
            try log.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        return try TestSystem.run(["CI=\(ci ? "true" : "")", "bash", Self.script] + paths)
    }

    @Test func cleanRunsPassWithTheirCounts() throws {
        let r = try summarise([Self.passing, Self.passing], ci: true)
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out == "tests: 4 passed, 0 failed, 0 skipped\n")
    }

    @Test func aSkipFailsCIAndNamesTheTest() throws {
        let r = try summarise([Self.passing, Self.skipping], ci: true)
        #expect(r.status == 1)
        #expect(r.out == "tests: 3 passed, 0 failed, 2 skipped\n")
        #expect(r.err.contains("[run1] ➜ Test a() skipped: \"needs root\""))
        #expect(r.err.contains("error: 2 tests skipped; in CI every kernel and Docker test must run"))
    }

    @Test func aSkipOutsideCIWarns() throws {
        let r = try summarise([Self.skipping], ci: false)
        #expect(r.status == 0)
        #expect(r.err.contains("warning: 2 tests skipped"))
    }

    @Test func aFailureFails() throws {
        let r = try summarise([Self.failing], ci: false)
        #expect(r.status == 1)
        #expect(r.out == "tests: 1 passed, 1 failed, 0 skipped\n")
    }

    @Test func aRunWithoutItsSummaryFails() throws {
        let r = try summarise([Self.passing, Self.crashed], ci: false)
        #expect(r.status == 1)
        #expect(r.err.contains("error: the 'run1' run has no summary line"))
    }

    @Test func aRunOfNoTestFails() throws {
        let r = try summarise([Self.empty], ci: false)
        #expect(r.status == 1)
        #expect(r.err.contains("error: the 'run0' run ran no test"))
    }
}
