import BulkheadConntrack
import BulkheadInventory
import BulkheadPolicy

/// A tracked connection the policies no longer allow, with the evaluator's reason.
public struct ConnectionCut: Sendable, Hashable, CustomStringConvertible {
    public var entry: ConntrackEntry
    public var traffic: Traffic
    /// Why it is denied now (the evaluator's words).
    public var reason: String

    public var description: String { "\(entry): \(reason)" }
}

/// Revoking what is no longer allowed: the forward, input and output chains accept
/// `ct state established,related` before any policy rule (so replies need no rules of their
/// own), which also means a connection opened while a flow was allowed outlives the flow. After
/// a commit, the entries of connections the new policies deny are deleted from connection
/// tracking; the next packet of such a connection is then a new one, judged by the new rules,
/// and dropped.
///
/// The decision is the evaluator's, the same answer `explain`, `plan` and the compiler give.
/// Only connections with a governed side can be cut: traffic Bulkhead does not govern (neither
/// side a governed address) is never touched, nor is anything the evaluator cannot judge.
public enum Revocation {
    /// The protocol and destination port the rules judged a tuple by, or nil when the entry
    /// cannot be judged (TCP/UDP without ports, mixed address families): such entries are kept.
    public static func traffic(of tuple: ConntrackTuple) -> Traffic? {
        guard tuple.source.isIPv4 == tuple.destination.isIPv4 else { return nil }
        switch tuple.proto {
        case 6: return tuple.destinationPort.map { .tcp($0) }
        case 17: return tuple.destinationPort.map { .udp($0) }
        case 1 where tuple.source.isIPv4: return .icmp
        case 58 where !tuple.source.isIPv4: return .icmp
        default: return .other(tuple.proto)
        }
    }

    /// The entries of `entries` that the policies deny now, sorted.
    public static func select(_ entries: [ConntrackEntry], evaluator: Evaluator) -> [ConnectionCut] {
        var cuts: [ConnectionCut] = []
        for entry in entries {
            let tuple = entry.effective
            guard let traffic = traffic(of: tuple) else { continue }
            let decision = evaluator.evaluate(from: .address(tuple.source), to: .address(tuple.destination), traffic)
            // `.ungoverned` is not Bulkhead's to cut; `.audited` passes (audit mode only logs).
            guard decision.verdict == .denied else { continue }
            cuts.append(ConnectionCut(entry: entry, traffic: traffic, reason: decision.reason))
        }
        return cuts.sorted { $0.entry < $1.entry }
    }

    /// What `plan` says about live connections.
    public enum Census: Sendable, Hashable {
        /// The connections that applying would cut (all of them; print a few).
        case wouldCut([ConnectionCut], tracked: Int)
        /// Connection tracking could not be read; the reason says why and what to do.
        case unavailable(String)
    }

    /// Counts the live connections the policies deny, without changing anything.
    public static func census(_ tracking: any ConnectionTracking, evaluator: Evaluator) -> Census {
        do {
            let entries = try tracking.entries()
            return .wouldCut(select(entries, evaluator: evaluator), tracked: entries.count)
        } catch {
            return .unavailable("cannot read connection tracking: \(error)")
        }
    }

    /// The outcome of one revocation. Failures never undo the committed rules: they are reported
    /// for the caller to log, count and print.
    public struct Report: Sendable, Hashable {
        /// Entries deleted.
        public var cut: [ConnectionCut] = []
        /// Denied entries that were gone by the time of the delete (the connection ended).
        public var alreadyGone: Int = 0
        /// Entries the kernel refused to delete.
        public var failures: [Failure] = []
        /// The dump failed: nothing was judged or deleted.
        public var dumpError: ConntrackError?
        /// Entries read from the kernel.
        public var tracked: Int = 0

        public struct Failure: Sendable, Hashable {
            public var cut: ConnectionCut
            public var error: ConntrackError
        }

        public init() {}

        /// One sentence for an operator when something failed (nil when nothing did), saying
        /// that the rules stand and what to do.
        public var problem: String? {
            if let dumpError {
                return "the rules were committed, but established connections they now deny were not cut: \(dumpError). "
                    + "Those connections keep flowing until they end; fix the cause and run apply again (or delete them with `conntrack -D`)"
            }
            guard let first = failures.first else { return nil }
            return "the rules were committed, but \(failures.count) of \(failures.count + cut.count) denied connections could not be cut "
                + "(first: \(first.cut.entry): \(first.error)); they keep flowing until they end: run apply again or delete them with `conntrack -D`"
        }
    }

    /// Deletes the entries of connections the policies deny. Call it after the kernel acked the
    /// commit: cutting first would let the connection re-open under the old rules.
    public static func revoke(_ tracking: any ConnectionTracking, evaluator: Evaluator) -> Report {
        var report = Report()
        let entries: [ConntrackEntry]
        do {
            entries = try tracking.entries()
        } catch {
            report.dumpError = error
            return report
        }
        report.tracked = entries.count
        for cut in select(entries, evaluator: evaluator) {
            do {
                if try tracking.delete(cut.entry) {
                    report.cut.append(cut)
                } else {
                    report.alreadyGone += 1
                }
            } catch {
                report.failures.append(.init(cut: cut, error: error))
            }
        }
        return report
    }
}
