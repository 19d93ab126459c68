import Foundation

/// Helpers for tests that touch the kernel: run a command, make a throwaway network namespace,
/// and insist on root where a test needs it (in CI such a test fails; it never skips).
public enum TestSystem {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    public static var isRoot: Bool { getuid() == 0 }
    public static var inCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Throws a clear failure when not root: kernel tests must fail, not skip, when they cannot run.
    public static func requireRoot(_ what: String = "this test") throws {
        guard isRoot else { throw Failure("\(what) needs root (CAP_SYS_ADMIN for network namespaces, CAP_NET_ADMIN for nftables)") }
    }

    /// The repository root (tests read `policies/` from it).
    public static let repositoryRoot: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)  // Tests/Support/TestSupport.swift
        return parts.joined(separator: "/")
    }()

    public struct Output: Sendable {
        public var status: Int32
        public var out: String
        public var err: String
    }

    /// Runs `args` (looked up on PATH) with optional standard input.
    @discardableResult
    public static func run(_ args: [String], stdin: String? = nil) throws -> Output {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let outPipe = Pipe(), errPipe = Pipe(), inPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = inPipe
        try p.run()
        if let stdin { inPipe.fileHandleForWriting.write(Data(stdin.utf8)) }
        try inPipe.fileHandleForWriting.close()
        // Read both pipes concurrently so a chatty command cannot fill one and block.
        final class Box: @unchecked Sendable { var data = Data() }  // written once, read after wait()
        let errBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errBox.data = errPipe.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = outPipe.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let errData = errBox.data
        p.waitUntilExit()
        return Output(status: p.terminationStatus, out: String(decoding: outData, as: UTF8.self), err: String(decoding: errData, as: UTF8.self))
    }

    /// Runs `args` and throws with its stderr unless it exits 0.
    @discardableResult
    public static func check(_ args: [String], stdin: String? = nil) throws -> String {
        let r = try run(args, stdin: stdin)
        guard r.status == 0 else { throw Failure("\(args.joined(separator: " ")) exited \(r.status): \(r.err)") }
        return r.out
    }

    /// Creates a network namespace `<prefix>-<random>`, runs `body` with its name, and deletes it
    /// afterwards even when `body` throws.
    public static func withNamespace<T>(prefix: String = "bh-test", _ body: (String) throws -> T) throws -> T {
        try requireRoot("a network-namespace test")
        let ns = "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
        try check(["ip", "netns", "add", ns])
        defer { _ = try? run(["ip", "netns", "del", ns]) }
        return try body(ns)
    }

    /// `nft` inside namespace `ns` (an oracle: the product itself never runs nft).
    @discardableResult
    public static func nft(_ args: [String], in ns: String, stdin: String? = nil) throws -> String {
        try check(["ip", "netns", "exec", ns, "nft"] + args, stdin: stdin)
    }
}
