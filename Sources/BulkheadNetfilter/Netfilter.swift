import CNetfilter
import CNetfilterShim

// BulkheadNetfilter: the only code that talks netlink to nf_tables.
//
//   NetlinkNetfilter.swift    the NetfilterBackend: apply (one batch), dump, generation, ownership
//   NetlinkSocket.swift       NETLINK_NETFILTER socket (+ named netns), behind NetlinkTransport
//   NetlinkConnection.swift   sequence numbers, requests/dumps, batch send and per-message acks
//   EncodedBatch.swift        BATCH_BEGIN(genid) … END in libnftnl pages; seq → operation map
//   TransactionEncoder.swift  Transaction → messages; ObjectEncoding.swift: table/chain/set/rule
//   ElementEncoding.swift     elements ↔ kernel keys (concatenation padding, rbtree intervals)
//   Linearize.swift           model rule → kernel expressions, as nft 1.0.6 emits them
//   Delinearize.swift         kernel expressions → model rule, checked by re-encoding
//   KernelExpression.swift    the expression level between the model and libnftnl
//   NetfilterError.swift      errors that say what, where and what next
//
// C macros and constants newer than Debian's headers live in Sources/CNetfilterShim (bh_*).

/// Facts about the netfilter libraries this build links against.
public enum NetfilterLibrary {
    /// True when libnftnl can allocate objects: the link to libnftnl/libmnl works.
    public static func isLinked() -> Bool { bh_nftnl_probe() == 1 }
}
