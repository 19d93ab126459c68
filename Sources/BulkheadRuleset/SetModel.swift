/// Set flags Bulkhead can ask for. `map` and `concat` are derived from the set's shape (see
/// `NFTSet.kernelFlags`), so they are not stored here and cannot disagree with it.
public struct SetFlags: OptionSet, Hashable, Sendable, Codable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `NFT_SET_CONSTANT`: elements fixed at creation.
    public static let constant = SetFlags(rawValue: 0x2)
    /// `NFT_SET_INTERVAL`: elements may be ranges and prefixes.
    public static let interval = SetFlags(rawValue: 0x4)
    /// `NFT_SET_TIMEOUT`: elements may expire.
    public static let timeout = SetFlags(rawValue: 0x10)

    static let nftNames: [(SetFlags, String)] = [(.constant, "constant"), (.interval, "interval"), (.timeout, "timeout")]
}

/// One element of a named set or map, or one entry of an anonymous set in a rule.
public struct SetElement: Hashable, Sendable, Codable, CustomStringConvertible {
    /// One part per key field; several for a concatenated key.
    public var key: [KeyPart]
    /// The mapped value for map elements, nil for set elements.
    public var data: ElementData?

    public init(key: [KeyPart], data: ElementData? = nil) {
        self.key = key
        self.data = data
    }

    /// A set element from plain values (one per concatenated field).
    public init(_ values: Value...) {
        self.init(key: values.map { .value($0) })
    }

    /// A map element with a single-field key.
    public init(_ key: Value, _ data: ElementData) {
        self.init(key: [.value(key)], data: data)
    }

    public var description: String { NFTText.element(self) }
}

/// What a map element maps to.
public enum ElementData: Hashable, Sendable, Codable, CustomStringConvertible {
    case verdict(Verdict)
    case value(Value)

    public var description: String {
        switch self {
        case .verdict(let v): v.description
        case .value(let v): v.description
        }
    }
}

/// A named set or map in our table.
///
/// `elements` is kept in `nft list` order (see `ElementOrder`), without duplicates, so two sets
/// with the same content are `==` whatever order the elements arrived in.
public struct NFTSet: Hashable, Sendable, Codable {
    public var name: String
    public var key: KeyType
    public var flags: SetFlags
    /// Non-nil makes this a map.
    public var data: MapData?
    /// Default element timeout in milliseconds (`NFTA_SET_TIMEOUT`); implies the timeout flag.
    public var timeoutMilliseconds: UInt64?
    public private(set) var elements: [SetElement]

    public init(name: String, key: KeyType, flags: SetFlags = [], data: MapData? = nil,
                timeoutMilliseconds: UInt64? = nil, elements: [SetElement] = []) {
        self.name = name
        self.key = key
        self.flags = flags
        self.data = data
        self.timeoutMilliseconds = timeoutMilliseconds
        self.elements = []
        self.elements = ElementOrder.sorted(elements, key: key)
    }

    public var isMap: Bool { data != nil }

    /// The `NFTA_SET_FLAGS` value to send: our flags plus `NFT_SET_MAP` (0x8) for maps,
    /// `NFT_SET_CONCAT` (0x80) for concatenated interval sets (the kernel requires it there,
    /// nft sets it only then) and `NFT_SET_TIMEOUT` when a default timeout is given.
    public var kernelFlags: UInt32 {
        var f = flags.rawValue
        if data != nil { f |= 0x8 }
        if key.isConcatenation && flags.contains(.interval) { f |= 0x80 }
        if timeoutMilliseconds != nil { f |= SetFlags.timeout.rawValue }
        return f
    }

    /// Replaces the elements (sorted and de-duplicated).
    public mutating func setElements(_ elements: [SetElement]) {
        self.elements = ElementOrder.sorted(elements, key: key)
    }

    /// Replaces the elements with ones already in `ElementOrder` without duplicate keys (what
    /// `TableState` merges), skipping the sort.
    mutating func replaceElements(_ sorted: [SetElement]) {
        self.elements = sorted
    }

    /// The same set without elements: what `add set` creates before elements are added.
    public var definition: NFTSet {
        var d = self
        d.elements = []
        return d
    }
}

extension NFTSet {
    enum CodingKeys: String, CodingKey {
        case name, key, flags, data, timeoutMilliseconds, elements
    }

    /// Decodes like the synthesised initialiser, then sorts the elements: everything that reads
    /// a set (binary search in `TableState`, dumps, equality) relies on `ElementOrder`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try c.decode(String.self, forKey: .name),
                  key: try c.decode(KeyType.self, forKey: .key),
                  flags: try c.decode(SetFlags.self, forKey: .flags),
                  data: try c.decodeIfPresent(MapData.self, forKey: .data),
                  timeoutMilliseconds: try c.decodeIfPresent(UInt64.self, forKey: .timeoutMilliseconds),
                  elements: try c.decode([SetElement].self, forKey: .elements))
    }
}
