/// Minimal static x86-64 executables built from machine code: a text segment with the code
/// and a zeroed data segment. The engine's own probes run them (`MachineCosts`); the tests
/// build theirs on the same layout (TestSupport's `TinyELF`).
public enum MinimalExecutable {
    public static let codeAddress: UInt64 = 0x40_0000
    /// A writable, zeroed data segment every such program gets.
    public static let dataAddress: UInt64 = 0x60_0000
    public static let dataSize: UInt64 = 0x4000

    private static let elfHeaderSize = 64
    private static let programHeaderSize = 56
    private static let loadSegment: UInt32 = 1
    private static let readExecute: UInt32 = 5
    private static let readWrite: UInt32 = 6

    /// The executable's bytes: ELF header, two PT_LOAD headers, then `code`, entered at its start.
    public static func build(code: [UInt8]) -> [UInt8] {
        let programHeaders = 2
        let codeOffset = elfHeaderSize + programHeaderSize * programHeaders
        var bytes: [UInt8] = []
        // unsafe: the integer's bytes are appended to `bytes` (copied) before the closure returns.
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        bytes += [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8) // ELF64, little-endian, version 1
        put(UInt16(2)); put(UInt16(62)); put(UInt32(1)) // ET_EXEC, x86-64, EV_CURRENT
        put(codeAddress + UInt64(codeOffset)) // e_entry
        put(UInt64(elfHeaderSize)); put(UInt64(0)) // e_phoff, e_shoff
        put(UInt32(0)); put(UInt16(elfHeaderSize)); put(UInt16(programHeaderSize)); put(UInt16(programHeaders))
        put(UInt16(64)); put(UInt16(0)); put(UInt16(0))
        // Text: the whole file, read + execute.
        put(loadSegment); put(readExecute); put(UInt64(0)); put(codeAddress); put(codeAddress)
        put(UInt64(codeOffset + code.count)); put(UInt64(codeOffset + code.count)); put(UInt64(0x1000))
        // Data: zeroed, read + write.
        put(loadSegment); put(readWrite); put(UInt64(0)); put(dataAddress); put(dataAddress)
        put(UInt64(0)); put(dataSize); put(UInt64(0x1000))
        return bytes + code
    }

    /// `mov rax, imm64; mov rdi, imm64; syscall`: exit_group(status).
    public static func exit(_ status: UInt64) -> [UInt8] {
        [0x48, 0xB8] + UInt64(231).littleEndianBytes + [0x48, 0xBF] + status.littleEndianBytes + [0x0F, 0x05]
    }

    /// `count` getpid calls (SYSCALL each), then exit_group(0).
    public static func getpidLoop(count: UInt64) -> [UInt8] {
        guard count > 0 else { return exit(0) }
        return [0x49, 0xBC] + count.littleEndianBytes // mov r12, count
            + [0xB8, 39, 0, 0, 0, 0x0F, 0x05] // loop: mov eax, SYS_getpid; syscall
            + [0x49, 0xFF, 0xCC, 0x75, 0xF4] // dec r12; jnz loop
            + exit(0)
    }

    /// `count` CPUID instructions (leaf 0), then exit_group(0).
    public static func cpuidLoop(count: UInt64) -> [UInt8] {
        guard count > 0 else { return exit(0) }
        return [0x49, 0xBC] + count.littleEndianBytes // mov r12, count
            + [0x31, 0xC0, 0x31, 0xC9, 0x0F, 0xA2] // loop: xor eax, eax; xor ecx, ecx; cpuid
            + [0x49, 0xFF, 0xCC, 0x75, 0xF5] // dec r12; jnz loop
            + exit(0)
    }
}
