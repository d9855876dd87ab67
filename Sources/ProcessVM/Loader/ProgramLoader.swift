import HostSystem
#if canImport(Glibc)
import Glibc
#endif

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

    /// Maps the segments of `image`, whose bytes are read from `file`, the executable's
    /// host descriptor.
    static func load(_ image: ELFImage, from file: Int32, into space: AddressSpace) throws(GuestError) -> LoadedProgram {
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
        var filler = SegmentFiller(file: file, memory: space.memory)
        for (index, segment) in image.segments.enumerated() where segment.fileSize > 0 {
            let start = segment.virtualAddress + bias
            let end = start + UInt64(segment.fileSize)
            var address = start
            while address < end {
                let page = AddressSpace.pageDown(address)
                let pieceEnd = min(end, page + AddressSpace.pageSize)
                guard let frame = space.tables.translate(page)?.frame else { preconditionFailure("segment page left unmapped") }
                // A whole page of a read-only segment, alone in its page, is the file's page
                // as it is; any other piece is copied.
                let fromFile = address == page && pieceEnd == page + AddressSpace.pageSize && !segment.permissions.contains(.write)
                    && !image.segments.indices.contains { $0 != index && image.segments[$0].overlapsPage(page - bias) }
                try filler.add(physical: frame + (address - page), fileOffset: segment.fileOffset + Int(address - start),
                               length: Int(pieceEnd - address), mapped: fromFile)
                address = pieceEnd
            }
        }
        try filler.flush()
        let imageEnd = image.segments.map { $0.virtualAddress + bias + $0.memorySize }.max()!
        return LoadedProgram(entry: image.entry + bias, programHeaderAddress: image.programHeaderAddress + bias,
                             programHeaderCount: image.programHeaderCount, programHeaderSize: image.programHeaderSize,
                             imageEnd: imageEnd)
    }
}

/// Fills guest frames from the executable in as few calls as it can: contiguous pieces that
/// are contiguous in the file too are mapped, or read, at once.
private struct SegmentFiller {
    let file: Int32
    let memory: GuestMemory
    private var pending: (physical: UInt64, fileOffset: Int, length: Int, mapped: Bool)?

    init(file: Int32, memory: GuestMemory) {
        self.file = file
        self.memory = memory
    }

    mutating func add(physical: UInt64, fileOffset: Int, length: Int, mapped: Bool) throws(GuestError) {
        if let run = pending, run.mapped == mapped, run.physical + UInt64(run.length) == physical, run.fileOffset + run.length == fileOffset {
            pending?.length += length
            return
        }
        try flush()
        pending = (physical, fileOffset, length, mapped)
    }

    mutating func flush() throws(GuestError) {
        guard let run = pending else { return }
        pending = nil
        // A file system that cannot map the file (mmap fails) still lets it be read.
        if run.mapped, (try? memory.mapFile(file, offset: run.fileOffset, physical: run.physical, length: run.length)) != nil {
            return
        }
        let target = memory.pointer(physical: run.physical, length: run.length)!
        var done = 0
        while done < run.length {
            let got: Int
            do {
                got = try retryingSyscall("pread(executable)") { pread(file, target + done, run.length - done, off_t(run.fileOffset + done)) }
            } catch {
                throw .system(error)
            }
            guard got > 0 else { throw .invalidExecutable("the file ended while its segments were read") }
            done += got
        }
    }
}
