import BulkheadDocker
import BulkheadInventory
import BulkheadTestSupport
import Foundation
import Synchronization

/// When these tests run: always in CI (where a missing dockerd or root must fail them), and
/// elsewhere only as root with a reachable dockerd (so a laptop skips them visibly).
enum DockerE2E {
    static let image = "bulkhead/busybox:test"
    /// Label on everything these tests create, so a leftover is recognisable (`docker ps --filter`).
    static let label = "io.bulkhead.e2e"

    static var reachable: Bool {
        (try? TestSystem.run(["docker", "version", "--format", "{{.Server.APIVersion}}"]).status) == 0
    }

    static var enabled: Bool { TestSystem.inCI || (TestSystem.isRoot && reachable) }

    /// Throws a clear failure unless we are root, dockerd answers and the test image exists.
    static func require() async throws {
        try TestSystem.requireRoot("the agent's Docker tests (nftables in the host namespace)")
        let version = try await Command.run(["docker", "version", "--format", "{{.Server.Version}}"])
        guard version.status == 0 else {
            throw TestSystem.Failure("dockerd is not reachable at /var/run/docker.sock (\(version.err.trimmingCharacters(in: .whitespacesAndNewlines))): start it with scripts/lib/docker.sh ensure_dockerd — these tests must not skip in CI")
        }
        if try await Command.run(["docker", "image", "inspect", image]).status != 0 {
            try await Command.dockerLib("ensure_test_image")
        }
    }
}

/// What every test container runs: two one-line TCP servers that answer with their port (so a
/// probe that reads "ok5432" reached the real server, not something else), and a shell that exits
/// on SIGTERM at once (sh as PID 1 ignores it otherwise, and `docker stop` or dockerd's shutdown
/// would wait out the stop timeout for every container).
///
/// busybox 1.35 (Debian's busybox-static) has the small nc: no `-z`, no `-k`; `-ll -e` is its
/// persistent server. Its `wget` crashes in this static build, and `httpd` answers nothing to a
/// bare connect, so both servers are `nc`.
let serverCommand = ["sh", "-c", "trap 'exit 0' TERM; nc -ll -p 5432 -e echo ok5432 & nc -ll -p 8080 -e echo ok8080 & sleep 100000 & wait"]

/// One test's Docker objects: an IPv6 network with its own /24 and /64, and compose-labelled
/// containers on it. `remove()` deletes exactly these.
final class TestNetwork: Sendable {
    let tag: String
    let name: String
    /// The compose project label of every container (and the segment's name).
    let project: String
    let subnetV4: IPNetwork
    let subnetV6: IPNetwork
    private let created = Mutex<[String]>([])

    private init(tag: String, subnetV4: IPNetwork, subnetV6: IPNetwork) {
        self.tag = tag
        self.name = "\(tag)_default"
        self.project = tag
        self.subnetV4 = subnetV4
        self.subnetV6 = subnetV6
    }

    /// Creates the network, trying other subnets when one overlaps a network that exists.
    ///
    /// 10.251–10.254.x.0/24 and fd00:fbxx:yy::/64: private, outside Docker's default pools
    /// (172.17–31, 192.168) and outside the 10.200–10.250 range the other Docker suite uses.
    static func make() async throws -> TestNetwork {
        var lastError = ""
        for _ in 0..<8 {
            let n = Int.random(in: 0..<(4 * 256))
            let tag = "bhe2e-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
            let v4 = IPNetwork("10.\(251 + n / 256).\(n % 256).0/24")!
            let v6 = IPNetwork("fd00:fb\(String(format: "%02x", n / 256)):\(String(n % 256, radix: 16))::/64")!
            let network = TestNetwork(tag: tag, subnetV4: v4, subnetV6: v6)
            let r = try await Command.run(["docker", "network", "create", "--ipv6", "--subnet", v4.description, "--subnet", v6.description,
                                           "--label", "\(DockerE2E.label)=\(tag)", network.name])
            if r.status == 0 { return network }
            lastError = r.err
        }
        throw TestSystem.Failure("cannot create a test network: \(lastError)")
    }

    /// The address with host part `host` in each subnet (for `--ip`/`--ip6`).
    func address(_ host: UInt8) -> (v4: IPAddress, v6: IPAddress) {
        let v4 = subnetV4.description.split(separator: "/")[0].split(separator: ".").dropLast().joined(separator: ".") + ".\(host)"
        let v6 = subnetV6.description.split(separator: "/")[0].replacingOccurrences(of: "::", with: "::\(String(host, radix: 16))")
        return (IPAddress(v4)!, IPAddress(v6)!)
    }

    /// `docker run -d` of a container labelled as compose service `service` of this project
    /// (`service: nil` gives it no compose labels: it matches no service).
    ///
    /// - Parameters:
    ///   - fixedHost: pins both addresses (`--ip`, `--ip6`), so the container keeps its identity
    ///     when dockerd restarts it.
    ///   - restart: `--restart always`, for the containers that must come back after dockerd does.
    @discardableResult
    func run(_ suffix: String, service: String?, command: [String] = serverCommand, fixedHost: UInt8? = nil,
             restart: Bool = false, detach: Bool = true) async throws -> String {
        let full = "\(tag)-\(suffix)"
        created.withLock { $0.append(full) }
        var args = ["docker", "run"] + (detach ? ["-d"] : []) + ["--name", full, "--network", name, "--label", "\(DockerE2E.label)=\(tag)",
                    "--stop-timeout", "2"]
        if let service {
            args += ["--label", "com.docker.compose.project=\(project)", "--label", "com.docker.compose.service=\(service)"]
        }
        if let fixedHost {
            let a = address(fixedHost)
            args += ["--ip", a.v4.description, "--ip6", a.v6.description]
        }
        if restart { args += ["--restart", "always"] }
        try await Command.check(args + [DockerE2E.image] + command)
        return full
    }

    /// Removes this test's containers, then its network. Never throws: it runs in `defer`.
    func remove() {
        let names = created.withLock { $0 }
        if !names.isEmpty { _ = try? TestSystem.run(["docker", "rm", "-f"] + names) }
        _ = try? TestSystem.run(["docker", "network", "rm", name])
    }
}
