/// The `nft -f` command for each transaction operation.
///
/// nft accepts these exact lines (checked by the oracle tests, which load them with `nft -f`):
/// `add table inet t { flags dormant; }`, `add chain inet t c { type filter hook … policy accept; }`,
/// `add set inet t s { type ipv4_addr; flags interval; elements = { … }; }`, `add map …`,
/// `add element inet t s { a, b }`, `add rule inet t c <rule>`, `delete rule inet t c handle N`,
/// `flush chain|set|map|table …`, `delete table|chain|set|map|element …`, `create …`.
public enum NFTScript {
    public static func command(_ op: Operation, table: TableID) -> String {
        let verb = op.verb.rawValue
        switch op.object {
        case .table(let t):
            var out = "\(verb) table \(table)"
            if op.verb == .add || op.verb == .create, !t.flags.isEmpty {
                let names = [(TableFlags.dormant, "dormant"), (.owner, "owner"), (.persist, "persist")]
                    .filter { t.flags.contains($0.0) }.map(\.1)
                out += " { flags \(names.joined(separator: ",")); }"
            }
            return out
        case .chain(let c):
            var out = "\(verb) chain \(table) \(c.name)"
            if op.verb == .add || op.verb == .create, let b = c.base {
                out += " { \(NFTText.baseChainSpec(b, family: table.family)) }"
            }
            return out
        case .set(let s):
            let kind = s.isMap ? "map" : "set"
            var out = "\(verb) \(kind) \(table) \(s.name)"
            if op.verb == .add || op.verb == .create {
                var body = "type \(s.key)"
                if let d = s.data { body += " : \(d)" }
                body += ";"
                let flags = NFTText.printedFlags(s)
                if !flags.isEmpty { body += " flags \(flags.joined(separator: ","));" }
                if let t = s.timeoutMilliseconds { body += " timeout \(NFTText.duration(t));" }
                if !s.elements.isEmpty { body += " elements = \(NFTText.elementList(s.elements, perLine: nil));" }
                out += " { \(body) }"
            }
            return out
        case .rule(let r):
            if op.verb == .delete {
                return "delete rule \(table) \(r.chain) handle \(r.handle.map(String.init) ?? "?")"
            }
            return "add rule \(table) \(r.chain) \(NFTText.rule(r))"
        case .elements(let set, let els):
            // Sorted like nft lists them, so a plan never depends on the order elements were queued.
            let key = KeyType(els.first?.key.map(\.dataType) ?? [])
            return "\(verb) element \(table) \(set) \(NFTText.elementList(ElementOrder.sorted(els, key: key), perLine: nil))"
        }
    }
}
