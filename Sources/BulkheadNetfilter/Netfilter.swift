import CNetfilter
import CNetfilterShim

/// Facts about the netfilter libraries this build links against.
public enum NetfilterLibrary {
    /// True when libnftnl can allocate objects: the link to libnftnl/libmnl works.
    public static func isLinked() -> Bool { bh_nftnl_probe() == 1 }
}
