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

    public var description: String { services.map(\.description).joined(separator: "+") }

    public static func < (a: Identity, b: Identity) -> Bool { a.services.lexicographicallyPrecedes(b.services) }
}
