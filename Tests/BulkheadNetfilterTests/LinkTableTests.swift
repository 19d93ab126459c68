import BulkheadTestSupport
import Foundation
import Testing
@testable import BulkheadNetfilter

/// Finding a container's bridge port with rtnetlink: the host side of its veth is the link whose
/// ifindex is the container interface's peer index.
@Suite(.serialized) struct LinkTableTests {
    @Test func findsTheHostSideOfAContainersVeth() throws {
        try TestSystem.withNamespace(prefix: "bh-links-host") { host in
            try TestSystem.withNamespace(prefix: "bh-links-c") { container in
                try TestSystem.check(["ip", "-n", host, "link", "add", "br-test", "type", "bridge"])
                try TestSystem.check(["ip", "-n", host, "link", "add", "vethhost0", "type", "veth", "peer", "name", "eth0",
                                      "address", "02:42:0a:00:00:07", "netns", container])
                try TestSystem.check(["ip", "-n", host, "link", "set", "vethhost0", "master", "br-test"])
                // A decoy with the same name on the container side of another pair: names prove nothing.
                try TestSystem.check(["ip", "-n", host, "link", "add", "decoy", "type", "veth", "peer", "name", "vethhost1"])
                let finder = NetlinkPortFinder(namespace: host)
                #expect(try finder.bridgePorts() == ["br-test": ["vethhost0"]])
                #expect(try finder.hostPorts(containerNamespace: "/var/run/netns/" + container) == ["02:42:0a:00:00:07": "vethhost0"])
                // The runtime's namespace directory, scanned without asking Docker: a directory
                // holding this container's namespace (a bind mount, as Docker keeps its sandboxes).
                let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bh-sandboxes-\(getpid())").path
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                defer { _ = try? TestSystem.run(["umount", dir + "/sandbox1"]); try? FileManager.default.removeItem(atPath: dir) }
                FileManager.default.createFile(atPath: dir + "/sandbox1", contents: nil)
                try TestSystem.check(["mount", "--bind", "/var/run/netns/" + container, dir + "/sandbox1"])
                let scanning = NetlinkPortFinder(namespace: host, sandboxDirectory: dir)
                let wanted: Set = ["02:42:0a:00:00:07"]
                // Docker moves the veth into the namespace first and sets its MAC there afterwards:
                // a read in between sees another MAC, which must not stay cached.
                try TestSystem.check(["ip", "-n", container, "link", "set", "eth0", "address", "02:42:0a:00:00:09"])
                #expect(try scanning.sandboxPorts(wanted: wanted) == ["02:42:0a:00:00:09": "vethhost0"], "the MAC as the kernel has it")
                try TestSystem.check(["ip", "-n", container, "link", "set", "eth0", "address", "02:42:0a:00:00:07"])
                #expect(try scanning.sandboxPorts(wanted: wanted) == ["02:42:0a:00:00:07": "vethhost0"],
                        "a cached MAC the runtime does not report is read again")
                #expect(try scanning.sandboxPorts(wanted: wanted) == ["02:42:0a:00:00:07": "vethhost0"], "again, from the cache")
                // The container's veth is replaced (network reconnected): the cache notices.
                try TestSystem.check(["ip", "-n", host, "link", "del", "vethhost0"])
                try TestSystem.check(["ip", "-n", host, "link", "add", "vethhost2", "type", "veth", "peer", "name", "eth0",
                                      "address", "02:42:0a:00:00:07", "netns", container])
                #expect(try scanning.sandboxPorts(wanted: wanted) == ["02:42:0a:00:00:07": "vethhost2"])
                #expect(try NetlinkPortFinder(sandboxDirectory: dir + "/missing").sandboxPorts(wanted: wanted) == nil)
            }
        }
    }

    @Test func aMissingNamespaceIsANamedError() {
        #expect {
            try NetlinkPortFinder().hostPorts(containerNamespace: "/var/run/netns/bh-no-such-namespace")
        } throws: { error in
            guard case NetfilterError.namespace(let name, let err, _) = error else { return false }
            return name == "/var/run/netns/bh-no-such-namespace" && err == ENOENT
        }
    }

    /// Bytes from the kernel are checked: a message longer than the datagram, or an attribute
    /// running past its message, is an error or ignored, never a crash.
    @Test func malformedDumpsAreErrorsNotCrashes() {
        // nlmsghdr claiming 64 bytes in a 20-byte datagram.
        let short: [UInt8] = [64, 0, 0, 0, 16, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(throws: NetfilterError.malformedReply("rtnetlink message of 64 bytes in a 20-byte reply (link dump of test)")) {
            _ = try LinkTable.parse(short[...], what: "test")
        }
        // RTM_NEWLINK (32 bytes of headers) + an IFLA_IFNAME attribute claiming 200 bytes.
        var link = [UInt8](repeating: 0, count: 40)
        link[0] = 40; link[4] = 16; link[20] = 9
        link[32] = 200; link[34] = 3
        let parsed = try? LinkTable.parse(link[...], what: "test")
        #expect(parsed?.links == [LinkInfo(index: 9, name: "")])
        #expect(parsed?.done == false)
    }
}
