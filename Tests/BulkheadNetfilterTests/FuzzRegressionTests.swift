import BulkheadRuleset
import Testing
@testable import BulkheadNetfilter

/// Inputs `scripts/fuzz.sh` found to crash the dump decoders (target `netlink`), kept as tests.
/// Each is what a dump hands the decoder when someone else wrote our table.
struct NetlinkFuzzRegressionTests {
    /// fuzz netlink, crash-94440807: an interval set of interface names whose key is not UTF-8.
    /// The name decoded to 16 U+FFFD (48 bytes) and padding it to 16 bytes trapped with
    /// "Can't construct Array with count < 0" — a crash of `plan`, `apply` and the agent.
    @Test func anIntervalOfInterfaceNamesThatAreNotUTF8DecodesAsAPlainRange() {
        let set = NFTSet(name: "foreign", key: KeyType(.ifname), flags: [.interval])
        let key = [UInt8](repeating: 0xff, count: 16)
        let decoded = ElementEncoding.modelElements([KernelElement(key: key, flags: 0, data: nil)], of: set)
        let name = Value.ifname(String(repeating: "\u{FFFD}", count: 16))
        #expect(decoded.undecodable == 0)
        #expect(decoded.elements == [SetElement(key: [.between(name, name)])])
    }
}

extension NetlinkFuzzRegressionTests {
    /// fuzz netlink, crash-10225a52 (issue 8, item 6): a 2-byte load of `ip saddr` compared
    /// against 8 bytes, which the kernel accepts. Padding the compare to the address length
    /// trapped with "Can't construct Array with count < 0"; it must read back as a foreign rule.
    @Test func aCompareLongerThanItsLoadIsAForeignRule() {
        let expressions: [KernelExpression] = [
            .payload(base: PayloadBase.network.rawValue, offset: 12, length: 2, dreg: KernelExpression.reg1),
            .cmp(sreg: KernelExpression.reg1, op: NFT.cmpEq, data: [10, 0, 0, 1, 0, 0, 0, 0]),
            .verdict(code: 1, chain: nil),
        ]
        let rule = Delinearizer(family: .ip, anonymousSets: [:])
            .rule(chain: "forward", handle: 7, expressions: expressions, userdata: [])
        #expect(rule.statements.isEmpty)
        #expect(rule.comment?.hasPrefix(Delinearizer.foreignMarker) == true)
        #expect(rule.handle == 7)
    }
}
