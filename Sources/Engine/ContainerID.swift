/// A container's id: 32 lowercase hex digits of 128 random bits (the form UUIDs without
/// dashes had), made without Foundation's UUID and string replacing, which took ~80 µs of a
/// create on this machine.
enum ContainerID {
    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8](repeating: 0, count: 32)
        for half in 0..<2 {
            let bits = generator.next() as UInt64
            for index in 0..<16 { text[half * 16 + index] = digits[Int((bits >> UInt64(60 - 4 * index)) & 0xF)] }
        }
        return String(decoding: text, as: UTF8.self)
    }
}
