/// What a transaction step does.
public enum Verb: String, Hashable, Sendable, Codable {
    /// Create, or do nothing if an identical object exists; for rules, append to the chain; for
    /// elements, insert (identical existing elements are fine).
    case add
    /// Like `add` but fails when the object already exists (`NLM_F_EXCL`).
    case create
    /// Remove: tables, chains and sets by name (a chain with its rules), rules by handle,
    /// elements by key.
    case delete
    /// Empty: a chain of its rules, a set of its elements, a table of all its rules.
    case flush
}

/// The object a transaction step acts on. For delete and flush only the identity matters
/// (names; a rule's chain and handle; element keys).
public enum Object: Hashable, Sendable, Codable {
    /// The table header (name, family, flags); its sets, chains and rules are ignored.
    case table(Table)
    case chain(Chain)
    /// On add/create, the set's elements are added too.
    case set(NFTSet)
    case rule(Rule)
    case elements(set: String, [SetElement])
}

/// One step: a verb applied to an object.
public struct Operation: Hashable, Sendable, Codable {
    public var verb: Verb
    public var object: Object

    public init(_ verb: Verb, _ object: Object) {
        self.verb = verb
        self.object = object
    }
}
