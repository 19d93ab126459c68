#if canImport(Glibc)
import Glibc
#endif
/// Collects diagnostics for one file while its YAML is read against a schema.
public final class DiagnosticSink {
    public let file: String
    public private(set) var diagnostics: [Diagnostic] = []

    public init(file: String) { self.file = file }

    public func error(_ code: DiagnosticCode, _ message: String, at mark: Mark) {
        diagnostics.append(Diagnostic(.error, code, message, file: file, at: mark))
    }

    public func warning(_ code: DiagnosticCode, _ message: String, at mark: Mark) {
        diagnostics.append(Diagnostic(.warning, code, message, file: file, at: mark))
    }

    public func append(contentsOf other: [Diagnostic]) { diagnostics.append(contentsOf: other) }

    public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }
}

/// Reads one YAML mapping against a fixed set of keys, reporting unknown keys (with a did-you-mean),
/// duplicate keys and missing required keys as it is created.
public struct MappingReader {
    public let mapping: YAMLMapping
    private let values: [String: YAMLNode]

    /// Returns nil (after reporting `wrong-type`) when `node` is not a mapping.
    /// `keys` nil means any key is allowed (label maps, network maps).
    public init?(_ node: YAMLNode, _ what: String, keys: [String]?, required: [String] = [], sink: DiagnosticSink,
                 duplicateCode: DiagnosticCode = .duplicateKey) {
        guard case .mapping(let mapping) = node else {
            sink.error(.wrongType, "\(what) must be a mapping, not \(node.kindDescription)", at: node.mark)
            return nil
        }
        self.mapping = mapping
        for (entry, first) in mapping.duplicates {
            sink.error(duplicateCode, "key '\(entry.key.value)' appears twice in \(what) (first at line \(first.key.mark.line)); remove one", at: entry.key.mark)
        }
        var values: [String: YAMLNode] = [:]
        for entry in mapping.entries where values[entry.key.value] == nil {
            values[entry.key.value] = entry.value
            if let keys, !keys.contains(entry.key.value) {
                var message = "unknown key '\(entry.key.value)' in \(what)"
                if let guess = Spelling.closest(to: entry.key.value, among: keys) {
                    message += " (did you mean '\(guess)'?)"
                } else {
                    message += "; allowed keys: \(keys.joined(separator: ", "))"
                }
                sink.error(.unknownKey, message, at: entry.key.mark)
            }
        }
        self.values = values
        for key in required where values[key] == nil {
            sink.error(.missingKey, "\(what) is missing the required key '\(key)'", at: mapping.mark)
        }
    }

    public subscript(key: String) -> YAMLNode? { values[key] }

    /// The mark of a key itself (for messages about the key rather than its value).
    public func keyMark(_ key: String) -> Mark? { mapping[key]?.key.mark }
}

extension YAMLNode {
    /// The string of a scalar, or nil after reporting `wrong-type`.
    public func string(_ what: String, sink: DiagnosticSink) -> String? {
        guard case .scalar(let s) = self, !s.isNull else {
            sink.error(isNull ? .emptyValue : .wrongType, isNull ? "\(what) is empty" : "\(what) must be a string, not \(kindDescription)", at: mark)
            return nil
        }
        return s.value
    }

    /// The items of a list, or nil after reporting `wrong-type`. With `allowSingle`, one scalar or
    /// mapping stands for a list of itself (as in `from: frontend`).
    public func list(_ what: String, sink: DiagnosticSink, allowSingle: Bool = false) -> [YAMLNode]? {
        switch self {
        case .sequence(let s): return s.items
        case .scalar(let s) where s.isNull:
            return []
        default:
            if allowSingle { return [self] }
            sink.error(.wrongType, "\(what) must be a list, not \(kindDescription)", at: mark)
            return nil
        }
    }
}

/// Did-you-mean suggestions.
public enum Spelling {
    /// The candidate nearest to `word` by edit distance, when it is near enough to be a typo.
    public static func closest(to word: String, among candidates: [String]) -> String? {
        let limit = max(1, min(3, word.count / 3 + 1))
        var best: (String, Int)?
        for c in candidates {
            let d = distance(word.lowercased(), c.lowercased())
            if d <= limit, best == nil || d < best!.1 { best = (c, d) }
        }
        return best?.0
    }

    /// Damerau-Levenshtein (optimal string alignment) distance, so a swapped pair counts as one typo.
    public static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a), y = Array(b)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: y.count + 1), count: x.count + 1)
        for i in 0...x.count { d[i][0] = i }
        for j in 0...y.count { d[0][j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[x.count][y.count]
    }
}

/// Reads files for the loaders, turning I/O failures into diagnostics.
public enum SourceFile {
    public enum ReadError: Error, Sendable {
        case unreadable(String)
    }

    /// Reads at most `limit` + 1 bytes: enough for the loader to tell that a file is over its limit.
    ///
    /// Only regular files are read. The file is opened with O_NONBLOCK (so a FIFO or a device
    /// never blocks the open) and checked with fstat on the descriptor just opened, so a file swapped
    /// for a FIFO after a directory walk is still refused. `noFollow` refuses a symlink as the last
    /// component (the walk has already followed the one link it allows). `expected` is the
    /// (device, inode) the walk saw: a different file at that path is refused, not read.
    public static func read(_ path: String, limit: Int = 1 << 20, noFollow: Bool = false,
                            expected: FileIdentity? = nil) -> Result<[UInt8], ReadError> {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | (noFollow ? O_NOFOLLOW : 0))
        guard fd >= 0 else { return .failure(.unreadable(SystemError.describe(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return .failure(.unreadable(SystemError.describe(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            return .failure(.unreadable("\(FileIdentity.kind(st.st_mode)), not a regular file: refused (reading it could block or never end)"))
        }
        if let expected, expected != FileIdentity(st) {
            return .failure(.unreadable("the file changed while the directory was read: try again"))
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.unreadable(SystemError.describe(errno)))
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            // Stop early: the loader refuses anything over its limit anyway.
            if bytes.count > limit { break }
        }
        return .success(bytes)
    }
}

/// A file's (device, inode): how the policy walk recognises a directory or file it has already
/// read, whatever path led to it.
public struct FileIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64

    public init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// "a FIFO", "a socket", … for messages.
    public static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: return "a regular file"
        case S_IFDIR: return "a directory"
        case S_IFLNK: return "a symlink"
        case S_IFIFO: return "a FIFO"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        default: return "a special file"
        }
    }
}

/// errno as a message that names the condition. EMFILE and ENFILE say what they are: a process out
/// of file descriptors once reported a failed policy reload as "permission denied".
public enum SystemError {
    public static func describe(_ code: Int32) -> String {
        let text = String(cString: strerror(code)).lowercased()
        switch code {
        case EMFILE: return "\(text) (EMFILE): this process is out of file descriptors; raise LimitNOFILE or find what holds them"
        case ENFILE: return "\(text) (ENFILE): the system is out of file descriptors"
        case EACCES: return "\(text) (EACCES)"
        case ELOOP: return "\(text) (ELOOP)"
        default: return text
        }
    }
}
