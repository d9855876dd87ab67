import Disk
import Testing

/// The header and descriptor on their own: round trips, and refusals that name the field.
@Suite struct FormatTests {
    static let sampleDescriptor = """
        # Disk DescriptorFile
        version=1
        CID=1a2b3c4d
        parentCID=ffffffff
        createType="twoGbMaxExtentSparse"

        # Extent description
        RW 4192256 SPARSE "disk-s001.vmdk"
        RW 2048 FLAT "disk-flat.vmdk" 8
        RDONLY 100 ZERO

        # The Disk Data Base
        #DDB

        ddb.virtualHWVersion = "4"
        ddb.adapterType = "lsilogic"
        """

    @Test func descriptorRoundTrips() throws {
        let descriptor = try Descriptor.parse(Array(Self.sampleDescriptor.utf8), file: "d.vmdk")
        #expect(descriptor.cid == 0x1A2B_3C4D)
        #expect(descriptor.parentCID == Descriptor.noParent)
        #expect(descriptor.createType == .twoGbMaxExtentSparse)
        #expect(descriptor.extents.map(\.kind) == [.sparse, .flat, .zero])
        #expect(descriptor.extents[1].offsetSectors == 8)
        #expect(descriptor.capacitySectors == 4192256 + 2048 + 100)
        #expect(descriptor.database.map(\.key) == ["virtualHWVersion", "adapterType"])
        #expect(try Descriptor.parse(Array(descriptor.rendered().utf8), file: "d.vmdk") == descriptor)
    }

    @Test(arguments: [
        ("CID=1a2b3c4d", "CID=xyz", "CID"),
        ("createType=\"twoGbMaxExtentSparse\"", "createType=\"vmfsSparse\"", "createType"),
        ("RW 2048 FLAT", "RW 0 FLAT", "extent size"),
        ("RW 2048 FLAT", "RW 2048 TAPE", "extent type"),
        ("\"disk-flat.vmdk\" 8", "disk-flat.vmdk 8", "extent file name"),
        ("parentCID=ffffffff", "parentCID=12345678", "parentFileNameHint"),
        ("version=1", "version=9", "version"),
    ])
    func malformedDescriptorNamesTheField(original: String, replacement: String, field: String) {
        let text = Self.sampleDescriptor.replacingOccurrences(of: original, with: replacement)
        #expect(text != Self.sampleDescriptor)
        let error = #expect(throws: DiskError.self) { try Descriptor.parse(Array(text.utf8), file: "d.vmdk") }
        #expect(error?.description.contains(field) == true, "\(String(describing: error)) should name \(field)")
    }

    @Test func headerRoundTrips() throws {
        var header = SparseExtentHeader(capacitySectors: 2_097_152)
        header.descriptorOffset = 1
        header.descriptorSectors = 20
        header.redundantDirectoryOffset = 21
        header.directoryOffset = 300
        header.overheadSectors = 640
        #expect(try SparseExtentHeader.parse(header.serialized(), file: "d.vmdk") == header)
    }

    @Test(arguments: [
        (0, UInt8(0x00), "magicNumber"),
        (4, UInt8(0x07), "version"),
        (20, UInt8(0x03), "grainSize"),
        (44, UInt8(0x07), "numGTEsPerGT"),
        (73, UInt8(0x0D), "singleEndLineChar"),
        (77, UInt8(0x05), "compressAlgorithm"),
        (36, UInt8(0xFF), "descriptorSize"),
    ])
    func malformedHeaderNamesTheField(offset: Int, value: UInt8, field: String) {
        var header = SparseExtentHeader(capacitySectors: 2048)
        header.descriptorOffset = 1
        header.descriptorSectors = 20
        header.redundantDirectoryOffset = 21
        header.directoryOffset = 30
        var bytes = header.serialized()
        bytes[offset] = value
        if field == "descriptorSize" { bytes[37] = 0xFF }
        let error = #expect(throws: DiskError.self) { try SparseExtentHeader.parse(bytes, file: "d.vmdk") }
        #expect(error?.description.contains("header.\(field)") == true, "\(String(describing: error)) should name \(field)")
    }

    @Test func truncatedHeaderIsRefusedNotReadPastItsEnd() {
        let bytes = Array(SparseExtentHeader(capacitySectors: 2048).serialized().prefix(40))
        let error = #expect(throws: DiskError.self) { try SparseExtentHeader.parse(bytes, file: "d.vmdk") }
        #expect(error?.description.contains("header.descriptorSize") == true, "\(String(describing: error))")
    }
}
