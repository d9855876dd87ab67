import HostSystem
#if canImport(Glibc)
import Glibc
#endif

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

    let kind: Kind
    /// Entry point, before relocation for a static-PIE.
    let entry: UInt64
    let segments: [Segment]
    /// Where the program headers sit in the loaded image (AT_PHDR), before relocation.
    let programHeaderAddress: UInt64
    let programHeaderCount: Int
    let programHeaderSize: Int
    /// PT_INTERP: the path of the dynamic linker a dynamically linked program names.
    let interpreter: String?
    /// The longest PT_INTERP path taken (Linux takes up to PATH_MAX).
    static let interpreterPathLimit = 4096

    private static let loadSegment: UInt32 = 1
    private static let interpreterSegment: UInt32 = 3
    private static let programHeaderSegment: UInt32 = 6

    /// Reads and checks the headers of the executable open at `file` (a host descriptor);
    /// the segments' bytes stay in the file for the loader to map or copy.
    init(file: Int32) throws(GuestError) {
        func fail(_ why: String) -> GuestError { .invalidExecutable(why) }
        let fileSize: Int
        do { fileSize = Int(try HostFileCalls.status(file).st_size) } catch { throw .system(error) }
        let header = try Self.read(file, at: 0, count: min(fileSize, 64))
        func read<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, _: T.Type) -> T {
            // unsafe: each read lies inside `bytes` (the header is checked to be 64 bytes, each table entry >= 56); loadUnaligned needs no alignment.
            bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        }
        guard header.count >= 64 else { throw fail("file of \(fileSize) bytes is smaller than an ELF header") }
        guard header[0] == 0x7F, header[1] == 0x45, header[2] == 0x4C, header[3] == 0x46 else { throw fail("no ELF magic (e_ident)") }
        guard header[4] == 2 else { throw fail("e_ident[EI_CLASS] is \(header[4]), not ELFCLASS64") }
        guard header[5] == 1 else { throw fail("e_ident[EI_DATA] is \(header[5]), not little-endian") }
        let type = read(header, 16, UInt16.self)
        let machine = read(header, 18, UInt16.self)
        guard machine == 62 else { throw fail("e_machine is \(machine), not x86-64 (62)") }
        switch type {
        case 2: kind = .executable
        case 3: kind = .positionIndependent
        default: throw fail("e_type is \(type), neither ET_EXEC nor ET_DYN")
        }
        entry = read(header, 24, UInt64.self)
        let headerOffset = read(header, 32, UInt64.self)
        programHeaderSize = Int(read(header, 54, UInt16.self))
        programHeaderCount = Int(read(header, 56, UInt16.self))
        guard programHeaderSize >= 56 else { throw fail("e_phentsize \(programHeaderSize) is smaller than an Elf64_Phdr") }
        guard programHeaderCount > 0, programHeaderCount < 256 else { throw fail("e_phnum \(programHeaderCount) is out of range") }
        guard headerOffset <= UInt64(fileSize), UInt64(programHeaderCount * programHeaderSize) <= UInt64(fileSize) - headerOffset else {
            throw fail("program headers (e_phoff \(headerOffset)) run past the end of the file")
        }
        let table = try Self.read(file, at: Int(headerOffset), count: programHeaderCount * programHeaderSize)
        guard table.count == programHeaderCount * programHeaderSize else { throw fail("program headers (e_phoff \(headerOffset)) are cut short") }

        var segments: [Segment] = []
        var phdrAddress: UInt64?
        var interpreter: String?
        for index in 0..<programHeaderCount {
            let base = index * programHeaderSize
            let segmentType = read(table, base, UInt32.self)
            let flags = read(table, base + 4, UInt32.self)
            let offset = read(table, base + 8, UInt64.self)
            let virtualAddress = read(table, base + 16, UInt64.self)
            let segmentFileSize = read(table, base + 32, UInt64.self)
            let memorySize = read(table, base + 40, UInt64.self)
            if segmentType == Self.interpreterSegment {
                guard interpreter == nil else { throw fail("more than one PT_INTERP") }
                guard segmentFileSize >= 2, segmentFileSize <= UInt64(Self.interpreterPathLimit), offset <= UInt64(fileSize),
                      segmentFileSize <= UInt64(fileSize) - offset else {
                    throw fail("PT_INTERP \(index): p_offset \(offset) and p_filesz \(segmentFileSize) do not hold a path within the file")
                }
                let bytes = try Self.read(file, at: Int(offset), count: Int(segmentFileSize))
                guard bytes.last == 0, let nul = bytes.firstIndex(of: 0), nul == bytes.count - 1, bytes.first == UInt8(ascii: "/") else {
                    throw fail("PT_INTERP \(index) is not one absolute, NUL-terminated path")
                }
                interpreter = String(decoding: bytes.dropLast(), as: UTF8.self)
                continue
            }
            if segmentType == Self.programHeaderSegment { phdrAddress = virtualAddress }
            guard segmentType == Self.loadSegment else { continue }
            guard offset <= UInt64(fileSize), segmentFileSize <= UInt64(fileSize) - offset else {
                throw fail("PT_LOAD \(index): p_offset \(offset) + p_filesz \(segmentFileSize) run past the end of the file")
            }
            guard segmentFileSize <= memorySize else { throw fail("PT_LOAD \(index): p_filesz \(segmentFileSize) exceeds p_memsz \(memorySize)") }
            guard virtualAddress % 4096 == offset % 4096 else { throw fail("PT_LOAD \(index): p_vaddr and p_offset disagree modulo the page size") }
            let (end, overflow) = virtualAddress.addingReportingOverflow(memorySize)
            guard !overflow, end < 0x7000_0000_0000 else { throw fail("PT_LOAD \(index): p_vaddr \(virtualAddress) + p_memsz \(memorySize) leaves the user address range") }
            var permissions: PagePermissions = [.user]
            if flags & 4 != 0 { permissions.insert(.read) }
            if flags & 2 != 0 { permissions.insert([.read, .write]) }
            if flags & 1 != 0 { permissions.insert([.read, .execute]) }
            segments.append(Segment(fileOffset: Int(offset), fileSize: Int(segmentFileSize), virtualAddress: virtualAddress,
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
        self.segments = sorted
        self.interpreter = interpreter
        // Without PT_PHDR the headers are found where the first segment maps file offset e_phoff.
        if let phdrAddress {
            programHeaderAddress = phdrAddress
        } else if let first = sorted.first(where: { $0.fileOffset <= Int(headerOffset) && Int(headerOffset) < $0.fileOffset + $0.fileSize }) {
            programHeaderAddress = first.virtualAddress + headerOffset - UInt64(first.fileOffset)
        } else {
            programHeaderAddress = 0
        }
    }

    /// Up to `count` bytes of `file` from `offset` (fewer at the end of the file).
    private static func read(_ file: Int32, at offset: Int, count: Int) throws(GuestError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            // unsafe: pread writes at most count - done bytes from done on, inside the count-byte array, while the closure runs.
            let result = bytes.withUnsafeMutableBytes { buffer in
                Result { () throws(SystemError) in
                    try retryingSyscall("pread(executable)") { pread(file, buffer.baseAddress! + done, count - done, off_t(offset + done)) }
                }
            }
            let got: Int
            do { got = try result.get() } catch { throw .system(error) }
            if got == 0 { break }
            done += got
        }
        return Array(bytes[..<done])
    }
}
