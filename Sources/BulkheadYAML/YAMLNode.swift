/// A YAML document as a tree, every node carrying where it starts in the file.
///
/// Every scalar stays the string that was written: Bulkhead does no YAML 1.1 coercion, so `no`,
/// `on`, `0755` and `22:22` reach the schema checks as written.
public indirect enum YAMLNode: Sendable, Hashable {
    case scalar(YAMLScalar)
    case mapping(YAMLMapping)
    case sequence(YAMLSequence)

    public var mark: Mark {
        switch self {
        case .scalar(let s): return s.mark
        case .mapping(let m): return m.mark
        case .sequence(let s): return s.mark
        }
    }

    /// A plain-style empty scalar, `~` or `null`: what `key:` with nothing after it produces.
    public var isNull: Bool {
        if case .scalar(let s) = self { return s.isNull }
        return false
    }

    /// "a mapping", "a list", "a string": for wrong-type messages.
    public var kindDescription: String {
        switch self {
        case .scalar(let s): return s.isNull ? "nothing" : "a string"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }
}

public struct YAMLScalar: Sendable, Hashable {
    public enum Style: Sendable, Hashable { case plain, singleQuoted, doubleQuoted, literal, folded }

    public var value: String
    public var style: Style
    public var mark: Mark

    public init(value: String, style: Style, mark: Mark) {
        self.value = value
        self.style = style
        self.mark = mark
    }

    public var isNull: Bool {
        style == .plain && (value.isEmpty || value == "~" || value == "null" || value == "Null" || value == "NULL")
    }
}

public struct YAMLMapping: Sendable, Hashable {
    public struct Entry: Sendable, Hashable {
        public var key: YAMLScalar
        public var value: YAMLNode
    }

    /// Entries in file order. Duplicate keys are reported by the loader and only the first is kept.
    public var entries: [Entry]
    public var mark: Mark

    public init(entries: [Entry], mark: Mark) {
        self.entries = entries
        self.mark = mark
    }

    public subscript(key: String) -> Entry? {
        entries.first { $0.key.value == key }
    }
}

public struct YAMLSequence: Sendable, Hashable {
    public var items: [YAMLNode]
    public var mark: Mark

    public init(items: [YAMLNode], mark: Mark) {
        self.items = items
        self.mark = mark
    }
}

extension YAMLMapping {
    /// Entries whose key appeared earlier in the same mapping, each with that first entry.
    public var duplicates: [(entry: Entry, first: Entry)] {
        var seen: [String: Entry] = [:]
        var result: [(entry: Entry, first: Entry)] = []
        for entry in entries {
            if let first = seen[entry.key.value] {
                result.append((entry, first))
            } else {
                seen[entry.key.value] = entry
            }
        }
        return result
    }
}
