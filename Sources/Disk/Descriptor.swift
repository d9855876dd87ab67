/// The text descriptor of a VMDK disk: its content ID, its parent's, its subformat, where its
/// data lives (extents), and the disk database (DDB). Embedded in a monolithicSparse file or
/// a file of its own for the other subformats.
public struct Descriptor: Sendable, Equatable {
    /// The parentCID of a disk that has no parent.
    public static let noParent: UInt32 = 0xFFFF_FFFF
    /// Text beyond this is refused: real descriptors are a few hundred bytes.
    static let maximumBytes = 1 << 20

    public enum CreateType: String, Sendable, CaseIterable {
        case monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized
    }

    public enum ExtentKind: String, Sendable {
        case sparse = "SPARSE", flat = "FLAT", zero = "ZERO"
    }

    public struct Extent: Sendable, Equatable {
        public var access: String
        public var sectors: UInt64
        public var kind: ExtentKind
        public var fileName: String
        /// FLAT only: where the extent's data starts in its file, in sectors.
        public var offsetSectors: UInt64
    }

    public var version: Int = 1
    public var cid: UInt32
    public var parentCID: UInt32 = noParent
    public var createType: CreateType
    public var parentFileNameHint: String?
    public var extents: [Extent]
    /// ddb.* entries, in file order, without the "ddb." prefix.
    public var database: [(key: String, value: String)]

    public init(cid: UInt32, createType: CreateType, extents: [Extent], database: [(key: String, value: String)] = []) {
        self.cid = cid
        self.createType = createType
        self.extents = extents
        self.database = database
    }

    public static func == (lhs: Descriptor, rhs: Descriptor) -> Bool {
        lhs.version == rhs.version && lhs.cid == rhs.cid && lhs.parentCID == rhs.parentCID && lhs.createType == rhs.createType
            && lhs.parentFileNameHint == rhs.parentFileNameHint && lhs.extents == rhs.extents
            && lhs.database.elementsEqual(rhs.database) { $0 == $1 }
    }

    public var capacitySectors: UInt64 { extents.reduce(0) { $0 + $1.sectors } }

    /// The DDB a new disk gets: the geometry and adapter qemu-img and VMware write.
    static func defaultDatabase(capacitySectors: UInt64) -> [(key: String, value: String)] {
        let cylinders = min(capacitySectors / (16 * 63), 16383)
        return [("virtualHWVersion", "4"), ("geometry.cylinders", "\(cylinders)"),
                ("geometry.heads", "16"), ("geometry.sectors", "63"), ("adapterType", "ide")]
    }

