/// The 512-byte header at the start of a hosted sparse extent (and, for streamOptimized
/// disks, again in the footer). All sizes and offsets are in 512-byte sectors.
public struct SparseExtentHeader: Sendable, Equatable {
    public static let magic: UInt32 = 0x564D_444B // "KDMV" read little-endian
    /// gdOffset value saying the grain directory's real offset is in the footer.
    public static let directoryAtEnd: UInt64 = .max
    public static let size = 512

    public struct Flags: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The newline-detection characters below are meaningful.
        public static let validNewlineDetection = Flags(rawValue: 1 << 0)
        public static let redundantGrainTable = Flags(rawValue: 1 << 1)
        /// A grain-table entry of 1 means "this grain reads as zeros" (stops fall-through).
        public static let zeroedGrains = Flags(rawValue: 1 << 2)
        public static let compressedGrains = Flags(rawValue: 1 << 16)
        public static let markers = Flags(rawValue: 1 << 17)
    }

    public var version: UInt32 = 1
    public var flags: Flags = [.validNewlineDetection, .redundantGrainTable]
    public var capacitySectors: UInt64
    public var grainSectors: UInt64 = 128
    public var descriptorOffset: UInt64 = 0
    public var descriptorSectors: UInt64 = 0
    public var entriesPerGrainTable: UInt32 = 512
    public var redundantDirectoryOffset: UInt64 = 0
    public var directoryOffset: UInt64 = 0
    public var overheadSectors: UInt64 = 0
    public var uncleanShutdown: Bool = false
    public var compressAlgorithm: UInt16 = 0

    public init(capacitySectors: UInt64) {
        self.capacitySectors = capacitySectors
    }

    /// Largest values accepted from a file: beyond them a header is hostile or corrupt, and
    /// honouring it would mean huge allocations.
    static let maximumCapacitySectors: UInt64 = 1 << 40 // 512 TiB
    static let maximumGrainSectors: UInt64 = 2048 // 1 MiB
    static let maximumEntriesPerGrainTable: UInt32 = 4096
    static let maximumDescriptorSectors: UInt64 = 2048

    public var grainBytes: UInt64 { grainSectors * 512 }
    public var grainTableCount: Int {
        let grains = (capacitySectors + grainSectors - 1) / grainSectors
        return Int((grains + UInt64(entriesPerGrainTable) - 1) / UInt64(entriesPerGrainTable))
    }
    public var grainTableSectors: UInt64 { (UInt64(entriesPerGrainTable) * 4 + 511) / 512 }
    public var grainDirectorySectors: UInt64 { (UInt64(grainTableCount) * 4 + 511) / 512 }

    /// Parses and checks a header; every refusal names the field.
    public static func parse(_ bytes: [UInt8], file: String) throws(DiskError) -> SparseExtentHeader {
        let reader = LittleEndianReader(bytes: bytes, file: file, structure: "header")
        func fail(_ field: String, _ problem: String) -> DiskError {
            .malformed(file: file, field: "header.\(field)", problem: problem)
        }
        let magic = try reader.integer(UInt32.self, at: 0, field: "magicNumber")
        guard magic == Self.magic else {
            throw fail("magicNumber", "0x\(String(magic, radix: 16)) is not 0x564d444b (\"KDMV\"); this is not a sparse VMDK extent")
        }
        var header = SparseExtentHeader(capacitySectors: try reader.integer(UInt64.self, at: 12, field: "capacity"))
        header.version = try reader.integer(UInt32.self, at: 4, field: "version")
        header.flags = Flags(rawValue: try reader.integer(UInt32.self, at: 8, field: "flags"))
        header.grainSectors = try reader.integer(UInt64.self, at: 20, field: "grainSize")
        header.descriptorOffset = try reader.integer(UInt64.self, at: 28, field: "descriptorOffset")
        header.descriptorSectors = try reader.integer(UInt64.self, at: 36, field: "descriptorSize")
        header.entriesPerGrainTable = try reader.integer(UInt32.self, at: 44, field: "numGTEsPerGT")
        header.redundantDirectoryOffset = try reader.integer(UInt64.self, at: 48, field: "rgdOffset")
        header.directoryOffset = try reader.integer(UInt64.self, at: 56, field: "gdOffset")
        header.overheadSectors = try reader.integer(UInt64.self, at: 64, field: "overHead")
        header.uncleanShutdown = try reader.integer(UInt8.self, at: 72, field: "uncleanShutdown") != 0
        header.compressAlgorithm = try reader.integer(UInt16.self, at: 77, field: "compressAlgorithm")

        guard (1...3).contains(header.version) else {
            throw fail("version", "\(header.version) is not 1, 2 or 3")
        }
        if header.flags.contains(.validNewlineDetection) {
            let newlines = (try reader.integer(UInt8.self, at: 73, field: "singleEndLineChar"),
                            try reader.integer(UInt8.self, at: 74, field: "nonEndLineChar"),
                            try reader.integer(UInt8.self, at: 75, field: "doubleEndLineChar1"),
                            try reader.integer(UInt8.self, at: 76, field: "doubleEndLineChar2"))
            guard newlines == (0x0A, 0x20, 0x0D, 0x0A) else {
                throw fail("singleEndLineChar", "the newline-detection bytes are not \\n, space, \\r, \\n: the file was altered by a text-mode transfer")
            }
        }
        guard header.capacitySectors > 0, header.capacitySectors <= maximumCapacitySectors else {
            throw fail("capacity", "\(header.capacitySectors) sectors is not between 1 and \(maximumCapacitySectors)")
        }
        guard header.grainSectors >= 1, header.grainSectors <= maximumGrainSectors, header.grainSectors & (header.grainSectors - 1) == 0 else {
            throw fail("grainSize", "\(header.grainSectors) sectors is not a power of two between 1 and \(maximumGrainSectors)")
        }
        guard header.entriesPerGrainTable >= 128, header.entriesPerGrainTable <= maximumEntriesPerGrainTable,
              header.entriesPerGrainTable & (header.entriesPerGrainTable - 1) == 0 else {
            throw fail("numGTEsPerGT", "\(header.entriesPerGrainTable) is not a power of two between 128 and \(maximumEntriesPerGrainTable)")
        }
        guard header.descriptorSectors <= maximumDescriptorSectors else {
            throw fail("descriptorSize", "\(header.descriptorSectors) sectors is more than \(maximumDescriptorSectors)")
        }
        guard header.descriptorSectors == 0 || (header.descriptorOffset >= 1 && header.descriptorOffset <= maximumCapacitySectors) else {
            throw fail("descriptorOffset", "\(header.descriptorOffset) does not point after the header")
        }
        let compressed = header.flags.contains(.compressedGrains)
        guard header.compressAlgorithm == 0 || (header.compressAlgorithm == 1 && compressed) else {
            throw fail("compressAlgorithm", "\(header.compressAlgorithm) is not 0 (none) or 1 (deflate, with the compressed-grains flag)")
        }
        if compressed && header.compressAlgorithm != 1 {
            throw fail("compressAlgorithm", "grains are flagged compressed but the algorithm is \(header.compressAlgorithm), not 1 (deflate)")
        }
        if header.directoryOffset != directoryAtEnd {
            guard header.directoryOffset >= 1, header.directoryOffset <= maximumCapacitySectors else {
                throw fail("gdOffset", "\(header.directoryOffset) does not point after the header")
            }
        }
        if header.flags.contains(.redundantGrainTable) {
            guard header.redundantDirectoryOffset >= 1, header.redundantDirectoryOffset <= maximumCapacitySectors else {
                throw fail("rgdOffset", "\(header.redundantDirectoryOffset) does not point after the header")
            }
        }
        guard header.overheadSectors <= maximumCapacitySectors else {
            throw fail("overHead", "\(header.overheadSectors) sectors is beyond any valid file")
        }
        return header
    }

    /// The 512 bytes of this header as they go on disk.
    public func serialized() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.storeLittleEndian(Self.magic, at: 0)
        bytes.storeLittleEndian(version, at: 4)
        bytes.storeLittleEndian(flags.rawValue, at: 8)
        bytes.storeLittleEndian(capacitySectors, at: 12)
        bytes.storeLittleEndian(grainSectors, at: 20)
        bytes.storeLittleEndian(descriptorOffset, at: 28)
        bytes.storeLittleEndian(descriptorSectors, at: 36)
        bytes.storeLittleEndian(entriesPerGrainTable, at: 44)
        bytes.storeLittleEndian(redundantDirectoryOffset, at: 48)
        bytes.storeLittleEndian(directoryOffset, at: 56)
        bytes.storeLittleEndian(overheadSectors, at: 64)
        bytes[72] = uncleanShutdown ? 1 : 0
        bytes[73] = 0x0A
        bytes[74] = 0x20
        bytes[75] = 0x0D
        bytes[76] = 0x0A
        bytes.storeLittleEndian(compressAlgorithm, at: 77)
        return bytes
    }

    /// The layout qemu-img and VMware use for a new sparse extent: header, descriptor space,
    /// redundant directory and its tables, directory and its tables, all tables allocated up
    /// front, then grains from the first grain boundary.
    static func forNewExtent(capacitySectors: UInt64, grainSectors: UInt64, embeddedDescriptorSectors: UInt64) -> SparseExtentHeader {
        var header = SparseExtentHeader(capacitySectors: capacitySectors)
        header.grainSectors = grainSectors
        header.descriptorOffset = embeddedDescriptorSectors > 0 ? 1 : 0
        header.descriptorSectors = embeddedDescriptorSectors
        let tables = UInt64(header.grainTableCount) * header.grainTableSectors
        header.redundantDirectoryOffset = 1 + embeddedDescriptorSectors
        header.directoryOffset = header.redundantDirectoryOffset + header.grainDirectorySectors + tables
        let end = header.directoryOffset + header.grainDirectorySectors + tables
        header.overheadSectors = (end + grainSectors - 1) / grainSectors * grainSectors
        return header
    }
}
