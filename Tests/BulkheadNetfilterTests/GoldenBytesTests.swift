import BulkheadRuleset
import Testing
@testable import BulkheadNetfilter

/// Wire-level encodings, byte for byte. Sequence numbers (bytes 8–11) and port ids (12–15) are
/// masked; everything else is what libnftnl writes and the kernel reads. Integers inside
/// netlink attributes are big endian (nf_tables convention); netlink headers and attribute
/// headers are host order (little endian here). These tests need no privileges.
struct GoldenBytesTests {
    /// Encodes `tx` and returns the operation messages with seq and port id zeroed.
    static func messages(_ tx: Transaction, generation: UInt32? = nil) throws -> (begin: [UInt8], ops: [[UInt8]]) {
        var seq: UInt32 = 100
        let batch = try TransactionEncoder(recordMessages: true).encode(tx, generation: generation, seq: { defer { seq += 1 }; return seq })
        func mask(_ b: [UInt8]) -> [UInt8] {
            var b = b
            for i in 8..<16 { b[i] = 0 }
            return b
        }
        let first = Array(batch.parts[0])
        let beginLength = Int(first[0]) | Int(first[1]) << 8
        return (mask(Array(first.prefix(beginLength))), batch.recordedMessages.map { mask($0.bytes) })
    }

    static func ipTransaction() throws -> Transaction {
        var tx = Transaction(table: TableID(family: .ip, name: "bh"), current: nil)
        try tx.add(.table(Table(family: .ip, name: "bh")))
        try tx.add(.chain(Chain(name: "fwd")))
        try tx.add(.set(NFTSet(name: "svc", key: KeyType(.ipv4Addr))))
        try tx.add(.rule(Rule(chain: "fwd", [.match(Match(.ipSaddr, .set("svc"))), .counter(), .verdict(.accept)])))
        return tx
    }

