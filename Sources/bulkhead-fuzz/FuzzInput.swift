/// Reads structured values off the front of a fuzz input. Running out of bytes yields zeros, so
/// every input decodes to something and libFuzzer's mutations stay meaningful.
struct FuzzInput {
    private let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isEmpty: Bool { position >= bytes.count }

    mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }

    mutating func u64() -> UInt64 { UInt64(u32()) << 32 | UInt64(u32()) }

    /// A small number most of the time (register numbers, offsets, lengths), any 32-bit value
    /// when the tag byte says so: the kernel accepts far more than Bulkhead writes.
    mutating func small() -> UInt32 {
        let b = byte()
        return b == 0xff ? u32() : UInt32(b)
    }

    /// A length-prefixed byte string (length byte, then that many bytes).
    mutating func blob(max: Int = 64) -> [UInt8] {
        let n = min(Int(byte()), max)
        return (0..<n).map { _ in byte() }
    }

    mutating func string(max: Int = 32) -> String { String(decoding: blob(max: max), as: UTF8.self) }

    mutating func pick<T>(_ options: [T]) -> T { options[Int(byte()) % options.count] }

    /// Whatever is left.
    mutating func rest() -> [UInt8] {
        defer { position = bytes.count }
        return position < bytes.count ? Array(bytes[position...]) : []
    }
}
