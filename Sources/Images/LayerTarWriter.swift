import Foundation

/// Writes a layer tarball to a file, hashing it as it goes (an uncompressed layer's digest is
/// its diff_id): POSIX ustar headers, with a pax extended header before an entry where ustar
/// falls short (a path or link target over 100 bytes, ids or a size over their octal fields,
/// nanoseconds of its mtime, extended attributes as `SCHILY.xattr.NAME`, GNU tar's and
/// Docker's form). Names are written as the bytes they are.
public final class LayerTarWriter {
    /// One entry's header. `path` has no leading "/" ("etc/motd"); a folder's ends in "/".
    public struct Header {
        public var path: [UInt8]
        public var kind: TarEntry.Kind
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        public var size: UInt64
        public var modified: (seconds: Int64, nanoseconds: UInt32)
        public var linkName: [UInt8]
        public var xattrs: [TarXAttr]

        public init(path: [UInt8], kind: TarEntry.Kind, mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, size: UInt64 = 0,
                    modified: (seconds: Int64, nanoseconds: UInt32) = (0, 0), linkName: [UInt8] = [], xattrs: [TarXAttr] = []) {
            self.path = path
            self.kind = kind
            self.mode = mode
            self.uid = uid
            self.gid = gid
            self.size = size
            self.modified = modified
            self.linkName = linkName
            self.xattrs = xattrs
        }
    }

    private let descriptor: Int32
    private let path: String
    private var buffer: [UInt8] = []
    private var hash = SHA256()
    /// Bytes handed to the file so far (flushed or buffered).
    public private(set) var bytesWritten: UInt64 = 0
    /// Content still owed to the entry begun last.
    private var owed: UInt64 = 0
    private var padding = 0
    private static let flushAt = 1 << 20

