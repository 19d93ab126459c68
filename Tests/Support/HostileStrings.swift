/// Strings an attacker puts in a policy name, a file name, a Docker label or a kernel comment, to
/// break out of whatever field of our output they land in. Every output format is tested with all
/// of them (one table, so a new trick is tried everywhere at once).
public enum HostileStrings {
    public static let all: [String] = [
        "\r\n::error::x",                          // a workflow command after CR-LF (one Character in Swift)
        "\n::add-mask::secret",                    // the same after a lone LF
        "\r",                                       // a lone CR: rewinds a terminal line
        "\u{1b}[2J\u{1b}]0;pwned\u{7}",            // clear screen, set the window title
        "\u{0}",                                    // NUL
        "a\"b\\c",                                  // quote and backslash: JSON, Prometheus labels
        "\u{2028}x\u{2029}",                        // Unicode line and paragraph separators
        "\u{85}x",                                  // NEL, a C1 control
        "\u{202E}lmay.\u{2066}",                    // bidi override and isolate ("Trojan Source")
        String(decoding: [0x73, 0xFF, 0xFE, 0x68, 0xC0], as: UTF8.self),  // invalid UTF-8, decoded to U+FFFD
        "%0A::error::y,:%",                         // already-escaped text must stay text
        "x\"} 1\nforged_metric{a=\"b",              // a forged Prometheus line
        String(repeating: "A\r\n\u{1b}", count: 3000),  // very long
    ]

    /// True when `s` holds a scalar that a terminal or a line reader acts on (C0/C1 controls, DEL,
    /// line separators, bidi controls), other than the ones listed in `allowing`.
    public static func hasUnsafeScalar(_ s: String, allowing: Set<Unicode.Scalar> = []) -> Bool {
        s.unicodeScalars.contains { u in
            guard !allowing.contains(u) else { return false }
            switch u.value {
            case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0xFEFF: return true
            default: return false
            }
        }
    }
}
