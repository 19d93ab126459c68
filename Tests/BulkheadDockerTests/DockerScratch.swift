import BulkheadTestSupport
import Foundation

/// When the Docker tests run: always in CI (where an unreachable dockerd must fail them), and
/// elsewhere only when dockerd answers (so a laptop without Docker skips them visibly).
enum DockerTests {
    static let image = "bulkhead/busybox:test"

    static var reachable: Bool {
        (try? TestSystem.run(["docker", "version", "--format", "{{.Server.APIVersion}}"]).status) == 0
    }

    static var enabled: Bool { TestSystem.inCI || reachable }

    /// Throws a clear failure unless dockerd answers and the test image exists (importing it
    /// with scripts/lib/docker.sh when missing).
    static func require() throws {
        guard reachable else {
            throw TestSystem.Failure("dockerd is not reachable at /var/run/docker.sock: start it (scripts/lib/docker.sh ensure_dockerd) — Docker tests must not skip in CI")
        }
        try imageLock.withLock {
            if (try? TestSystem.run(["docker", "image", "inspect", image]).status) != 0 {
                try TestSystem.check(["bash", "-c", "source '\(TestSystem.repositoryRoot)/scripts/lib/docker.sh' && ensure_test_image"])
            }
        }
    }

    private static let imageLock = NSLock()
}

/// One test's own Docker objects: a uniquely named IPv6-enabled network with its own /24 and /64,
/// and the containers the test starts on it. `remove()` deletes exactly these, and nothing else.
final class DockerScratch: @unchecked Sendable {
    let tag: String
    let network: String
    let subnetV4: String
    let subnetV6: String
    let project: String
    private(set) var containers: [String] = []

    private init(tag: String, subnetV4: String, subnetV6: String) {
        self.tag = tag
        self.network = "\(tag)_default"
        self.project = tag
        self.subnetV4 = subnetV4
        self.subnetV6 = subnetV6
    }

    /// Creates the network, retrying with other random subnets when one overlaps an existing pool.
    static func make() throws -> DockerScratch {
        try DockerTests.require()
        var lastError = ""
        for _ in 0..<8 {
            let n = Int.random(in: 0..<(51 * 256))
            let tag = "bhtest-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
            // 10.200.0.0–10.250.255.0 /24s and fd00::/8 /64s: private, and clear of Docker's
            // default pools (172.17–31, 192.168).
            let v4 = "10.\(200 + n / 256).\(n % 256).0/24"
            let v6 = "fd\(String(format: "%02x", UInt8.random(in: 0...255))):\(hex(UInt16.random(in: 0...0xffff))):\(hex(UInt16.random(in: 0...0xffff))):\(hex(UInt16.random(in: 0...0xffff)))::/64"
            let scratch = DockerScratch(tag: tag, subnetV4: v4, subnetV6: v6)
            let r = try TestSystem.run(["docker", "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6,
                                        "--label", "io.bulkhead.test=\(tag)", scratch.network])
            if r.status == 0 { return scratch }
            lastError = r.err
        }
        throw TestSystem.Failure("cannot create a test network: \(lastError)")
    }

    /// `docker run -d` (or `docker create` with `start: false`) of a compose-labelled container
    /// for `service` on the scratch network; returns its name.
    @discardableResult
    func run(_ service: String, start: Bool = true, command: [String] = ["sleep", "600"]) throws -> String {
        let name = "\(tag)-\(service)-1"
        containers.append(name)
        try TestSystem.check(["docker", start ? "run" : "create"] + (start ? ["-d"] : []) + [
            "--name", name, "--network", network,
            "--label", "com.docker.compose.project=\(project)",
            "--label", "com.docker.compose.service=\(service)",
            "--label", "io.bulkhead.test=\(tag)",
            DockerTests.image,
        ] + command)
        return name
    }

    /// `docker inspect` of one of our containers: its id and its addresses on the scratch network.
    func inspect(_ name: String) throws -> (id: String, ipv4: String, ipv6: String) {
        let out = try TestSystem.check(["docker", "inspect", "--format",
                                        "{{.Id}} {{with index .NetworkSettings.Networks \"\(network)\"}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}", name])
        let f = out.split(separator: " ", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        return (f[0], f.count > 1 ? f[1] : "", f.count > 2 ? f[2] : "")
    }

    /// Removes this test's containers, then its network. Never throws: it runs in `defer`.
    func remove() {
        for name in containers.reversed() {
            _ = try? TestSystem.run(["docker", "rm", "-f", name])
        }
        containers.removeAll()
        _ = try? TestSystem.run(["docker", "network", "rm", network])
    }

    func forget(_ name: String) {
        containers.removeAll { $0 == name }
    }

    private static func hex<T: BinaryInteger>(_ v: T) -> String { String(v, radix: 16) }
}

/// Runs `body`, failing the test with `what` if it takes longer than `limit`.
func withTimeout<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw TestSystem.Failure("timed out after \(limit) waiting for \(what)")
        }
        return value
    }
}
