import Foundation
import Testing

/// Runs the real `nft` (1.0.6) inside a throwaway network namespace, so rendering can be checked
/// against what nft itself prints. Never touches the host's ruleset.
enum Oracle {
    static var isRoot: Bool { getuid() == 0 }
    static var inCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Oracle tests run as root; in CI they also run when not root, so they fail instead of
    /// silently skipping.
    static var enabled: Bool { isRoot || inCI }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    @discardableResult
    static func run(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
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
        let out = outPipe.fileHandleForReading.readDataToEndOfFile()
        let err = errPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    /// Creates `bh-rs-test-<random>`, runs `body` with its name, and deletes it afterwards even
    /// when `body` throws.
    static func withNamespace<T>(_ body: (String) throws -> T) throws -> T {
        guard isRoot else { throw Failure(description: "oracle tests need root (CAP_SYS_ADMIN for ip netns, CAP_NET_ADMIN for nft)") }
        let ns = "bh-rs-test-\(UInt32.random(in: 0...UInt32.max))"
        let add = try run(["ip", "netns", "add", ns])
        guard add.status == 0 else { throw Failure(description: "ip netns add \(ns): \(add.err)") }
        defer { _ = try? run(["ip", "netns", "del", ns]) }
        return try body(ns)
    }

    /// `nft -f -` of `script` inside `ns`.
    static func load(_ script: String, in ns: String) throws {
        let r = try run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin: script)
        guard r.status == 0 else { throw Failure(description: "nft -f failed:\n\(r.err)\nscript:\n\(script)") }
    }

    /// `nft list table FAMILY NAME` inside `ns`.
    static func list(_ table: String, in ns: String) throws -> String {
        let r = try run(["ip", "netns", "exec", ns, "nft", "list", "table"] + table.split(separator: " ").map(String.init))
        guard r.status == 0 else { throw Failure(description: "nft list table \(table) failed: \(r.err)") }
        return r.out
    }
}
