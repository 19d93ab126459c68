import BulkheadPolicy

/// The set of services a container belongs to. Each distinct identity gets its own chains, so a
/// container in two services is allowed what either allows, and nothing more.
public struct Identity: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var services: [ServiceRef]

    public init(_ services: [ServiceRef]) { self.services = services.sorted() }

    /// `shop_api`, or `shop_api__shop_extra` for several services. Names are DNS labels, which
    /// have no `_`, so the joins cannot collide.
    public var chainSuffix: String {
        services.map { "\($0.segment)_\($0.name)" }.joined(separator: "__")
    }

    /// The identity a `chainSuffix` names; nil when the text is not one (or not in canonical order).
    public init?(chainSuffix text: Substring) {
        var refs: [ServiceRef] = []
        for member in text.split(separator: "__", omittingEmptySubsequences: false) {
            let parts = member.split(separator: "_", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
            refs.append(ServiceRef(segment: String(parts[0]), name: String(parts[1])))
        }
        let id = Identity(refs)
        guard id.chainSuffix == text else { return nil }
        self = id
    }

    /// `shop/api+shop/extra`: how logs, denial comments and metrics name the identity.
    public var description: String { services.map(\.description).joined(separator: "+") }

    /// The identity a `description` names; nil when the text is not one (or not canonical).
    public init?(description text: Substring) {
        var refs: [ServiceRef] = []
        for member in text.split(separator: "+", omittingEmptySubsequences: false) {
            let parts = member.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
            refs.append(ServiceRef(segment: String(parts[0]), name: String(parts[1])))
        }
        let id = Identity(refs)
        guard id.description == text else { return nil }
        self = id
    }

    public static func < (a: Identity, b: Identity) -> Bool { a.services.lexicographicallyPrecedes(b.services) }
}
