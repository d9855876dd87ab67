/// A tar entry's header, after pax and GNU long-name records were applied.
public struct TarEntry: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case file, hardLink, symlink, characterDevice, blockDevice, directory, fifo
    }

    public var path: String
    public var kind: Kind
    public var size: Int64
    public var mode: UInt32
    public var uid: Int
    public var gid: Int
    public var modificationTime: Int64
    public var linkName: String
    /// Extended attributes from pax `SCHILY.xattr.NAME` records (GNU tar's and Docker's
    /// form), the value's bytes as they were.
    public var xattrs: [TarXAttr] = []
}

/// One extended attribute of a tar entry.
public struct TarXAttr: Sendable, Equatable {
    public var name: String
    public var value: [UInt8]
}

/// Where a tar reader gets its bytes: `read` fills the buffer and returns the count, 0 at the end.
protocol TarSource: AnyObject {
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int
}

extension LayerStream: TarSource {}

/// A streaming reader of tar archives: POSIX ustar, pax extended headers ('x'; global 'g'
/// ones are skipped), GNU long names and link names ('L', 'K') and base-256 numbers. Checks
/// every header's checksum; refuses sparse files and other GNU extensions by name.
final class TarReader {
    let layer: String
    private let source: any TarSource
    private var buffer = [UInt8](repeating: 0, count: 128 * 1024)
    private var start = 0
    private var end = 0
    /// Bytes of the current entry's content not yet read, and the padding after it.
    private var remaining: Int64 = 0
    private var padding = 0
    private var current = "-"
    private var finished = false

    /// Largest pax header or GNU long name accepted.
    static let maxMetadataBytes = 1 << 20

    init(source: any TarSource, layer: String) {
        self.source = source
        self.layer = layer
    }

    private func error(_ problem: String) -> ImageError { .unsafeLayer(layer: layer, entry: current, problem: problem) }

