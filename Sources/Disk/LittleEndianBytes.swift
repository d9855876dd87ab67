/// Bounds-checked little-endian reads and writes over a byte array, for the on-disk
/// structures. A read past the end throws instead of trapping.
struct LittleEndianReader {
    let bytes: [UInt8]
    let file: String
    let structure: String

    func integer<T: FixedWidthInteger>(_ type: T.Type, at offset: Int, field: String) throws(DiskError) -> T {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset + size <= bytes.count else {
            throw .malformed(file: file, field: "\(structure).\(field)", problem: "needs bytes \(offset)..<\(offset + size) but only \(bytes.count) are present")
        }
        var value: T = 0
        for index in 0..<size {
            value |= T(bytes[offset + index]) << (8 * index)
        }
        return value
    }
}

extension Array where Element == UInt8 {
    mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }
}
