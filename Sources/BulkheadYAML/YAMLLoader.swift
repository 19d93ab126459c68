import CYAML
#if canImport(Glibc)
import Glibc
#endif

/// Reads YAML text into `YAMLNode` trees with libyaml's event parser, keeping the line and column of
/// every node, and turns every way a file can be bad into one clear diagnostic instead of a crash.
public struct YAMLLoader: Sendable {
    /// Files over this size are refused before parsing (`too-large`).
    public var maxBytes: Int
    /// Deeper nesting is refused (`too-large`): policies are at most about 6 levels deep, and a
    /// malicious `[[[[…` must not exhaust the stack of whoever walks the tree.
    public var maxDepth: Int

    public init(maxBytes: Int = 1 << 20, maxDepth: Int = 64) {
        self.maxBytes = maxBytes
        self.maxDepth = maxDepth
    }

    public struct Result: Sendable {
        /// One root per YAML document, in file order.
        public var documents: [YAMLNode]
        public var diagnostics: [Diagnostic]

        public var hasErrors: Bool { diagnostics.contains { $0.severity == .error } }
    }

    /// Parses `bytes` read from `file` (the name is only used in diagnostics).
    public func load(_ bytes: [UInt8], file: String) -> Result {
        func fail(_ code: DiagnosticCode, _ message: String, _ mark: Mark = .start) -> Result {
            Result(documents: [], diagnostics: [Diagnostic(.error, code, message, file: file, at: mark)])
        }
        if bytes.count > maxBytes {
            return fail(.tooLarge, "file is \(bytes.count) bytes; policy and inventory files are limited to \(maxBytes) bytes (1 MiB): split it into several files")
        }
        if let nul = bytes.firstIndex(of: 0) {
            return fail(.notText, "file contains a NUL byte: it is binary, not YAML text", Self.mark(ofByte: nul, in: bytes))
        }
        if let bad = Self.firstInvalidUTF8(bytes) {
            return fail(.encoding, "file is not valid UTF-8 (byte 0x\(String(bytes[bad], radix: 16)) at offset \(bad)): save it as UTF-8", Self.mark(ofByte: bad, in: bytes))
        }
        let result = bytes.withUnsafeBufferPointer { buffer in
            EventReader(buffer: buffer, file: file, maxDepth: maxDepth).read()
        }
        if result.documents.isEmpty && result.diagnostics.isEmpty {
            return fail(.emptyFile, "file holds no YAML document")
        }
        if !result.hasErrors && result.documents.allSatisfy(\.isNull) {
            return fail(.emptyFile, "file holds only empty documents")
        }
        return result
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    static func mark(ofByte offset: Int, in bytes: [UInt8]) -> Mark {
        var line = 1
        var column = 1
        var i = 0
        while i < offset && i < bytes.count {
            if bytes[i] == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if bytes[i] & 0xC0 != 0x80 {
                column += 1  // count characters: skip UTF-8 continuation bytes
            }
            i += 1
        }
        return Mark(line: line, column: column)
    }

    static func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
        var i = 0
        let n = bytes.count
        while i < n {
            let b = bytes[i]
            let length: Int
            if b < 0x80 { i += 1; continue }
            else if b & 0xE0 == 0xC0, b >= 0xC2 { length = 2 }
            else if b & 0xF0 == 0xE0 { length = 3 }
            else if b & 0xF8 == 0xF0, b <= 0xF4 { length = 4 }
            else { return i }
            if i + length > n { return i }
            for k in 1..<length where bytes[i + k] & 0xC0 != 0x80 { return i }
            if length == 3 {
                let c = bytes[i + 1]
                if (b == 0xE0 && c < 0xA0) || (b == 0xED && c >= 0xA0) { return i }  // overlong, surrogate
            }
            if length == 4 {
                let c = bytes[i + 1]
                if (b == 0xF0 && c < 0x90) || (b == 0xF4 && c >= 0x90) { return i }
            }
            i += length
        }
        return nil
    }
}

/// Owns one `yaml_parser_t` for the duration of a parse.
private final class EventReader {
    private let parser: UnsafeMutablePointer<yaml_parser_t>
    private let file: String
    private let maxDepth: Int
    private var diagnostics: [Diagnostic] = []

    /// A collection being built. A class, so appending to the innermost one mutates it in place:
    /// with enum payloads every append copied the array (quadratic in a 10,000-item list).
    private final class Frame {
        let mark: Mark
        let isMapping: Bool
        var items: [YAMLNode] = []
        var entries: [YAMLMapping.Entry] = []
        var pendingKey: YAMLScalar?
        var keyIsBad = false

        init(mark: Mark, isMapping: Bool) {
            self.mark = mark
            self.isMapping = isMapping
        }
    }

    init(buffer: UnsafeBufferPointer<UInt8>, file: String, maxDepth: Int) {
        self.file = file
        self.maxDepth = maxDepth
        parser = .allocate(capacity: 1)
        yaml_parser_initialize(parser)
        if let base = buffer.baseAddress {
            yaml_parser_set_input_string(parser, base, buffer.count)
        } else {
            yaml_parser_set_input_string(parser, "", 0)
        }
    }

    deinit {
        yaml_parser_delete(parser)
        parser.deallocate()
    }

    private func report(_ code: DiagnosticCode, _ message: String, _ mark: Mark) {
        diagnostics.append(Diagnostic(.error, code, message, file: file, at: mark))
    }