    /// Creates (or truncates) the file at `path`.
    public init(path: String) throws(ImageError) {
        descriptor = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw .io("cannot create \(path): \(String(cString: strerror(errno)))") }
        self.path = path
        buffer.reserveCapacity(Self.flushAt + 4096)
    }

    deinit { close(descriptor) }

    /// Writes `header` (and its pax header when it needs one); a regular file's content
    /// follows through `append`, exactly `header.size` bytes.
    public func begin(_ header: Header) throws(ImageError) {
        guard owed == 0 else { throw .io("tar \(path): the entry before \(String(decoding: header.path, as: UTF8.self)) lacks \(owed) bytes") }
        try endPadding()
        var records: [(String, [UInt8])] = []
        if header.path.count > 100 { records.append(("path", header.path)) }
        if header.linkName.count > 100 { records.append(("linkpath", header.linkName)) }
        if header.uid > Self.octalMax(7) { records.append(("uid", Array(String(header.uid).utf8))) }
        if header.gid > Self.octalMax(7) { records.append(("gid", Array(String(header.gid).utf8))) }
        let size = header.kind == .file ? header.size : 0
        if size > Self.octalMax(11) { records.append(("size", Array(String(size).utf8))) }
        let seconds = max(0, header.modified.seconds)
        if header.modified.nanoseconds != 0 || UInt64(seconds) > Self.octalMax(11) {
            records.append(("mtime", Array((String(seconds) + "." + String(format: "%09u", header.modified.nanoseconds)).utf8)))
        }
        for xattr in header.xattrs { records.append(("SCHILY.xattr." + xattr.name, xattr.value)) }
        if !records.isEmpty {
            let body = Self.paxBody(records)
            append(header: Self.ustar(name: Array("././@PaxHeader".utf8), type: UInt8(ascii: "x"), mode: 0o644, uid: 0, gid: 0,
                                      size: UInt64(body.count), seconds: 0, linkName: []))
            try put(body)
            try put([UInt8](repeating: 0, count: Self.paddingAfter(UInt64(body.count))))
        }
        append(header: Self.ustar(name: Array(header.path.prefix(100)), type: Self.typeFlag(header.kind), mode: header.mode & 0o7777,
                                  uid: min(header.uid, UInt32(Self.octalMax(7))), gid: min(header.gid, UInt32(Self.octalMax(7))),
                                  size: min(size, Self.octalMax(11)), seconds: min(UInt64(seconds), Self.octalMax(11)),
                                  linkName: Array(header.linkName.prefix(100))))
        try flushIfFull()
        owed = size
        padding = Self.paddingAfter(size)
    }

    /// Content of the regular file begun last.
    public func append(_ bytes: UnsafeRawBufferPointer) throws(ImageError) {
        guard UInt64(bytes.count) <= owed else { throw .io("tar \(path): \(bytes.count) bytes of content where \(owed) were left") }
        owed -= UInt64(bytes.count)
        buffer.append(contentsOf: bytes)
        try flushIfFull()
    }

    /// Ends the archive (two zero blocks) and writes everything out; returns its digest.
    public func finish() throws(ImageError) -> Digest {
        guard owed == 0 else { throw .io("tar \(path): the last entry lacks \(owed) bytes") }
        try endPadding()
        try put([UInt8](repeating: 0, count: 1024))
        try flush()
        guard fsync(descriptor) == 0 else { throw .io("cannot sync \(path): \(String(cString: strerror(errno)))") }
        return Digest(unchecked: hash.finishHex())
    }

    private func endPadding() throws(ImageError) {
        guard padding > 0 else { return }
        try put([UInt8](repeating: 0, count: padding))
        padding = 0
    }

    private func append(header: [UInt8]) { buffer += header }

    private func put(_ bytes: [UInt8]) throws(ImageError) {
        buffer += bytes
        try flushIfFull()
    }

    private func flushIfFull() throws(ImageError) {
        if buffer.count >= Self.flushAt { try flush() }
    }

    private func flush() throws(ImageError) {
        // unsafe: the buffer's view lives only in the closure; hash.update and write read within it (write from done < count).
        let failure: Int32? = buffer.withUnsafeBytes { bytes in
            hash.update(bytes)
            var done = 0
            while done < bytes.count {
                // unsafe: [done, count) lies inside the buffer.
                let wrote = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
                if wrote < 0, errno == EINTR { continue }
                guard wrote > 0 else { return wrote < 0 ? errno : ENOSPC }
                done += wrote
            }
            return nil
        }
        if let failure { throw .io("cannot write \(path): \(String(cString: strerror(failure)))") }
        bytesWritten += UInt64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    static func octalMax(_ digits: Int) -> UInt64 { (1 << (3 * UInt64(digits))) - 1 }
    static func paddingAfter(_ size: UInt64) -> Int { Int((512 - size % 512) % 512) }

    static func typeFlag(_ kind: TarEntry.Kind) -> UInt8 {
        switch kind {
        case .file: UInt8(ascii: "0")
        case .hardLink: UInt8(ascii: "1")
        case .symlink: UInt8(ascii: "2")
        case .characterDevice: UInt8(ascii: "3")
        case .blockDevice: UInt8(ascii: "4")
        case .directory: UInt8(ascii: "5")
        case .fifo: UInt8(ascii: "6")
        }
    }

    /// pax records "LENGTH KEY=VALUE\n", LENGTH counting itself.
    static func paxBody(_ records: [(String, [UInt8])]) -> [UInt8] {
        var body: [UInt8] = []
        for (key, value) in records {
            let rest = 1 + key.utf8.count + 1 + value.count + 1
            var length = rest + 1
            while String(length).utf8.count + rest != length { length += 1 }
            body += Array("\(length) \(key)=".utf8) + value + [0x0A]
        }
        return body
    }

    /// A 512-byte ustar header with its checksum.
    static func ustar(name: [UInt8], type: UInt8, mode: UInt32, uid: UInt32, gid: UInt32, size: UInt64, seconds: UInt64, linkName: [UInt8]) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int) {
            for (index, byte) in bytes.enumerated() { header[offset + index] = byte }
        }
        func octal(_ value: UInt64, at offset: Int, digits: Int) {
            let text = String(value, radix: 8)
            put(Array((String(repeating: "0", count: max(0, digits - text.count)) + text).utf8) + [0], at: offset)
        }
        put(name, at: 0)
        octal(UInt64(mode), at: 100, digits: 7)
        octal(UInt64(uid), at: 108, digits: 7)
        octal(UInt64(gid), at: 116, digits: 7)
        octal(size, at: 124, digits: 11)
        octal(seconds, at: 136, digits: 11)
        header[156] = type
        put(linkName, at: 157)
        put(Array("ustar\0".utf8), at: 257)
        put(Array("00".utf8), at: 263)
        for index in 148..<156 { header[index] = 0x20 }
        let sum = header.reduce(0) { $0 + Int($1) }
        let text = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - text.count)) + text).utf8) + [0, 0x20], at: 148)
        return header
    }
}