    @Test func batchBeginCarriesTheGenerationId() throws {
        let (begin, _) = try Self.messages(try Self.ipTransaction(), generation: 7)
        #expect(begin == [
            0x1c, 0x00, 0x00, 0x00,  // nlmsg_len 28
            0x10, 0x00,              // nlmsg_type NFNL_MSG_BATCH_BEGIN (16)
            0x09, 0x00,              // flags NLM_F_REQUEST | NLM_F_ECHO (echo: the kernel reports the new genid)
            0, 0, 0, 0, 0, 0, 0, 0,  // seq, port id (masked)
            0x00,                    // nfgen_family AF_UNSPEC
            0x00,                    // version NFNETLINK_V0
            0x00, 0x0a,              // res_id NFNL_SUBSYS_NFTABLES (10), big endian
            0x08, 0x00, 0x01, 0x00,  // attr len 8, NFNL_BATCH_GENID
            0x00, 0x00, 0x00, 0x07,  //   generation 7 (be32): ERESTART if the ruleset moved on
        ])
        let (noGen, _) = try Self.messages(try Self.ipTransaction(), generation: nil)
        #expect(noGen.count == 20, "without a generation the begin message has no attribute")
    }

    @Test func table() throws {
        let (_, ops) = try Self.messages(try Self.ipTransaction())
        #expect(ops[0] == [
            0x24, 0x00, 0x00, 0x00,  // nlmsg_len 36
            0x00, 0x0a,              // type (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE (0)
            0x05, 0x04,              // flags NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
            0, 0, 0, 0, 0, 0, 0, 0,  // seq, port id (masked)
            0x02, 0x00, 0x00, 0x00,  // nfgenmsg: family NFPROTO_IPV4, version 0, res_id 0
            0x07, 0x00, 0x01, 0x00,  // attr len 7, NFTA_TABLE_NAME
            0x62, 0x68, 0x00, 0x00,  //   "bh\0" + pad
            0x08, 0x00, 0x02, 0x00,  // attr len 8, NFTA_TABLE_FLAGS
            0x00, 0x00, 0x00, 0x00,  //   0 (no ownership flags asked for)
        ])
    }

    @Test func regularChain() throws {
        let (_, ops) = try Self.messages(try Self.ipTransaction())
        #expect(ops[1] == [
            0x24, 0x00, 0x00, 0x00,  // nlmsg_len 36
            0x03, 0x0a,              // NFT_MSG_NEWCHAIN (3)
            0x05, 0x04,              // REQUEST | ACK | CREATE
            0, 0, 0, 0, 0, 0, 0, 0,
            0x02, 0x00, 0x00, 0x00,  // family ip
            0x07, 0x00, 0x01, 0x00,  // NFTA_CHAIN_TABLE
            0x62, 0x68, 0x00, 0x00,  //   "bh"
            0x08, 0x00, 0x03, 0x00,  // NFTA_CHAIN_NAME
            0x66, 0x77, 0x64, 0x00,  //   "fwd"
        ])
    }

    @Test func set() throws {
        let (_, ops) = try Self.messages(try Self.ipTransaction())
        #expect(ops[2] == [
            0x50, 0x00, 0x00, 0x00,  // nlmsg_len 80
            0x09, 0x0a,              // NFT_MSG_NEWSET (9)
            0x05, 0x04,              // REQUEST | ACK | CREATE
            0, 0, 0, 0, 0, 0, 0, 0,
            0x02, 0x00, 0x00, 0x00,  // family ip
            0x07, 0x00, 0x01, 0x00,  // NFTA_SET_TABLE "bh"
            0x62, 0x68, 0x00, 0x00,
            0x08, 0x00, 0x02, 0x00,  // NFTA_SET_NAME "svc"
            0x73, 0x76, 0x63, 0x00,
            0x08, 0x00, 0x03, 0x00,  // NFTA_SET_FLAGS 0
            0x00, 0x00, 0x00, 0x00,
            0x08, 0x00, 0x04, 0x00,  // NFTA_SET_KEY_TYPE 7 (nft TYPE_IPADDR)
            0x00, 0x00, 0x00, 0x07,
            0x08, 0x00, 0x05, 0x00,  // NFTA_SET_KEY_LEN 4
            0x00, 0x00, 0x00, 0x04,
            0x08, 0x00, 0x0a, 0x00,  // NFTA_SET_ID 1
            0x00, 0x00, 0x00, 0x01,
            0x0a, 0x00, 0x0d, 0x00,  // NFTA_SET_USERDATA, 6 bytes:
            0x00, 0x04, 0x02, 0x00,  //   TLV NFTNL_UDATA_SET_KEYBYTEORDER, len 4, value 2 (big endian,
            0x00, 0x00, 0x00, 0x00,  //   host-order u32) + pad; nft prints keys with it
        ])
    }

    @Test func ruleWithLookupCounterVerdict() throws {
        let (_, ops) = try Self.messages(try Self.ipTransaction())
        #expect(ops[3] == [
            0xdc, 0x00, 0x00, 0x00,  // nlmsg_len 220
            0x06, 0x0a,              // NFT_MSG_NEWRULE (6)
            0x05, 0x0c,              // REQUEST | ACK | CREATE | APPEND
            0, 0, 0, 0, 0, 0, 0, 0,
            0x02, 0x00, 0x00, 0x00,  // family ip
            0x07, 0x00, 0x01, 0x00,  // NFTA_RULE_TABLE "bh"
            0x62, 0x68, 0x00, 0x00,
            0x08, 0x00, 0x02, 0x00,  // NFTA_RULE_CHAIN "fwd"
            0x66, 0x77, 0x64, 0x00,
            0xb8, 0x00, 0x04, 0x80,  // NFTA_RULE_EXPRESSIONS (nested), 184 bytes
            // [ payload load 4b @ network header + 12 => reg 1 ]   (ip saddr)
            0x34, 0x00, 0x01, 0x80,  //   NFTA_LIST_ELEM
            0x0c, 0x00, 0x01, 0x00,  //     NFTA_EXPR_NAME "payload"
            0x70, 0x61, 0x79, 0x6c, 0x6f, 0x61, 0x64, 0x00,
            0x24, 0x00, 0x02, 0x80,  //     NFTA_EXPR_DATA
            0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01,  // NFTA_PAYLOAD_DREG 1 (NFT_REG_1)
            0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,  // NFTA_PAYLOAD_BASE 1 (network header)
            0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x0c,  // NFTA_PAYLOAD_OFFSET 12
            0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04,  // NFTA_PAYLOAD_LEN 4
            // [ lookup reg 1 set svc ]
            0x24, 0x00, 0x01, 0x80,
            0x0b, 0x00, 0x01, 0x00,  //     NFTA_EXPR_NAME "lookup"
            0x6c, 0x6f, 0x6f, 0x6b, 0x75, 0x70, 0x00, 0x00,
            0x14, 0x00, 0x02, 0x80,
            0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,  // NFTA_LOOKUP_SREG 1
            0x08, 0x00, 0x01, 0x00, 0x73, 0x76, 0x63, 0x00,  // NFTA_LOOKUP_SET "svc"
            // [ counter pkts 0 bytes 0 ]
            0x2c, 0x00, 0x01, 0x80,
            0x0c, 0x00, 0x01, 0x00,  //     NFTA_EXPR_NAME "counter"
            0x63, 0x6f, 0x75, 0x6e, 0x74, 0x65, 0x72, 0x00,
            0x1c, 0x00, 0x02, 0x80,
            0x0c, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,  // NFTA_COUNTER_BYTES 0 (be64)
            0x0c, 0x00, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,  // NFTA_COUNTER_PACKETS 0
            // [ immediate reg 0 accept ]
            0x30, 0x00, 0x01, 0x80,
            0x0e, 0x00, 0x01, 0x00,  //     NFTA_EXPR_NAME "immediate"
            0x69, 0x6d, 0x6d, 0x65, 0x64, 0x69, 0x61, 0x74, 0x65, 0x00, 0x00, 0x00,
            0x1c, 0x00, 0x02, 0x80,
            0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,  // NFTA_IMMEDIATE_DREG 0 (NFT_REG_VERDICT)
            0x10, 0x00, 0x02, 0x80,  //       NFTA_IMMEDIATE_DATA
            0x0c, 0x00, 0x02, 0x80,  //         NFTA_DATA_VERDICT
            0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01,  // NFTA_VERDICT_CODE NF_ACCEPT (1)
        ])
    }

    static func inetTransaction() throws -> Transaction {
        var tx = Transaction(table: TableID(family: .inet, name: "bh"), current: nil)
        try tx.add(.table(Table(family: .inet, name: "bh")))
        try tx.add(.chain(Chain(name: "fwd", base: BaseChain(hook: .forward, priority: -10, policy: .drop))))
        try tx.add(.set(NFTSet(name: "flows", key: KeyType(.ipv4Addr, .ipv4Addr, .inetService))))
        try tx.add(.elements(set: "flows", [SetElement(.ipv4(v4("10.0.0.1")), .ipv4(v4("10.0.0.2")), .port(443))]))
        return tx
    }

    @Test func baseChain() throws {
        let (_, ops) = try Self.messages(try Self.inetTransaction())
        #expect(ops[1] == [
            0x4c, 0x00, 0x00, 0x00,  // nlmsg_len 76
            0x03, 0x0a,              // NFT_MSG_NEWCHAIN
            0x05, 0x04,              // REQUEST | ACK | CREATE
            0, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0x00, 0x00, 0x00,  // family NFPROTO_INET (1)
            0x07, 0x00, 0x01, 0x00, 0x62, 0x68, 0x00, 0x00,  // NFTA_CHAIN_TABLE "bh"
            0x08, 0x00, 0x03, 0x00, 0x66, 0x77, 0x64, 0x00,  // NFTA_CHAIN_NAME "fwd"
            0x14, 0x00, 0x04, 0x80,  // NFTA_CHAIN_HOOK (nested)
            0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02,  //   NFTA_HOOK_HOOKNUM NF_INET_FORWARD (2)
            0x08, 0x00, 0x02, 0x00, 0xff, 0xff, 0xff, 0xf6,  //   NFTA_HOOK_PRIORITY -10
            0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00,  // NFTA_CHAIN_POLICY NF_DROP (0)
            0x0b, 0x00, 0x07, 0x00,  // NFTA_CHAIN_TYPE "filter"
            0x66, 0x69, 0x6c, 0x74, 0x65, 0x72, 0x00, 0x00,
        ])
    }

    @Test func setWithConcatenatedKey() throws {
        let (_, ops) = try Self.messages(try Self.inetTransaction())
        #expect(ops[2] == [
            0x54, 0x00, 0x00, 0x00,  // nlmsg_len 84
            0x09, 0x0a,              // NFT_MSG_NEWSET
            0x05, 0x04,
            0, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0x00, 0x00, 0x00,  // family inet
            0x07, 0x00, 0x01, 0x00, 0x62, 0x68, 0x00, 0x00,              // NFTA_SET_TABLE "bh"
            0x0a, 0x00, 0x02, 0x00, 0x66, 0x6c, 0x6f, 0x77, 0x73, 0x00, 0x00, 0x00,  // NFTA_SET_NAME "flows"
            0x08, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,  // NFTA_SET_FLAGS 0 (CONCAT only for intervals)
            0x08, 0x00, 0x04, 0x00, 0x00, 0x00, 0x71, 0xcd,  // NFTA_SET_KEY_TYPE ((7 << 6 | 7) << 6) | 13
            0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x0c,  // NFTA_SET_KEY_LEN 12: 4 + 4 + 2 padded to 4
            0x08, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x01,  // NFTA_SET_ID 1
            0x0a, 0x00, 0x0d, 0x00,  // NFTA_SET_USERDATA: KEYBYTEORDER 0 (a concatenation has none)
            0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ])
    }

    @Test func element() throws {
        let (_, ops) = try Self.messages(try Self.inetTransaction())
        #expect(ops[3] == [
            0x44, 0x00, 0x00, 0x00,  // nlmsg_len 68
            0x0c, 0x0a,              // NFT_MSG_NEWSETELEM (12)
            0x05, 0x04,              // REQUEST | ACK | CREATE
            0, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0x00, 0x00, 0x00,  // family inet
            0x0a, 0x00, 0x02, 0x00, 0x66, 0x6c, 0x6f, 0x77, 0x73, 0x00, 0x00, 0x00,  // NFTA_SET_ELEM_LIST_SET "flows"
            0x07, 0x00, 0x01, 0x00, 0x62, 0x68, 0x00, 0x00,  // NFTA_SET_ELEM_LIST_TABLE "bh"
            0x1c, 0x00, 0x03, 0x80,  // NFTA_SET_ELEM_LIST_ELEMENTS (nested; 16-bit length, hence ≤64 KiB per message)
            0x18, 0x00, 0x01, 0x80,  //   NFTA_LIST_ELEM
            0x14, 0x00, 0x01, 0x80,  //     NFTA_SET_ELEM_KEY
            0x10, 0x00, 0x01, 0x00,  //       NFTA_DATA_VALUE, 12 bytes:
            0x0a, 0x00, 0x00, 0x01,  //         10.0.0.1
            0x0a, 0x00, 0x00, 0x02,  //         10.0.0.2
            0x01, 0xbb, 0x00, 0x00,  //         443, padded to its 32-bit register
        ])
    }
}