    private static func mark(_ m: yaml_mark_t) -> Mark {
        Mark(line: Int(m.line) + 1, column: Int(m.column) + 1)
    }

    private static func string(_ p: UnsafeMutablePointer<yaml_char_t>?, length: Int? = nil) -> String? {
        guard let p else { return nil }
        let n = length ?? strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }

    /// Explicit tags would let a file ask for a non-string type; only the string tags are harmless.
    private func checkTag(_ tag: UnsafeMutablePointer<yaml_char_t>?, _ mark: Mark) {
        guard let tag = Self.string(tag) else { return }
        if tag == "tag:yaml.org,2002:str" || tag == "!" { return }
        report(.yamlTag, "explicit tag '\(tag)' is not allowed: Bulkhead reads every value as a string; remove the tag", mark)
    }

    private func checkAnchor(_ anchor: UnsafeMutablePointer<yaml_char_t>?, _ mark: Mark) {
        guard let anchor = Self.string(anchor) else { return }
        report(.yamlAlias, "anchor '&\(anchor)' is not allowed: anchors and aliases are not allowed in policies, so each value reads as written; write the value out where it is used", mark)
    }

    func read() -> YAMLLoader.Result {
        var documents: [YAMLNode] = []
        var stack: [Frame] = []
        var root: YAMLNode?
        var event = yaml_event_t()

        func attach(_ node: YAMLNode) {
            guard let top = stack.last else {
                root = node
                return
            }
            if !top.isMapping {
                top.items.append(node)
            } else if top.keyIsBad {
                top.keyIsBad = false
            } else if let key = top.pendingKey {
                top.entries.append(.init(key: key, value: node))
                top.pendingKey = nil
            } else if case .scalar(let s) = node {
                top.pendingKey = s
            } else {
                report(.wrongType, "a mapping key must be a string, not \(node.kindDescription)", node.mark)
                top.keyIsBad = true
            }
        }

        while true {
            guard yaml_parser_parse(parser, &event) == 1 else {
                reportParserError()
                return .init(documents: documents, diagnostics: diagnostics)
            }
            defer { yaml_event_delete(&event) }
            let mark = Self.mark(event.start_mark)
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return .init(documents: documents, diagnostics: diagnostics)
            case YAML_DOCUMENT_START_EVENT:
                root = nil
            case YAML_DOCUMENT_END_EVENT:
                if let root { documents.append(root) }
            case YAML_ALIAS_EVENT:
                let name = Self.string(event.data.alias.anchor) ?? ""
                report(.yamlAlias, "alias '*\(name)' is not allowed: anchors and aliases are not allowed in policies, so each value reads as written; write the value out here", mark)
                attach(.scalar(YAMLScalar(value: "", style: .plain, mark: mark)))
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                checkAnchor(s.anchor, mark)
                checkTag(s.tag, mark)
                let style: YAMLScalar.Style
                switch s.style {
                case YAML_SINGLE_QUOTED_SCALAR_STYLE: style = .singleQuoted
                case YAML_DOUBLE_QUOTED_SCALAR_STYLE: style = .doubleQuoted
                case YAML_LITERAL_SCALAR_STYLE: style = .literal
                case YAML_FOLDED_SCALAR_STYLE: style = .folded
                default: style = .plain
                }
                let value = Self.string(s.value, length: Int(s.length)) ?? ""
                attach(.scalar(YAMLScalar(value: value, style: style, mark: mark)))
            case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                if stack.count >= maxDepth {
                    report(.tooLarge, "nesting is deeper than \(maxDepth) levels: no policy needs that; flatten the document", mark)
                    return .init(documents: documents, diagnostics: diagnostics)
                }
                if event.type == YAML_SEQUENCE_START_EVENT {
                    checkAnchor(event.data.sequence_start.anchor, mark)
                    checkTag(event.data.sequence_start.tag, mark)
                    stack.append(Frame(mark: mark, isMapping: false))
                } else {
                    checkAnchor(event.data.mapping_start.anchor, mark)
                    checkTag(event.data.mapping_start.tag, mark)
                    stack.append(Frame(mark: mark, isMapping: true))
                }
            case YAML_SEQUENCE_END_EVENT:
                if let f = stack.popLast() {
                    attach(.sequence(YAMLSequence(items: f.items, mark: f.mark)))
                }
            case YAML_MAPPING_END_EVENT:
                if let f = stack.popLast() {
                    attach(.mapping(YAMLMapping(entries: f.entries, mark: f.mark)))
                }
            default:
                break
            }
        }
    }

    private func reportParserError() {
        let p = parser.pointee
        let problem = p.problem.map { String(cString: $0) } ?? "cannot parse"
        var mark = Self.mark(p.problem_mark)
        var message = problem
        if p.error == YAML_READER_ERROR {
            // Reader errors carry a byte offset, not a line.
            mark = .start
            message = "\(problem) at byte \(p.problem_offset)"
        } else if let context = p.context.map({ String(cString: $0) }) {
            let at = Self.mark(p.context_mark)
            message = "\(problem) (\(context) at line \(at.line), column \(at.column))"
        }
        if p.error == YAML_MEMORY_ERROR { message = "out of memory while parsing" }
        report(.yamlSyntax, message, mark)
    }
}