    /// Makes at least `count` bytes available; false at the end of the source.
    private func ensure(_ count: Int) throws(ImageError) -> Bool {
        if end - start >= count { return true }
        if start > 0 {
            buffer.replaceSubrange(0..<(end - start), with: buffer[start..<end])
            end -= start
            start = 0
        }
        // A metadata record larger than the buffer (up to `maxMetadataBytes`): the buffer grows
        // to hold it. Before, the source was asked to fill an empty slice, and a layer's stream
        // that never reads into nothing spun for ever on a crafted 128 KiB pax header.
        if count > buffer.count { buffer += [UInt8](repeating: 0, count: count - buffer.count) }
        while end < count {
            // unsafe: the view of `buffer` is used only in the closure; end <= buffer.count, so raw[end...] is a valid (maybe empty) range.
            let result = buffer.withUnsafeMutableBytes { raw in
                // unsafe: the source fills the buffer's free tail, from end on.
                Result { () throws(ImageError) in try source.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[end...])) }
            }
            let read = try result.get()
            if read == 0 { return false }
            end += read
        }
        return true
    }

    private func take(_ count: Int) throws(ImageError) -> ArraySlice<UInt8> {
        guard try ensure(count) else { throw error("the archive ends inside a header or a metadata record") }
        defer { start += count }
        return buffer[start..<start + count]
    }

    /// Reads and hands the rest of the current entry's content to `body`, piece by piece.
    func readContent(_ body: (UnsafeRawBufferPointer) throws(ImageError) -> Void) throws(ImageError) {
        while remaining > 0 {
            if start == end, try !ensure(1) { throw error("the archive ends inside the entry's content (\(remaining) bytes missing)") }
            let count = Int(min(Int64(end - start), remaining))
            // unsafe: the view goes to `body` only for its call (the unpacker writes it out); count <= end - start keeps it filled.
            let result = buffer.withUnsafeBytes { raw in
                // unsafe: [start, start + count) is within the filled part of the buffer.
                Result { () throws(ImageError) in try body(UnsafeRawBufferPointer(rebasing: raw[start..<start + count])) }
            }
            try result.get()
            start += count
            remaining -= Int64(count)
        }
        try skipPadding()
    }

    /// Skips the zeros that round the current entry's content up to a block. An archive that
    /// ends right after the content, with neither the padding nor the end-of-archive blocks,
    /// ends there: umoci 0.4's `insert` writes layers so (its tar writer is never closed) and
    /// Go's archive/tar, which Docker, containerd and umoci unpack with, reads them. Part of
    /// the padding is still a truncated archive. The layer's digests cover every byte either way.
    private func skipPadding() throws(ImageError) {
        guard padding > 0 else { return }
        defer { padding = 0 }
        if try ensure(padding) {
            start += padding
            return
        }
        guard start == end else { throw error("the archive ends inside the padding after the entry's content") }
        finished = true
    }

    /// Copies up to `target.count` bytes of the current entry's content into `target`;
    /// returns the count, 0 once the content is all read (its padding then skipped).
    func readSome(into target: UnsafeMutableRawBufferPointer) throws(ImageError) -> Int {
        if remaining == 0 {
            try skipPadding()
            return 0
        }
        if start == end, try !ensure(1) { throw error("the archive ends inside the entry's content (\(remaining) bytes missing)") }
        let count = min(end - start, Int(min(remaining, Int64(target.count))))
        // unsafe: the view of `buffer` is used only for this one copy, of [start, start + count) of its filled part.
        buffer.withUnsafeBytes { raw in
            // unsafe: [start, start + count) is within the filled part of the buffer, and count fits `target`.
            target.baseAddress!.copyMemory(from: raw.baseAddress! + start, byteCount: count)
        }
        start += count
        remaining -= Int64(count)
        return count
    }

    /// Skips the rest of the current entry.
    func skipContent() throws(ImageError) { try readContent { _ throws(ImageError) in } }

    /// The next entry, or nil at the end of the archive (two zero blocks, or one then the end).
    func next() throws(ImageError) -> TarEntry? {
        try skipContent()
        guard !finished else { return nil }
        var pax: [String: String] = [:]
        var xattrs: [TarXAttr] = []
        var longName: String?
        var longLink: String?
        while true {
            guard try ensure(512) else {
                // A clean end between entries without the two zero blocks is accepted (the digest covers truncation).
                if end == start, longName == nil, longLink == nil, pax.isEmpty { finished = true; return nil }
                throw error("the archive ends inside a header")
            }
            let header = Array(buffer[start..<start + 512])
            start += 512
            if header.allSatisfy({ $0 == 0 }) {
                finished = true
                return nil
            }
            current = longName ?? pax["path"] ?? Self.string(header[0..<100])
            try checkChecksum(header)
            let magic = Array(header[257..<263])
            let posix = magic == Array("ustar\0".utf8)
            let gnu = magic == Array("ustar ".utf8)
            guard posix || gnu else { throw error("not a ustar header (magic \(magic.map { String($0, radix: 16) }.joined(separator: " ")))") }
            let type = header[156]
            let headerSize = try number(header[124..<136], field: "size")
            var size = headerSize
            if let paxSize = pax["size"] {
                guard let value = Int64(paxSize), value >= 0 else { throw error("pax size \"\(paxSize.prefix(40))\" is not a number") }
                size = value
            }
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
                guard headerSize <= Int64(Self.maxMetadataBytes) else { throw error("a metadata record of \(headerSize) bytes, over the \(Self.maxMetadataBytes)-byte limit") }
                let body = Array(try take(Int(headerSize)))
                _ = try take(Self.paddingAfter(headerSize))
                if type == UInt8(ascii: "x") {
                    for (key, value) in try parsePax(body) {
                        if key.hasPrefix(Self.xattrPrefix) {
                            let name = String(key.dropFirst(Self.xattrPrefix.count))
                            guard !name.isEmpty, name.utf8.count <= 255, !name.utf8.contains(0) else { throw error("a pax xattr record names no usable attribute") }
                            xattrs.removeAll { $0.name == name }
                            xattrs.append(TarXAttr(name: name, value: value))
                        } else {
                            pax[key] = String(decoding: value, as: UTF8.self)
                        }
                    }
                } else if type == UInt8(ascii: "L") {
                    longName = Self.string(body[...])
                } else if type == UInt8(ascii: "K") {
                    longLink = Self.string(body[...])
                }
                continue
            default:
                break
            }
            let kind: TarEntry.Kind
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "1"): kind = .hardLink
            case UInt8(ascii: "2"): kind = .symlink
            case UInt8(ascii: "3"): kind = .characterDevice
            case UInt8(ascii: "4"): kind = .blockDevice
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "6"): kind = .fifo
            default:
                let shown = (0x21...0x7E).contains(type) ? "'\(Character(UnicodeScalar(type)))'" : "byte \(type)"
                throw error("entry type \(shown) is not supported (sparse files, volume headers and other extensions are refused)")
            }
            var path = Self.string(header[0..<100])
            if posix {
                let prefix = Self.string(header[345..<500])
                if !prefix.isEmpty { path = prefix + "/" + path }
            }
            path = longName ?? pax["path"] ?? path
            current = path
            let linkName = longLink ?? pax["linkpath"] ?? Self.string(header[157..<257])
            var entry = TarEntry(path: path, kind: kind, size: 0, mode: UInt32(try number(header[100..<108], field: "mode") & 0o7777),
                                 uid: Int(try number(header[108..<116], field: "uid")), gid: Int(try number(header[116..<124], field: "gid")),
                                 modificationTime: try number(header[136..<148], field: "mtime"), linkName: linkName)
            entry.xattrs = xattrs
            if let uid = pax["uid"] { entry.uid = try paxInt(uid, "uid") }
            if let gid = pax["gid"] { entry.gid = try paxInt(gid, "gid") }
            if let mtime = pax["mtime"] { entry.modificationTime = Int64(try paxInt(String(mtime.split(separator: ".").first ?? ""), "mtime")) }
            // Only regular files carry content; a size on anything else is read past.
            entry.size = kind == .file ? size : 0
            remaining = size
            padding = Self.paddingAfter(size)
            guard !path.isEmpty else { throw error("an entry with an empty name") }
            guard !path.utf8.contains(0), !linkName.utf8.contains(0) else { throw error("a name holds a NUL character") }
            return entry
        }
    }

    /// Reads past the end-of-archive blocks to the end of the source (so the layer's digest covers every byte).
    func drain() throws(ImageError) {
        start = end
        while try ensure(1) { start = end }
    }

    static func paddingAfter(_ size: Int64) -> Int { Int((512 - size % 512) % 512) }

    private func checkChecksum(_ header: [UInt8]) throws(ImageError) {
        let stored = try number(header[148..<156], field: "checksum")
        var unsigned = 0
        var signed = 0
        for (index, byte) in header.enumerated() {
            let value = (148..<156).contains(index) ? 0x20 : byte
            unsigned += Int(value)
            signed += Int(Int8(bitPattern: value))
        }
        guard stored == Int64(unsigned) || stored == Int64(signed) else {
            throw error("header checksum \(stored) does not match the header's bytes (\(unsigned))")
        }
    }

    /// An octal field (spaces and NULs around it) or a GNU base-256 one (high bit set).
    private func number(_ field: ArraySlice<UInt8>, field name: String) throws(ImageError) -> Int64 {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            guard first == 0x80 else { throw error("\(name) is a negative or oversized base-256 number") }
            var value: UInt64 = 0
            for byte in field.dropFirst() {
                guard value >> 55 == 0 else { throw error("\(name) is over 2^63") }
                value = value << 8 | UInt64(byte)
            }
            guard value <= UInt64(Int64.max) else { throw error("\(name) is over 2^63") }
            return Int64(value)
        }
        var value: Int64 = 0
        var seenDigit = false
        var ended = false
        for byte in field {
            if byte == 0 || byte == 0x20 {
                if seenDigit { ended = true }
                continue
            }
            guard !ended, (0x30...0x37).contains(byte) else { throw error("\(name) field is not an octal number") }
            guard value >> 60 == 0 else { throw error("\(name) is over 2^63") }
            value = value << 3 | Int64(byte - 0x30)
            seenDigit = true
        }
        return value
    }

    private func paxInt(_ text: String, _ key: String) throws(ImageError) -> Int {
        guard let value = Int(text), value >= 0, value < 1 << 53 else { throw error("pax \(key) \"\(text.prefix(40))\" is not a number in range") }
        return value
    }

    /// The pax key prefix of an extended attribute.
    static let xattrPrefix = "SCHILY.xattr."

    /// Records "LENGTH key=value\n", LENGTH counting the whole record; values as bytes (an
    /// xattr's may be binary).
    private func parsePax(_ body: [UInt8]) throws(ImageError) -> [(String, [UInt8])] {
        var records: [(String, [UInt8])] = []
        var offset = 0
        while offset < body.count {
            if body[offset] == 0 { break }
            guard let space = body[offset...].firstIndex(of: 0x20), space - offset <= 8,
                  let length = Int(String(decoding: body[offset..<space], as: UTF8.self)), length > space - offset + 2,
                  offset + length <= body.count, body[offset + length - 1] == 0x0A else {
                throw error("a pax record at offset \(offset) is malformed")
            }
            let record = body[(space + 1)..<(offset + length - 1)]
            guard let equals = record.firstIndex(of: UInt8(ascii: "=")) else { throw error("a pax record at offset \(offset) has no '='") }
            records.append((String(decoding: record[..<equals], as: UTF8.self), Array(record[(equals + 1)...])))
            offset += length
        }
        return records
    }

    /// A NUL-terminated string field.
    static func string(_ field: ArraySlice<UInt8>) -> String {
        let end = field.firstIndex(of: 0) ?? field.endIndex
        return String(decoding: field[field.startIndex..<end], as: UTF8.self)
    }
}
