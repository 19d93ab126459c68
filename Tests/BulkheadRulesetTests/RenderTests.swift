import Testing
@testable import BulkheadRuleset

@Suite struct RenderTests {
    @Test func architectureTableRendersLikeNftList() {
        let expected = """
        table inet bulkhead {
        \tset svc_shop_frontend_v4 {
        \t\ttype ipv4_addr
        \t\telements = { 172.18.0.2, 172.18.0.3 }
        \t}

        \tmap ingress_v4 {
        \t\ttype ipv4_addr : verdict
        \t\telements = { 172.18.0.4 : jump in_shop_api }
        \t}

        \tmap egress_v4 {
        \t\ttype ipv4_addr : verdict
        \t}

        \tset governed_v4 {
        \t\ttype ipv4_addr
        \t\tflags interval
        \t\telements = { 172.18.0.0/16 }
        \t}

        \tchain forward {
        \t\ttype filter hook forward priority filter - 10; policy accept;
        \t\tct state established,related accept
        \t\tct state invalid drop
        \t\tip daddr vmap @ingress_v4
        \t\tip saddr vmap @egress_v4
        \t\tip daddr @governed_v4 drop
        \t\tip saddr @governed_v4 drop
        \t}

        \tchain in_shop_api {
        \t\tip saddr @svc_shop_frontend_v4 tcp dport 8080 accept comment "policies/shop.yaml:14"
        \t\tcounter packets 0 bytes 0 drop
        \t}
        }

        """
        #expect(NFTText.table(architectureTable()) == expected)
    }

    @Test func ipv6TextMatchesInetNtop() {
        #expect(v6("fd00:0:0:0:0:0:0:1").description == "fd00::1")
        #expect(v6("::").description == "::")
        #expect(v6("::1").description == "::1")
        #expect(v6("2001:db8:0:1:0:0:0:1").description == "2001:db8:0:1::1")
        #expect(v6("2001:0:0:1:0:0:0:0").description == "2001:0:0:1::")
        #expect(v6("1:0:1:1:1:1:1:1").description == "1:0:1:1:1:1:1:1")
        #expect(v6("::ffff:1.2.3.4").description == "::ffff:1.2.3.4")
        #expect(IPv6Address("1::2::3") == nil)
        #expect(IPv4Address("1.2.3") == nil)
        #expect(IPv4Address("1.2.3.256") == nil)
    }

    @Test func prioritiesPrintSymbolically() {
        #expect(ChainPriority.text(-10, family: .inet, hook: .forward) == "filter - 10")
        #expect(ChainPriority.text(11, family: .inet, hook: .input) == "11")
        #expect(ChainPriority.text(-160, family: .inet, hook: .input) == "mangle - 10")
        #expect(ChainPriority.text(-100, family: .inet, hook: .input) == "-100")
        #expect(ChainPriority.text(-100, family: .inet, hook: .prerouting) == "dstnat")
        #expect(ChainPriority.text(40, family: .ip, hook: .input) == "security - 10")
        // Bridge names, as nft 1.0.6 printed them for the same priorities.
        #expect(ChainPriority.text(-300, family: .bridge, hook: .prerouting) == "dstnat")
        #expect(ChainPriority.text(-195, family: .bridge, hook: .forward) == "filter + 5")
        #expect(ChainPriority.text(100, family: .bridge, hook: .output) == "out")
        #expect(ChainPriority.text(300, family: .bridge, hook: .postrouting) == "srcnat")
        #expect(ChainPriority.text(0, family: .bridge, hook: .input) == "0")
    }

    @Test func concatKeyTypeIsPackedLikeNft() {
        let k = KeyType(.ipv4Addr, .ipv4Addr, .inetService)
        #expect(k.typeID == (7 << 12) | (7 << 6) | 13)
        #expect(k.byteLength == 12)
        #expect(KeyType(.ifname, .inetService).byteLength == 20)
    }

    @Test func commentUserdataIsNftTLV() {
        let r = Rule(chain: "c", [.verdict(.accept)], comment: "policies/shop.yaml:14")
        #expect(r.userdata == [0, 22] + Array("policies/shop.yaml:14".utf8) + [0])
        #expect(Rule.comment(fromUserdata: r.userdata) == "policies/shop.yaml:14")
    }

    @Test func explicitDependencyBeforeImplyingFieldIsDropped() {
        let r = Rule(chain: "c", [.match(Match(.metaL4proto, .value(.proto(IPProto.tcp)))),
                                  .match(Match(.tcpDport, .value(.port(22))))])
        #expect(r.description == "tcp dport 22")
    }
}
