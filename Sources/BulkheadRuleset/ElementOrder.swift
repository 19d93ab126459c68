/// The order in which `nft list` (1.0.6) prints set elements, reproduced so our rendering and our
/// dumps match it byte for byte.
///
/// nft sorts the elements it reads back (`src/mergesort.c`) by a GMP integer built from the key:
/// - one field: the value as the kernel holds it, read in the field's byte order, so addresses
///   and ports sort numerically, `mark`/`ct state`/1-byte types numerically, and interface names
///   (strings are host order) by their *last* differing byte of the 16-byte padded name — `"abc"`
///   sorts after `"b"` (checked: `"a", "b", "abc", "eth0", "veth1", "veth10"`);
/// - a concatenation: the unpadded field bytes, each in its own byte order, glued together and read
///   as one little-endian number, so the last field is most significant (checked:
///   `1.0.0.3 . 256` < `2.0.0.0 . 1` < `1.1.1.1 . 80` < `1.1.1.2 . 80` < `1.1.1.1 . 443`);
/// - a range sorts by its low end.
/// Concatenated *interval* sets are not sorted by nft 1.0.6 (it prints the kernel's order); we
/// use the concatenation rule for them too, and the oracle tests compare those sets unordered.
public enum ElementOrder {
    /// Sorts and removes duplicate keys (the last occurrence wins, like a later `add element`
    /// with new data would have to be modelled).
    public static func sorted(_ elements: [SetElement], key: KeyType) -> [SetElement] {
        var byKey: [[KeyPart]: Int] = [:]
        var unique: [SetElement] = []
        unique.reserveCapacity(elements.count)
        for e in elements {
            if let i = byKey[e.key] {
                unique[i] = e
            } else {
                byKey[e.key] = unique.count
                unique.append(e)
            }
        }
        let keyed = unique.map { (sortKey($0.key), $0) }
        return keyed.sorted { $0.0.lexicographicallyPrecedes($1.0) }.map(\.1)
    }

    /// Length of `sortKey` for a key of `type`: the unpadded field lengths.
    static func sortKeyLength(_ type: KeyType) -> Int {
        type.fields.reduce(0) { $0 + $1.byteLength }
    }

    /// Writes `sortKey(key)` to `p` (room for `length` = `sortKeyLength` of the key's type)
    /// without allocating; the key's parts must have their field types' lengths.
    static func writeSortKey(_ key: [KeyPart], to p: UnsafeMutablePointer<UInt8>, length: Int) {
        var offset = 0
        for part in key {
            let v = part.low
            v.writeBytes(to: p + offset)
            offset += v.dataType.byteLength
        }
        if key.count > 1 || !key[0].low.dataType.isBigEndian {
            var bytes = UnsafeMutableBufferPointer(start: p, count: length)
            bytes.reverse()
        }
    }

    /// Bytes whose lexicographic order is nft's order.
    static func sortKey(_ key: [KeyPart]) -> [UInt8] {
        if key.count == 1 {
            let v = key[0].low
            return v.dataType.isBigEndian ? v.bytes : v.bytes.reversed()
        }
        var buffer: [UInt8] = []
        for part in key { buffer += part.low.bytes }
        return buffer.reversed()
    }
}
