/// Just enough of an x86-64 assembler for the stub page's code (the system-call stub and the
/// routines it sends calls to): bytes, labels, rel32 jumps. Labels are offsets in the stub
/// page, so code placed at one offset (`origin`) may jump to another piece's labels, given.
struct StubAssembler {
    enum Condition { case always, equal, notEqual, above, aboveOrEqual }
    /// Where in the stub page this code goes.
    let origin: Int
    var bytes: [UInt8] = []
    /// Offsets in the stub page.
    var labels: [String: Int] = [:]
    private var fixups: [(at: Int, label: String)] = []

    init(origin: Int = 0) { self.origin = origin }

    // unsafe: the integer's own bytes (a local copy) are only copied into a new array, inside the closure.
    func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    mutating func emit(_ code: [UInt8]) { bytes += code }
    mutating func label(_ name: String) { labels[name] = origin + bytes.count }
    /// The page offset the next byte goes to.
    var here: Int { origin + bytes.count }

    mutating func jump(_ condition: Condition, to label: String) {
        switch condition {
        case .always: bytes += [0xE9]
        case .equal: bytes += [0x0F, 0x84]
        case .notEqual: bytes += [0x0F, 0x85]
        case .above: bytes += [0x0F, 0x87]
        case .aboveOrEqual: bytes += [0x0F, 0x83]
        }
        fixups.append((bytes.count, label))
        bytes += [0, 0, 0, 0]
    }

    func finish() -> [UInt8] {
        var result = bytes
        for fixup in fixups {
            let target = labels[fixup.label]!
            let relative = Int32(target - (origin + fixup.at + 4))
            result.replaceSubrange(fixup.at..<(fixup.at + 4), with: le(relative))
        }
        return result
    }
}
