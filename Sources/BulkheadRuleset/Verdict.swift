/// A terminal decision or a jump, as in an `immediate` expression or a verdict-map element.
///
/// Kernel codes (`include/uapi/linux/netfilter/nf_tables.h`): accept `NF_ACCEPT` (1), drop
/// `NF_DROP` (0), continue `NFT_CONTINUE` (-1), return `NFT_RETURN` (-5), jump `NFT_JUMP` (-3) and
/// goto `NFT_GOTO` (-4) with `NFTA_VERDICT_CHAIN`.
public enum Verdict: Hashable, Sendable, Codable, CustomStringConvertible {
    case accept
    case drop
    case `continue`
    case `return`
    case jump(String)
    case goto(String)

    /// `NFTA_VERDICT_CODE` (signed, as the kernel defines it).
    public var code: Int32 {
        switch self {
        case .accept: 1
        case .drop: 0
        case .continue: -1
        case .return: -5
        case .jump: -3
        case .goto: -4
        }
    }

    /// The chain named by `jump`/`goto`, nil otherwise.
    public var targetChain: String? {
        switch self {
        case .jump(let c), .goto(let c): c
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .accept: "accept"
        case .drop: "drop"
        case .continue: "continue"
        case .return: "return"
        case .jump(let c): "jump \(c)"
        case .goto(let c): "goto \(c)"
        }
    }
}
