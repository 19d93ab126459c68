import BulkheadPolicy
import BulkheadYAML
import Foundation
import Glibc
import Testing

/// A scratch policy directory holding one valid file, removed afterwards.
final class ScratchDir: Sendable {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("bh-files-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try base.write(toFile: path + "/shop.yaml", atomically: true, encoding: .utf8)
    }

    func link(_ name: String, to target: String) throws {
        try FileManager.default.createSymbolicLink(atPath: path + "/" + name, withDestinationPath: target)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs `body` on a thread of its own and waits at most `seconds`: a hang (today's loader on a
/// FIFO or a symlink loop) fails the test instead of hanging the suite. The stuck thread is
/// abandoned.
final class HangBox<T>: @unchecked Sendable { var value: T? }  // written before the signal, read after

func withHangGuard<T: Sendable>(_ seconds: Double = 20, _ body: @escaping @Sendable () -> T) -> T? {
    let box = HangBox<T>()
    let done = DispatchSemaphore(value: 0)
    Thread {
        box.value = body()
        done.signal()
    }.start()
    guard done.wait(timeout: .now() + seconds) == .success else { return nil }
    return box.value
}

func loadGuarded(_ path: String) -> PolicyLoader.Result? {
    withHangGuard { PolicyLoader.load(paths: [path]) }
}

@Suite struct PolicyDirectories {
    @Test func twoSelfLinksEndAndReadEachFileOnce() throws {
        let dir = try ScratchDir()
        try dir.link("a", to: ".")
        try dir.link("b", to: ".")
        let r = try #require(loadGuarded(dir.path), "the walk did not finish: symlink loop")
        #expect(r.files == [dir.path + "/shop.yaml"])
        #expect(!r.diagnostics.contains { $0.code == .duplicateSegment })
        let skipped = r.diagnostics.filter { $0.code == .skippedEntry }
        #expect(skipped.map(\.file) == [dir.path + "/a", dir.path + "/b"])
        #expect(skipped.allSatisfy { $0.message.contains("symlink loop") && $0.severity == .warning })
        #expect(!r.hasErrors)
    }

    @Test func oneSelfLinkGivesNoDuplicateSegments() throws {
        let dir = try ScratchDir()
        try dir.link("again", to: ".")
        let r = try #require(loadGuarded(dir.path))
        #expect(r.diagnostics.filter { $0.code == .duplicateSegment }.isEmpty, "\(r.diagnostics.map(\.formatted))")
        #expect(r.diagnostics.filter { $0.code == .skippedEntry }.count == 1)
        #expect(r.policies.segments.map(\.name) == ["shop"])
    }

    @Test func fileReachedTwiceIsReadOnce() throws {
        let dir = try ScratchDir()
        try dir.link("copy.yaml", to: "shop.yaml")
        let r = try #require(loadGuarded(dir.path))
        #expect(r.files == [dir.path + "/copy.yaml"])
        expectOne(r.diagnostics, .skippedEntry, at: 1, 1, file: dir.path + "/shop.yaml", containing: "same file as \(dir.path)/copy.yaml")
        #expect(!r.hasErrors)
    }

    @Test func symlinkToSymlinkIsRefused() throws {
        let dir = try ScratchDir()
        try dir.link("hop1.yaml", to: "shop.yaml")
        try dir.link("hop2.yaml", to: "hop1.yaml")
        let r = try #require(loadGuarded(dir.path))
        expectOne(r.diagnostics, .unreadable, at: 1, 1, file: dir.path + "/hop2.yaml", containing: "symlink to another symlink")
    }

    /// Kubernetes mounts a ConfigMap as `x.yaml -> ..data/x.yaml`, `..data -> ..2024_…/`: one link
    /// per file (the directory link is an inner component), and hidden entries are skipped.
    @Test func configMapLayoutLoads() throws {
        let dir = try ScratchDir()
        try FileManager.default.removeItem(atPath: dir.path + "/shop.yaml")
        try FileManager.default.createDirectory(atPath: dir.path + "/..2026_11_29", withIntermediateDirectories: false)
        try base.write(toFile: dir.path + "/..2026_11_29/shop.yaml", atomically: true, encoding: .utf8)
        try dir.link("..data", to: "..2026_11_29")
        try dir.link("shop.yaml", to: "..data/shop.yaml")
        let r = try #require(loadGuarded(dir.path))
        #expect(r.diagnostics.isEmpty, "\(r.diagnostics.map(\.formatted))")
        #expect(r.policies.segments.map(\.name) == ["shop"])
    }

    @Test func fifoIsRefusedWithoutBlocking() throws {
        let dir = try ScratchDir()
        #expect(mkfifo(dir.path + "/x.yaml", 0o644) == 0)
        let r = try #require(loadGuarded(dir.path), "validate hung in open() on a FIFO")
        expectOne(r.diagnostics, .unreadable, at: 1, 1, file: dir.path + "/x.yaml", containing: "a FIFO, not a regular file")
        #expect(r.unreadablePath)
        // Given directly, too.
        let direct = try #require(withHangGuard { PolicyLoader.load(paths: [dir.path + "/x.yaml"]) })
        expectOne(direct.diagnostics, .unreadable, at: 1, 1, containing: "a FIFO")
    }

    @Test func deviceFilesAreRefused() throws {
        let dir = try ScratchDir()
        try dir.link("null.yaml", to: "/dev/null")
        #expect(mknod(dir.path + "/zero.yaml", S_IFCHR | 0o644, dev_t((1 << 8) | 5)) == 0, "mknod needs root")
        let r = try #require(loadGuarded(dir.path))
        expectOne(r.diagnostics.filter { $0.file.hasSuffix("null.yaml") }, .unreadable, at: 1, 1, containing: "a character device")
        expectOne(r.diagnostics.filter { $0.file.hasSuffix("zero.yaml") }, .unreadable, at: 1, 1, containing: "a character device")
    }

    @Test func socketIsRefused() throws {
        let dir = try ScratchDir()
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = dir.path + "/s.yaml"
        _ = withUnsafeMutableBytes(of: &address.sun_path) { raw in path.utf8CString.withUnsafeBytes { raw.copyMemory(from: $0) } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        let r = try #require(loadGuarded(dir.path))
        expectOne(r.diagnostics, .unreadable, at: 1, 1, file: path, containing: "a socket, not a regular file")
    }

    /// A failed opendir says why: EMFILE once surfaced as "permission denied".
    @Test func errnoIsNamed() {
        #expect(SystemError.describe(EMFILE).contains("EMFILE"))
        #expect(SystemError.describe(EMFILE).contains("too many open files"))
        #expect(!SystemError.describe(EMFILE).contains("permission denied"))
        #expect(SystemError.describe(EACCES).contains("permission denied"))
    }
}
