/// The nftables object model lives here (see issue 3).
public enum RulesetModel {}
