import Foundation

/// Builds tar archives byte by byte for the tests, hostile ones included: any name, any
/// claimed size, pax records, GNU long names, device nodes.
struct TarWriter {
    private(set) var bytes: [UInt8] = []

    enum Kind: UInt8 {
        case file = 0x30, hardLink = 0x31, symlink = 0x32, characterDevice = 0x33, blockDevice = 0x34, directory = 0x35, fifo = 0x36
        case pax = 0x78, gnuLongName = 0x4C, sparse = 0x53
    }

    /// An entry; `claimedSize` writes another size in the header than the content's (base-256 when over 8 GiB).
    mutating func add(_ name: String, _ kind: Kind = .file, content: [UInt8] = [], mode: Int = 0o644, link: String = "",
                      claimedSize: Int64? = nil, uid: Int = 0, gid: Int = 0) {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int, width: Int) {
            for (index, byte) in text.utf8.prefix(width).enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: Int64, at offset: Int, width: Int) {
            put(String(value, radix: 8).leftPadded(to: width - 1) + "\0", at: offset, width: width)
        }
        put(name, at: 0, width: 100)
        octal(Int64(mode), at: 100, width: 8)
        octal(Int64(uid), at: 108, width: 8)
        octal(Int64(gid), at: 116, width: 8)
        let size = claimedSize ?? Int64(content.count)
        if size >= 0o77777777777 {
            header[124] = 0x80
            for index in 0..<8 { header[135 - index] = UInt8(truncatingIfNeeded: size >> (8 * index)) }
        } else {
            octal(size, at: 124, width: 12)
        }
        octal(1_700_000_000, at: 136, width: 12)
        header[156] = kind.rawValue
        put(link, at: 157, width: 100)
        put("ustar\0", at: 257, width: 6)
        put("00", at: 263, width: 2)
        put("root", at: 265, width: 32)
        put("root", at: 297, width: 32)
        for index in 148..<156 { header[index] = 0x20 }
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(sum, radix: 8).leftPadded(to: 6) + "\0 ", at: 148, width: 8)
        bytes += header
        bytes += content
        bytes += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    mutating func pax(_ records: [(String, String)]) {
        var body: [UInt8] = []
        for (key, value) in records {
            let rest = " \(key)=\(value)\n"
            var length = rest.utf8.count + 1
            while String(length).utf8.count + rest.utf8.count != length { length += 1 }
            body += Array("\(length)\(rest)".utf8)
        }
        add("PaxHeaders/x", .pax, content: body)
    }

    mutating func longName(_ name: String) { add("././@LongLink", .gnuLongName, content: Array(name.utf8) + [0]) }

    func finished() -> [UInt8] { bytes + [UInt8](repeating: 0, count: 1024) }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
