/// How long the kernel and nft let our strings be, in bytes, and the one way to make any text fit.
///
/// The numbers are the C headers' (checked against them by `KernelConstantTests` in the netlink
/// tests, which may import C) less the terminating NUL where the header counts it:
/// - `NFT_NAME_MAXLEN` (256, = `NFT_CHAIN_MAXNAMELEN` = `NFT_SET_MAXNAMELEN`): the kernel's
///   netlink policy for table, chain and set names is `NLA_STRING` of at most 255 bytes;
/// - `NFTNL_UDATA_COMMENT_MAXLEN` (128): the kernel keeps up to `NFT_USERDATA_MAXLEN` (256) bytes of
///   rule userdata, but nft refuses comments over 128 characters, so `nft -f` of a listing of ours
///   would fail; 128 is the limit both accept;
/// - `NF_LOG_PREFIXLEN` (128): the kernel's policy for `NFTA_LOG_PREFIX` is at most 127 bytes.
public struct KernelLimits: Sendable, Hashable {
    public var objectName: Int
    public var comment: Int
    public var logPrefix: Int

    public init(objectName: Int = 255, comment: Int = 128, logPrefix: Int = 127) {
        self.objectName = objectName
        self.comment = comment
        self.logPrefix = logPrefix
    }

    /// The limits of the kernel and nft on this machine's headers.
    public static let kernel = KernelLimits()

    /// What is wrong with a table, chain or set name, or nil when the kernel takes it.
    public func problem(objectName name: String) -> String? {
        if name.isEmpty { return "an object name may not be empty" }
        if name.utf8.count > objectName { return "name '\(BoundedText.printable(name))' is \(name.utf8.count) bytes long; the kernel takes at most \(objectName)" }
        return nil
    }

    /// What is wrong with a rule's comment or log prefix, or nil when the kernel and nft take them.
    public func problem(in rule: Rule) -> String? {
        if let c = rule.comment {
            if c.utf8.count > comment { return "comment '\(BoundedText.printable(c))' is \(c.utf8.count) bytes long; nft takes at most \(comment)" }
            if !BoundedText.isPrintable(c) { return "comment '\(BoundedText.printable(c))' holds bytes that are not printable ASCII" }
        }
        for case .log(let l) in rule.statements {
            guard let p = l.prefix else { continue }
            if p.utf8.count > logPrefix { return "log prefix '\(BoundedText.printable(p))' is \(p.utf8.count) bytes long; the kernel takes at most \(logPrefix)" }
            if !BoundedText.isPrintable(p) { return "log prefix '\(BoundedText.printable(p))' holds bytes that are not printable ASCII" }
        }
        return nil
    }
}

/// Text that goes into the kernel: printable ASCII only, and bounded with a digest of the whole.
public enum BoundedText {
    /// Every byte outside printable ASCII, and `"` and `\` (which would end or break the quoted
    /// string `nft list` prints), as `\xNN`. Works on UTF-8 bytes, not Characters: Swift's
    /// `Character` holds "\r\n" as one, and a terminal escape must not survive in any form.
    public static func printable(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for b in text.utf8 {
            if b >= 0x20, b < 0x7F, b != 0x22, b != 0x5C {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                out += "\\x" + hex(b)
            }
        }
        return out
    }

    /// True when `text` is safe in the kernel and in `nft list`: printable ASCII without `"`
    /// (every output of `printable` is; `\` is allowed, it introduces the escapes).
    public static func isPrintable(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != 0x22 }
    }

    /// `text` when it is at most `limit` bytes; otherwise its first bytes, `separator` and 16 hex
    /// digits of the SHA-256 of the whole of `text`, `limit` bytes in all. Distinct texts stay
    /// distinct (up to a 64-bit digest collision) as long as `separator` never occurs in a text
    /// that fits. `text` must be ASCII (pass it through `printable` first when it may not be).
    public static func fitting(_ text: String, limit: Int, separator: Character = ".") -> String {
        guard text.utf8.count > limit else { return text }
        let tag = String(separator) + digest(text)
        let keep = max(0, limit - tag.utf8.count)
        return String(decoding: text.utf8.prefix(keep), as: UTF8.self) + tag
    }

    /// The last bytes of `text` that fit in `limit`, with `marker` in front when something was cut.
    public static func tail(_ text: String, limit: Int, marker: String = "...") -> String {
        guard text.utf8.count > limit else { return text }
        let keep = max(0, limit - marker.utf8.count)
        return marker + String(decoding: text.utf8.suffix(keep), as: UTF8.self)
    }

    /// 16 lower-case hex digits of the SHA-256 of `text`'s UTF-8 bytes.
    public static func digest(_ text: String) -> String {
        SHA256.hash(Array(text.utf8)).prefix(8).map(hex).joined()
    }

    static func hex(_ b: UInt8) -> String {
        let digits: [Character] = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }
}

/// FIPS 180-4 SHA-256, for names derived from untrusted text: an attacker who chooses service
/// combinations cannot cheaply make two of them share a chain (Foundation on Linux has no digest).
public enum SHA256 {
    static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    public static func hash(_ message: [UInt8]) -> [UInt8] {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        var data = message
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        let bits = UInt64(message.count) &* 8
        for i in (0..<8).reversed() { data.append(UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8))) }
        var w = [UInt32](repeating: 0, count: 64)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for i in 0..<16 {
                let j = chunk + i * 4
                w[i] = UInt32(data[j]) << 24 | UInt32(data[j + 1]) << 16 | UInt32(data[j + 2]) << 8 | UInt32(data[j + 3])
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                let ch = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
                let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                let t2 = s0 &+ maj
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
        }
        return h.flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - UInt32($0) * 8)) } }
    }

    static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
}
