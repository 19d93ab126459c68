import BulkheadInventory
import BulkheadLab
import BulkheadPolicy
import Testing

/// Denied means dropped: for an expected-denied probe only a timeout (or a drop in the sender's own
/// output path) matches; a refusal or an ICMP error means the packet got there, so it is a mismatch.
@Test(arguments: [
    (ProbeOutcome.answered, true, true), (.timedOut, true, false), (.refused, true, false), (.unreachable, true, false), (.blockedLocally, true, false),
    (.answered, false, false), (.timedOut, false, true), (.blockedLocally, false, true), (.refused, false, false), (.unreachable, false, false),
])
func truthTableRowMatchesOnlyAnswersAndDrops(outcome: ProbeOutcome, expectedToPass: Bool, matches: Bool) {
    let probe = Probe(from: .container("a"), to: IPAddress("10.0.0.2")!, traffic: .tcp(22))
    let row = TruthTableRow(result: ProbeResult(probe: probe, outcome: outcome), source: nil, expectedToPass: expectedToPass, reason: nil)
    #expect(row.matches == matches, "\(row)")
}

@Suite(.enabled(if: LabSupport.enabled, "needs root (or CI=true, where it must fail instead of skip)"))
struct TruthTableKernelTests {
    /// In the lab's host namespace, tcp/7002 between two containers of one bridge is rejected with a
    /// reset, tcp/7003 dropped, and tcp/7004 drops the first SYN of each source once (a lost packet).
    /// The truth table says: a rejected probe the oracle calls denied is a MISMATCH (the packet got
    /// there), a dropped one matches; the allowed probe whose first SYN was lost is sent once more and
    /// answered; a denied probe is sent once.
    @Test func refusalIsAMismatchAndALostAllowedProbeIsRetriedOnce() throws {
        try LabSupport.withLab(LabSupport.exampleInventory()) { lab, runner in
            let host = lab.hostNamespace
            try lab.run(in: host, ["nft", """
                add table inet labtest
                add set inet labtest seen4 { type ipv4_addr; flags dynamic; }
                add set inet labtest seen6 { type ipv6_addr; flags dynamic; }
                add chain inet labtest forward { type filter hook forward priority 0; policy accept; }
                add rule inet labtest forward tcp dport 7002 reject with tcp reset
                add rule inet labtest forward tcp dport 7003 drop
                add rule inet labtest forward tcp dport 7004 ip saddr != @seen4 update @seen4 { ip saddr } drop
                add rule inet labtest forward tcp dport 7004 ip6 saddr != @seen6 update @seen6 { ip6 saddr } drop
                """])
            let db = lab.addresses(of: .container("shop-db-1"))   // v4 and v6, on the frontend's bridge
            #expect(db.count == 2)
            let probes = db.flatMap { to in [7002, 7003, 7004].map { Probe(from: .container("shop-frontend-1"), to: to, traffic: .tcp(UInt16($0))) } }
            let rows = try runner.truthTable(probes) { probe, _ in
                (probe.traffic == .tcp(7004), probe.traffic == .tcp(7004) ? "allowed, first SYN lost" : "denied")
            }
            #expect(rows.count == 6)
            for row in rows {
                switch row.result.probe.traffic {
                case .tcp(7002):
                    #expect(row.result.outcome.delivered && !row.matches && row.attempts == 1, "a reset for a denied probe is a mismatch: \(row)")
                case .tcp(7003):
                    #expect(row.result.outcome == .timedOut && row.matches && row.attempts == 1, "a drop is sent once: \(row)")
                case .tcp(7004):
                    #expect(row.result.outcome == .answered && row.matches && row.attempts == 2, "the lost SYN is retried once: \(row)")
                default:
                    Issue.record("unexpected probe \(row)")
                }
            }
        }
    }
}
