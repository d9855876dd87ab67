/// Where a loaded program starts, and what its initial stack must describe.
struct LoadedProgram {
    let entry: UInt64
    let programHeaderAddress: UInt64
    let programHeaderCount: Int
    let programHeaderSize: Int
    /// First byte after the highest segment: where brk starts.
    let imageEnd: UInt64
}

/// Maps an executable's segments into a fresh address space.
enum ProgramLoader {
    /// Static-PIE programs are placed where Linux would put a PIE without randomisation.
    static let positionIndependentBase: UInt64 = 0x5555_5555_4000

    static func load(_ image: ELFImage, into space: AddressSpace) throws(GuestError) -> LoadedProgram {
        let bias = image.kind == .positionIndependent ? positionIndependentBase : 0
        // Two segments may share a page; the page gets the union of their permissions.
        var pagePermissions: [UInt64: PagePermissions] = [:]
        for segment in image.segments {
            let start = AddressSpace.pageDown(segment.virtualAddress + bias)
            guard let end = AddressSpace.pageUp(segment.virtualAddress + bias + segment.memorySize) else {
                throw .invalidExecutable("segment at \(segment.virtualAddress) overflows")
            }
            var page = start
            while page < end {
                pagePermissions[page, default: []].formUnion(segment.permissions)
                page += AddressSpace.pageSize
            }
        }
        // Map runs of pages with the same permissions at once.
        let pages = pagePermissions.keys.sorted()
        var runStart = 0
        for index in pages.indices {
            let isRunEnd = index == pages.count - 1 || pages[index + 1] != pages[index] + AddressSpace.pageSize
                || pagePermissions[pages[index + 1]] != pagePermissions[pages[index]]
            guard isRunEnd else { continue }
            let start = pages[runStart]
            try space.mapAnonymous(at: start, length: pages[index] + AddressSpace.pageSize - start, pagePermissions[start]!)
            runStart = index + 1
        }
        image.bytes.withUnsafeBytes { file in
            for segment in image.segments where segment.fileSize > 0 {
                space.loaderWrite(segment.virtualAddress + bias, UnsafeRawBufferPointer(rebasing: file[segment.fileOffset..<(segment.fileOffset + segment.fileSize)]))
            }
        }
        let imageEnd = image.segments.map { $0.virtualAddress + bias + $0.memorySize }.max()!
        return LoadedProgram(entry: image.entry + bias, programHeaderAddress: image.programHeaderAddress + bias,
                             programHeaderCount: image.programHeaderCount, programHeaderSize: image.programHeaderSize,
                             imageEnd: imageEnd)
    }
}
