import BulkheadNamespace
import BulkheadTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

struct NetworkNamespaceTests {
    static func currentNamespace() throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self/ns/net")
    }

    @Test func bodyRunsInsideTheNamespaceAndTheThreadComesBack() throws {
        try TestSystem.requireRoot()
        let own = try Self.currentNamespace()
        try TestSystem.withNamespace(prefix: "bh-nsent") { ns in
            let inside = try NetworkNamespace.withEntered(ns) { try Self.currentNamespace() }
            let named = try FileManager.default.attributesOfItem(atPath: "/var/run/netns/\(ns)")[.systemFileNumber] as? Int
            #expect(inside != own)
            #expect(inside == "net:[\(try #require(named))]")
            #expect(try Self.currentNamespace() == own, "the thread is back in its own namespace")
        }
    }

    @Test func aMissingNamespaceIsAnOpenFailureNamingItsPath() {
        #expect(throws: NetworkNamespace.Failure(name: "bh-no-such-ns", path: "/var/run/netns/bh-no-such-ns", call: "open", errno: ENOENT)) {
            try NetworkNamespace.withEntered("bh-no-such-ns") { 1 }
        }
    }
}
