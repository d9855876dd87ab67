/// The streamOptimized subformat's markers: a file that ends with a footer marker, a copy of
/// the header holding the real grain-directory offset, and an end-of-stream marker; and
/// grains stored as a marker (LBA, compressed size) followed by deflated data.
enum StreamOptimizedFooter {
    static let markerEndOfStream: UInt32 = 0
    static let markerGrainTable: UInt32 = 1
    static let markerGrainDirectory: UInt32 = 2
    static let markerFooter: UInt32 = 3

    /// Reads and checks the footer of a file whose header says the directory is at the end.
    static func read(_ file: HostFile, header: SparseExtentHeader, fileBytes: UInt64) async throws(DiskError) -> SparseExtentHeader {
        guard header.flags.contains(.compressedGrains), header.flags.contains(.markers) else {
            throw .malformed(file: file.path, field: "header.gdOffset", problem: "says the grain directory is in a footer, but the flags (0x\(String(header.flags.rawValue, radix: 16))) do not mark a streamOptimized disk")
        }
        guard fileBytes >= 2048, fileBytes % 512 == 0 else {
            throw .malformed(file: file.path, field: "footer", problem: "a streamOptimized file of \(fileBytes) bytes cannot end with marker, footer and end-of-stream sectors")
        }
        let tail = try await file.readExactly(count: 1536, at: fileBytes - 1536, structure: "footer")
        let marker = LittleEndianReader(bytes: Array(tail[0..<512]), file: file.path, structure: "footer marker")
        let markerSize = try marker.integer(UInt32.self, at: 8, field: "size")
        let markerType = try marker.integer(UInt32.self, at: 12, field: "type")
        guard markerSize == 0, markerType == markerFooter else {
            throw .malformed(file: file.path, field: "footer marker.type", problem: "found size \(markerSize) type \(markerType), not a footer marker (size 0, type 3)")
        }
        let endMarker = LittleEndianReader(bytes: Array(tail[1024..<1536]), file: file.path, structure: "end-of-stream marker")
        guard try endMarker.integer(UInt64.self, at: 0, field: "val") == 0, try endMarker.integer(UInt32.self, at: 12, field: "type") == markerEndOfStream else {
            throw .malformed(file: file.path, field: "end-of-stream marker", problem: "the last sector is not an end-of-stream marker")
        }
        let footer = try SparseExtentHeader.parse(Array(tail[512..<1024]), file: file.path)
        guard footer.directoryOffset != SparseExtentHeader.directoryAtEnd else {
            throw .malformed(file: file.path, field: "footer.gdOffset", problem: "the footer does not say where the grain directory is")
        }
        guard footer.capacitySectors == header.capacitySectors, footer.grainSectors == header.grainSectors else {
            throw .malformed(file: file.path, field: "footer.capacity", problem: "the footer's capacity or grain size differs from the header's")
        }
        return footer
    }

    /// Reads the grain marker at `sector`, checks it belongs to `grain`, and inflates the data.
    static func readGrain(_ file: HostFile, header: SparseExtentHeader, grain: Int, sector: UInt64) async throws(DiskError) -> [UInt8] {
        let field = "grain marker at sector \(sector)"
        let markerBytes = try await file.readExactly(count: 12, at: sector * 512, structure: field)
        let marker = LittleEndianReader(bytes: markerBytes, file: file.path, structure: field)
        let lba = try marker.integer(UInt64.self, at: 0, field: "lba")
        let size = try marker.integer(UInt32.self, at: 8, field: "size")
        let expectedLBA = UInt64(grain) * header.grainSectors
        guard lba == expectedLBA else {
            throw .malformed(file: file.path, field: "\(field).lba", problem: "is \(lba) but grain \(grain) starts at sector \(expectedLBA)")
        }
        let grainBytes = Int(header.grainBytes)
        // Deflate never grows data by more than a few bytes per 16 KiB block.
        let largest = grainBytes + grainBytes / 8 + 1024
        guard size > 0, Int(size) <= largest else {
            throw .malformed(file: file.path, field: "\(field).size", problem: "\(size) bytes is not between 1 and \(largest) for a \(grainBytes)-byte grain")
        }
        let compressed = try await file.readExactly(count: Int(size), at: sector * 512 + 12, structure: "\(field) data")
        return try inflateGrain(compressed, grainBytes: grainBytes, file: file.path, field: "\(field) data")
    }
}