    /// Parses descriptor text; a refusal names the line and field.
    public static func parse(_ bytes: [UInt8], file: String) throws(DiskError) -> Descriptor {
        guard bytes.count <= maximumBytes else {
            throw .malformed(file: file, field: "descriptor", problem: "\(bytes.count) bytes is more than the \(maximumBytes) a descriptor may have")
        }
        let used = bytes.prefix { $0 != 0 }
        guard let text = String(validating: used, as: UTF8.self) else {
            throw .malformed(file: file, field: "descriptor", problem: "the text is not valid UTF-8")
        }
        var cid: UInt32?
        var createType: CreateType?
        var descriptor = Descriptor(cid: 0, createType: .monolithicSparse, extents: [])
        var sawVersion = false
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingWhitespace()
            if line.isEmpty || line.hasPrefix("#") { continue }
            func fail(_ field: String, _ problem: String) -> DiskError {
                .malformed(file: file, field: "descriptor line \(number + 1) \(field)", problem: problem)
            }
            if let extent = try parseExtent(line, fail: fail) {
                descriptor.extents.append(extent)
                continue
            }
            guard let equals = line.firstIndex(of: "=") else {
                throw fail("", "\"\(line.prefix(60))\" is neither key=value nor an extent")
            }
            let key = line[..<equals].trimmingWhitespace()
            let value = unquoted(line[line.index(after: equals)...].trimmingWhitespace())
            switch key {
            case "version":
                guard let number = Int(value), (1...3).contains(number) else { throw fail("version", "\"\(value)\" is not 1, 2 or 3") }
                descriptor.version = number
                sawVersion = true
            case "CID":
                guard let parsed = parseCID(value) else { throw fail("CID", "\"\(value)\" is not a hex number of at most 8 digits") }
                cid = parsed
            case "parentCID":
                guard let parsed = parseCID(value) else { throw fail("parentCID", "\"\(value)\" is not a hex number of at most 8 digits") }
                descriptor.parentCID = parsed
            case "createType":
                guard let type = CreateType(rawValue: value) else {
                    throw fail("createType", "\"\(value)\" is not one of \(CreateType.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                createType = type
            case "parentFileNameHint":
                guard !value.isEmpty else { throw fail("parentFileNameHint", "is empty") }
                descriptor.parentFileNameHint = value
            default:
                if key.hasPrefix("ddb.") {
                    descriptor.database.append((String(key.dropFirst(4)), value))
                }
            }
        }
        guard sawVersion else { throw .malformed(file: file, field: "descriptor version", problem: "the version line is missing; this is not a VMDK descriptor") }
        guard let cid else { throw .malformed(file: file, field: "descriptor CID", problem: "the CID line is missing") }
        guard let createType else { throw .malformed(file: file, field: "descriptor createType", problem: "the createType line is missing") }
        guard !descriptor.extents.isEmpty else { throw .malformed(file: file, field: "descriptor extents", problem: "no extent lines") }
        guard descriptor.extents.count <= 65536 else { throw .malformed(file: file, field: "descriptor extents", problem: "\(descriptor.extents.count) extents is more than 65536") }
        let total = descriptor.extents.reduce(UInt64(0)) { $0 + $1.sectors }
        guard total <= SparseExtentHeader.maximumCapacitySectors else {
            throw .malformed(file: file, field: "descriptor extents", problem: "their sizes add up to \(total) sectors, more than \(SparseExtentHeader.maximumCapacitySectors)")
        }
        if descriptor.parentCID != noParent && descriptor.parentFileNameHint == nil {
            throw .malformed(file: file, field: "descriptor parentFileNameHint", problem: "parentCID is \(hex(descriptor.parentCID)) but no parent file is named")
        }
        descriptor.cid = cid
        descriptor.createType = createType
        return descriptor
    }

    /// `RW 2097152 SPARSE "disk.vmdk"` or `RW 2097152 FLAT "disk-flat.vmdk" 0`; nil when the
    /// line is not an extent line at all.
    private static func parseExtent(_ line: Substring, fail: (String, String) -> DiskError) throws(DiskError) -> Extent? {
        let access = ["RW", "RDONLY", "NOACCESS"].first { line.hasPrefix($0 + " ") || line.hasPrefix($0 + "\t") }
        guard let access else { return nil }
        var rest = line.dropFirst(access.count).trimmingWhitespace()
        guard let sizeEnd = rest.firstIndex(where: { $0 == " " || $0 == "\t" }), let sectors = UInt64(rest[..<sizeEnd]),
              sectors > 0, sectors <= SparseExtentHeader.maximumCapacitySectors else {
            throw fail("extent size", "\"\(line.prefix(60))\" lacks a sector count between 1 and \(SparseExtentHeader.maximumCapacitySectors) after \(access)")
        }
        rest = rest[sizeEnd...].trimmingWhitespace()
        let kindEnd = rest.firstIndex(where: { $0 == " " || $0 == "\t" }) ?? rest.endIndex
        let kindText = String(rest[..<kindEnd])
        guard let kind = ExtentKind(rawValue: kindText) else {
            throw fail("extent type", "\"\(kindText)\" is not SPARSE, FLAT or ZERO")
        }
        rest = rest[kindEnd...].trimmingWhitespace()
        var fileName = ""
        var offset: UInt64 = 0
        if kind != .zero {
            guard rest.first == "\"", let close = rest.dropFirst().firstIndex(of: "\"") else {
                throw fail("extent file name", "the file name must be in double quotes")
            }
            fileName = String(rest[rest.index(after: rest.startIndex)..<close])
            guard !fileName.isEmpty, !fileName.contains("\0") else { throw fail("extent file name", "is empty") }
            let tail = rest[rest.index(after: close)...].trimmingWhitespace()
            if !tail.isEmpty {
                guard let parsed = UInt64(tail), parsed <= SparseExtentHeader.maximumCapacitySectors else {
                    throw fail("extent offset", "\"\(tail.prefix(30))\" is not a sector offset")
                }
                offset = parsed
            }
        }
        return Extent(access: access, sectors: sectors, kind: kind, fileName: fileName, offsetSectors: offset)
    }

    private static func parseCID(_ text: String) -> UInt32? {
        guard (1...8).contains(text.count) else { return nil }
        return UInt32(text, radix: 16)
    }

    private static func unquoted(_ text: Substring) -> String {
        if text.count >= 2, text.first == "\"", text.last == "\"" { return String(text.dropFirst().dropLast()) }
        return String(text)
    }

    /// The descriptor as text, in the layout qemu-img and VMware write.
    public func rendered() -> String {
        var lines = ["# Disk DescriptorFile", "version=\(version)", "CID=\(hex(cid))", "parentCID=\(hex(parentCID))",
                     "createType=\"\(createType.rawValue)\""]
        if let parentFileNameHint { lines.append("parentFileNameHint=\"\(parentFileNameHint)\"") }
        lines += ["", "# Extent description"]
        for extent in extents {
            switch extent.kind {
            case .zero: lines.append("\(extent.access) \(extent.sectors) ZERO")
            case .flat: lines.append("\(extent.access) \(extent.sectors) FLAT \"\(extent.fileName)\" \(extent.offsetSectors)")
            case .sparse: lines.append("\(extent.access) \(extent.sectors) SPARSE \"\(extent.fileName)\"")
            }
        }
        lines += ["", "# The Disk Data Base", "#DDB", ""]
        for (key, value) in database { lines.append("ddb.\(key) = \"\(value)\"") }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> Substring {
        let text = Substring(self)
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        guard let start = text.firstIndex(where: { !isSpace($0) }) else { return text[text.endIndex...] }
        let end = text.lastIndex(where: { !isSpace($0) })!
        return text[start...end]
    }
}
