import BulkheadAddress
import Testing

/// The inventory's `IPAddress` and the ruleset model's per-family types are one model: they
/// convert both ways without loss and print the same text.
struct ConversionTests {
    static let texts = ["0.0.0.0", "10.1.2.3", "255.255.255.255", "::", "::1", "fd00:20::2", "2001:db8::ff00:42:8329",
                        "fe80::1:2:3:4", "1:2:3:4:5:6:7:8", "::ffff:192.0.2.1", "2001:db8:0:0:1::1"]

    @Test(arguments: texts) func convertsBothWaysAndPrintsAlike(_ text: String) throws {
        let address = try #require(IPAddress(text))
        if let v4 = address.ipv4 {
            #expect(address.ipv6 == nil)
            #expect(IPv4Address(text) == v4)
            #expect(IPAddress(v4) == address)
            #expect(v4.description == address.description)
        } else {
            let v6 = try #require(address.ipv6)
            #expect(IPv6Address(text) == v6)
            #expect(IPAddress(v6) == address)
            #expect(v6.description == address.description)
            #expect(v6.bytes == address.bytes)
        }
    }
}
