/// A static x86-64 Linux executable, parsed and checked before anything is mapped. Every
/// field that locates bytes in the file or the address space is bounds-checked here, so the
/// loader can trust what it is handed.
struct ELFImage {
    struct Segment {
        let fileOffset: Int
        let fileSize: Int
        let virtualAddress: UInt64
        let memorySize: UInt64
        let permissions: PagePermissions
    }

    enum Kind { case executable, positionIndependent }

    let bytes: [UInt8]
    let kind: Kind
    /// Entry point, before relocation for a static-PIE.
    let entry: UInt64
    let segments: [Segment]
    /// Where the program headers sit in the loaded image (AT_PHDR), before relocation.
    let programHeaderAddress: UInt64
    let programHeaderCount: Int
    let programHeaderSize: Int

    private static let loadSegment: UInt32 = 1
    private static let interpreterSegment: UInt32 = 3
    private static let programHeaderSegment: UInt32 = 6

    init(bytes file: [UInt8]) throws(GuestError) {
        let bytes = file
        func fail(_ why: String) -> GuestError { .invalidExecutable(why) }
        func read<T: FixedWidthInteger>(_ offset: Int, _: T.Type) throws(GuestError) -> T {
            guard offset >= 0, offset + MemoryLayout<T>.size <= bytes.count else { throw fail("truncated at byte \(offset)") }
            return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        }
        guard bytes.count >= 64 else { throw fail("file of \(bytes.count) bytes is smaller than an ELF header") }
        guard bytes[0] == 0x7F, bytes[1] == 0x45, bytes[2] == 0x4C, bytes[3] == 0x46 else { throw fail("no ELF magic (e_ident)") }
        guard bytes[4] == 2 else { throw fail("e_ident[EI_CLASS] is \(bytes[4]), not ELFCLASS64") }
        guard bytes[5] == 1 else { throw fail("e_ident[EI_DATA] is \(bytes[5]), not little-endian") }
        let type = try read(16, UInt16.self)
        let machine = try read(18, UInt16.self)
        guard machine == 62 else { throw fail("e_machine is \(machine), not x86-64 (62)") }
        switch type {
        case 2: kind = .executable
        case 3: kind = .positionIndependent
        default: throw fail("e_type is \(type), neither ET_EXEC nor ET_DYN")
        }
        entry = try read(24, UInt64.self)
        let headerOffset = try read(32, UInt64.self)
        programHeaderSize = Int(try read(54, UInt16.self))
        programHeaderCount = Int(try read(56, UInt16.self))
        guard programHeaderSize >= 56 else { throw fail("e_phentsize \(programHeaderSize) is smaller than an Elf64_Phdr") }
        guard programHeaderCount > 0, programHeaderCount < 256 else { throw fail("e_phnum \(programHeaderCount) is out of range") }
        guard headerOffset <= UInt64(bytes.count), UInt64(programHeaderCount * programHeaderSize) <= UInt64(bytes.count) - headerOffset else {
            throw fail("program headers (e_phoff \(headerOffset)) run past the end of the file")
        }

        var segments: [Segment] = []
        var phdrAddress: UInt64?
        for index in 0..<programHeaderCount {
            let base = Int(headerOffset) + index * programHeaderSize
            let segmentType = try read(base, UInt32.self)
            let flags = try read(base + 4, UInt32.self)
            let offset = try read(base + 8, UInt64.self)
            let virtualAddress = try read(base + 16, UInt64.self)
            let fileSize = try read(base + 32, UInt64.self)
            let memorySize = try read(base + 40, UInt64.self)
            if segmentType == Self.interpreterSegment {
                throw fail("PT_INTERP present: the program is dynamically linked; only static executables run in a process VM")
            }
            if segmentType == Self.programHeaderSegment { phdrAddress = virtualAddress }
            guard segmentType == Self.loadSegment else { continue }
            guard offset <= UInt64(bytes.count), fileSize <= UInt64(bytes.count) - offset else {
                throw fail("PT_LOAD \(index): p_offset \(offset) + p_filesz \(fileSize) run past the end of the file")
            }
            guard fileSize <= memorySize else { throw fail("PT_LOAD \(index): p_filesz \(fileSize) exceeds p_memsz \(memorySize)") }
            guard virtualAddress % 4096 == offset % 4096 else { throw fail("PT_LOAD \(index): p_vaddr and p_offset disagree modulo the page size") }
            let (end, overflow) = virtualAddress.addingReportingOverflow(memorySize)
            guard !overflow, end < 0x7000_0000_0000 else { throw fail("PT_LOAD \(index): p_vaddr \(virtualAddress) + p_memsz \(memorySize) leaves the user address range") }
            var permissions: PagePermissions = [.user]
            if flags & 4 != 0 { permissions.insert(.read) }
            if flags & 2 != 0 { permissions.insert([.read, .write]) }
            if flags & 1 != 0 { permissions.insert([.read, .execute]) }
            segments.append(Segment(fileOffset: Int(offset), fileSize: Int(fileSize), virtualAddress: virtualAddress,
                                    memorySize: memorySize, permissions: permissions))
        }
        guard !segments.isEmpty else { throw fail("no PT_LOAD segment") }
        let sorted = segments.sorted { $0.virtualAddress < $1.virtualAddress }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.virtualAddress + a.memorySize > b.virtualAddress {
            throw fail("PT_LOAD segments at \(a.virtualAddress) and \(b.virtualAddress) overlap")
        }
        let entryPoint = entry
        guard segments.contains(where: { entryPoint >= $0.virtualAddress && entryPoint < $0.virtualAddress + $0.memorySize && $0.permissions.contains(.execute) }) else {
            throw fail("e_entry \(entryPoint) is not inside an executable segment")
        }
        self.bytes = file
        self.segments = sorted
        // Without PT_PHDR the headers are found where the first segment maps file offset e_phoff.
        if let phdrAddress {
            programHeaderAddress = phdrAddress
        } else if let first = sorted.first(where: { $0.fileOffset <= Int(headerOffset) && Int(headerOffset) < $0.fileOffset + $0.fileSize }) {
            programHeaderAddress = first.virtualAddress + headerOffset - UInt64(first.fileOffset)
        } else {
            programHeaderAddress = 0
        }
    }
}
