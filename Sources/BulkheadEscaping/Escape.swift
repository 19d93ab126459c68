/// Escaping for every place a string leaves the process. One function per destination, each
/// working on Unicode scalars: Swift's `Character` treats "\r\n" as ONE grapheme, so comparing
/// Characters with "\n" or "\r" never matches a CR-LF pair and lets it through untouched.
///
/// Policy text, Docker labels and kernel comments are hostile input: a segment name holding
/// "\r\n::error::x" must not become a workflow command, a forged metric line or a terminal
/// control sequence. Each owner below guarantees that its output stays inside its field.
public enum Escape {
    /// True for scalars that a terminal, a log viewer or a line-oriented reader would act on
    /// instead of printing: C0 and C1 controls, DEL, the Unicode line and paragraph separators,
    /// and the bidirectional overrides and isolates ("Trojan Source", CVE-2021-42574).
    public static func isUnsafe(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029, 0x202A...0x202E, 0x2066...0x2069, 0xFEFF: return true
        default: return false
        }
    }

    /// A visible, unambiguous spelling of one unsafe scalar: `\n`, `\r`, `\t`, `\e`, `\x00`, `\u{2028}`.
    static func visible(_ u: Unicode.Scalar) -> String {
        switch u {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        case "\u{1B}": return "\\e"
        default:
            let hex = String(u.value, radix: 16, uppercase: true)
            return u.value < 0x80 ? "\\x" + (hex.count < 2 ? "0" : "") + hex : "\\u{" + hex + "}"
        }
    }

    /// Text for a terminal or a plain log line: every unsafe scalar becomes a visible escape, so the
    /// result is one line with no control sequence in it.
    public static func terminal(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: isUnsafe) else { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if isUnsafe(u) { out.append(contentsOf: visible(u).unicodeScalars) } else { out.append(u) }
        }
        return String(out)
    }

    /// Several lines of our own making for a terminal (a plan, an error with its hints): every
    /// unsafe scalar except LF becomes a visible escape, so no ESC, CR or bidi control from a
    /// policy, a label or a kernel comment reaches the terminal. A value that may itself hold LF
    /// goes through `terminal(_:)` on its own first.
    public static func terminalLines(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: { $0 != "\n" && isUnsafe($0) }) else { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if u != "\n", isUnsafe(u) { out.append(contentsOf: visible(u).unicodeScalars) } else { out.append(u) }
        }
        return String(out)
    }

    /// The message part of a GitHub Actions workflow command (`::error …::DATA`): the runner
    /// decodes %25, %0D and %0A (documented in actions/toolkit `command.ts`); any other control is
    /// shown as a visible escape, so one diagnostic is one annotation.
    public static func githubData(_ s: String) -> String { github(s, property: false) }

    /// A property value of a workflow command (`file=…,title=…`): also %3A for ':' and %2C for ','.
    public static func githubProperty(_ s: String) -> String { github(s, property: true) }

    private static func github(_ s: String, property: Bool) -> String {
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            switch u {
            case "%": out.append(contentsOf: "%25".unicodeScalars)
            case "\r": out.append(contentsOf: "%0D".unicodeScalars)
            case "\n": out.append(contentsOf: "%0A".unicodeScalars)
            case ":" where property: out.append(contentsOf: "%3A".unicodeScalars)
            case "," where property: out.append(contentsOf: "%2C".unicodeScalars)
            case _ where isUnsafe(u): out.append(contentsOf: visible(u).unicodeScalars)
            default: out.append(u)
            }
        }
        return String(out)
    }

    /// A JSON string literal, quotes included (RFC 8259). Beyond what the RFC requires, DEL, C1
    /// controls, U+2028/U+2029 and bidi controls are written as \uXXXX: JSON is also read in
    /// terminals and pasted into JavaScript, where U+2028 ends a line.
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where isUnsafe(u):
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// A Prometheus label value before the client library quotes it. swift-prometheus escapes
    /// backslash, '"' and LF byte by byte (enough for the exposition format's parser), but leaves
    /// CR, ESC and the other controls raw for whoever reads the scrape with `curl` or a line
    /// splitter that also breaks on CR; they become visible escapes here.
    public static func prometheusLabelValue(_ s: String) -> String { terminal(s) }
}
