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
    /// How many of its system calls were rewritten to skip PVM's SYSCALL switch (`SyscallRewriter`).
    let rewrittenSystemCalls: Int
}

/// Maps an executable's segments into a fresh address space.
enum ProgramLoader {
    /// Static-PIE programs are placed where Linux would put a PIE without randomisation.
    static let positionIndependentBase: UInt64 = 0x5555_5555_4000

    /// Where a dynamically linked program's interpreter (ld.so) is placed: below the mmap
    /// area's top, as Linux puts it near the top of the address space; mmaps go below it.
    static let interpreterBase: UInt64 = 0x7FFF_E000_0000

    /// Maps the segments of `image`, whose bytes are read from `file`, the executable's
    /// host descriptor; a position-independent image at `base` (the PIE default if nil). With
    /// `rewritingSystemCalls`, its `mov eax, N; syscall` pairs are rewritten (`SyscallRewriter`).
    static func load(_ image: ELFImage, from file: Int32, into space: AddressSpace, base: UInt64? = nil,
                     rewritingSystemCalls: Bool) throws(GuestError) -> LoadedProgram {
        let bias = image.kind == .positionIndependent ? (base ?? positionIndependentBase) : 0
        let runs = try pageRuns(of: image.segments, bias: bias)
        for run in runs {
            try space.mapAnonymous(at: run.pages.lowerBound, length: UInt64(run.pages.count), run.permissions)
        }
        let sharedPages = runs.filter(\.shared).map(\.pages)
        var filler = SegmentFiller(file: file, memory: space.memory)
        for segment in image.segments where segment.fileSize > 0 {
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
                    && !sharedPages.contains { $0.contains(page) }
                try filler.add(physical: frame + (address - page), fileOffset: segment.fileOffset + Int(address - start),
                               length: Int(pieceEnd - address), mapped: fromFile)
                address = pieceEnd
            }
        }
        try filler.flush()
        let rewritten = rewritingSystemCalls ? try SyscallRewriter.rewrite(image, bias: bias, in: space) : 0
        let imageEnd = image.segments.map { $0.virtualAddress + bias + $0.memorySize }.max()!
        return LoadedProgram(entry: image.entry + bias, programHeaderAddress: image.programHeaderAddress + bias,
                             programHeaderCount: image.programHeaderCount, programHeaderSize: image.programHeaderSize,
                             imageEnd: imageEnd, rewrittenSystemCalls: rewritten)
    }

    /// A run of the image's pages with the same permissions.
    struct PageRun: Equatable {
        var pages: Range<UInt64>
        let permissions: PagePermissions
        /// Whether the pages belong to more than one segment.
        let shared: Bool
    }

    /// The image's pages as runs, in address order. Two segments may share a page; the page
    /// gets the union of their permissions. Found from the segments' bounds rather than page
    /// by page: a table of pages cost ~60 µs of each cold start of busybox.
    static func pageRuns(of segments: [ELFImage.Segment], bias: UInt64) throws(GuestError) -> [PageRun] {
        var spans: [(pages: Range<UInt64>, permissions: PagePermissions)] = []
        for segment in segments {
            let (address, overflow) = segment.virtualAddress.addingReportingOverflow(bias)
            guard !overflow, let end = AddressSpace.pageUp(address + segment.memorySize), end <= AddressSpace.userTop else {
                throw .invalidExecutable("PT_LOAD at p_vaddr 0x\(String(segment.virtualAddress, radix: 16)) leaves the user address range")
            }
            let start = AddressSpace.pageDown(address)
            // The engine's system pages (GDT, IDT, TSS, stubs, mailbox) live below the user
            // range; a segment there would hand the program its own descriptor tables.
            guard start >= AddressSpace.userBottom else {
                throw .invalidExecutable("PT_LOAD at p_vaddr 0x\(String(address, radix: 16)) lies below 0x\(String(AddressSpace.userBottom, radix: 16)), "
                    + "where the engine keeps the VM's system pages")
            }
            if start < end { spans.append((start..<end, segment.permissions)) }
        }
        let cuts = Set(spans.flatMap { [$0.pages.lowerBound, $0.pages.upperBound] }).sorted()
        var runs: [PageRun] = []
        for (low, high) in zip(cuts, cuts.dropFirst()) {
            let covering = spans.filter { $0.pages.lowerBound <= low && $0.pages.upperBound >= high }
            guard !covering.isEmpty else { continue }
            let permissions = covering.reduce(into: PagePermissions()) { $0.formUnion($1.permissions) }
            let shared = covering.count > 1
            if let last = runs.last, last.pages.upperBound == low, last.permissions == permissions, last.shared == shared {
                runs[runs.count - 1].pages = last.pages.lowerBound..<high
            } else {
                runs.append(PageRun(pages: low..<high, permissions: permissions, shared: shared))
            }
        }
        return runs
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
