import ProcessVM

/// Builds minimal static x86-64 executables from machine code, for tests that need a program
/// to fault, exit with a code, or issue arbitrary system calls: things busybox never does.
public enum TinyELF {
    public static let codeAddress = MinimalExecutable.codeAddress
    /// A writable, zeroed data segment every tiny program gets.
    public static let dataAddress = MinimalExecutable.dataAddress
    public static let dataSize = MinimalExecutable.dataSize

    public static func build(code: [UInt8]) -> [UInt8] { MinimalExecutable.build(code: code) }

    /// `mov r64, imm64` for rax, rdi, rsi, rdx, r10, r8, r9 (the system-call registers).
    public static func load(_ register: SyscallRegister, _ value: UInt64) -> [UInt8] {
        // unsafe: the UInt64's eight bytes are copied into an array before the closure returns.
        register.movPrefix + withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    public enum SyscallRegister: CaseIterable, Sendable {
        case rax, rdi, rsi, rdx, r10, r8, r9
        var movPrefix: [UInt8] {
            switch self {
            case .rax: return [0x48, 0xB8]
            case .rdi: return [0x48, 0xBF]
            case .rsi: return [0x48, 0xBE]
            case .rdx: return [0x48, 0xBA]
            case .r10: return [0x49, 0xBA]
            case .r8: return [0x49, 0xB8]
            case .r9: return [0x49, 0xB9]
            }
        }
    }

    public static let syscallInstruction: [UInt8] = [0x0F, 0x05]

    /// Code that writes the 16 AT_RANDOM bytes from its auxiliary vector to stdout, then exits 0.
    public static let printAuxiliaryRandom: [UInt8] = [
        0x48, 0x89, 0xE3,             // mov rbx, rsp
        0x48, 0x8B, 0x0B,             // mov rcx, [rbx]          (argc)
        0x48, 0x8D, 0x5C, 0xCB, 0x10, // lea rbx, [rbx+rcx*8+16] (envp)
        0x48, 0x8B, 0x03,             // env: mov rax, [rbx]
        0x48, 0x83, 0xC3, 0x08,       // add rbx, 8
        0x48, 0x85, 0xC0,             // test rax, rax
        0x75, 0xF4,                   // jnz env
        0x48, 0x8B, 0x03,             // aux: mov rax, [rbx]
        0x48, 0x83, 0xF8, 0x19,       // cmp rax, AT_RANDOM
        0x74, 0x06,                   // je found
        0x48, 0x83, 0xC3, 0x10,       // add rbx, 16
        0xEB, 0xF1,                   // jmp aux
        0x48, 0x8B, 0x73, 0x08,       // found: mov rsi, [rbx+8]
        0xBF, 0x01, 0, 0, 0,          // mov edi, 1
        0xBA, 0x10, 0, 0, 0,          // mov edx, 16
        0xB8, 0x01, 0, 0, 0,          // mov eax, 1 (write)
        0x0F, 0x05,                   // syscall
    ] + exit(0)

    /// Code that makes `count` getpid calls, then exits 0.
    public static func getpidLoop(count: UInt64) -> [UInt8] { MinimalExecutable.getpidLoop(count: count) }

    /// Code that makes `count` getpid calls (at most `dataSize / 4`), timing each with rdtsc
    /// around the SYSCALL instruction, writes the `count` 32-bit cycle counts to stdout and
    /// exits 0: the round trip as the program itself sees it.
    public static func timedGetpidLoop(count: UInt64) -> [UInt8] {
        precondition(count > 0 && count <= dataSize / 4, "the samples live in the data segment")
        let readCounter: [UInt8] = [0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0] // rdtsc; shl rdx, 32; or rax, rdx
        let body = readCounter + [0x49, 0x89, 0xC6] // mov r14, rax
            + [0xB8, 39, 0, 0, 0] + syscallInstruction // mov eax, SYS_getpid; syscall
            + readCounter + [0x4C, 0x29, 0xF0] // sub rax, r14
            + [0x41, 0x89, 0x45, 0x00, 0x49, 0x83, 0xC5, 0x04] // mov [r13], eax; add r13, 4
            + [0x49, 0xFF, 0xCC] // dec r12
        let loop = body + [0x75, UInt8(truncatingIfNeeded: -(body.count + 2))] // jnz loop
        return [0x49, 0xBC] + count.littleEndianBytes // mov r12, count
            + [0x49, 0xBD] + dataAddress.littleEndianBytes // mov r13, samples
            + loop
            + load(.rax, 1) + load(.rdi, 1) + load(.rsi, dataAddress) + load(.rdx, count * 4) + syscallInstruction
            + exit(0)
    }

    /// The fixed address `mapOrProbe` maps.
    public static let probeAddress: UInt64 = 0x7000_0000

    /// With an argument: maps a page at `probeAddress`, writes 42 there and at the start of
    /// the data segment, exits 0. Without one: exits with the data segment's first word if
    /// it is not zero, else reads `probeAddress` (a SIGSEGV unless something mapped it) and
    /// exits with what it read. Shows whether one run's memory or mappings leak into another's.
    public static let mapOrProbe: [UInt8] = {
        let data = UInt32(dataAddress).littleEndianBytes
        let probe = UInt32(probeAddress).littleEndianBytes
        let writer = load(.rax, 9) + load(.rdi, probeAddress) + load(.rsi, 4096) + load(.rdx, 3) + load(.r10, 0x32)
            + load(.r8, UInt64.max) + load(.r9, 0) + syscallInstruction
            + [0xC7, 0x04, 0x25] + probe + [42, 0, 0, 0] // mov dword [probe], 42
            + [0xC7, 0x04, 0x25] + data + [42, 0, 0, 0] // mov dword [data], 42
            + exit(0)
        let exitWithRDI = load(.rax, 231) + syscallInstruction
        let reader = [0x8B, 0x3C, 0x25] + data // mov edi, [data]
            + [0x85, 0xFF, 0x74, UInt8(exitWithRDI.count)] // test edi, edi; jz probe
            + exitWithRDI
            + [0x8B, 0x3C, 0x25] + probe // mov edi, [probe]
            + exitWithRDI
        return [0x48, 0x8B, 0x04, 0x24, 0x48, 0x83, 0xF8, 0x01] // mov rax, [rsp] (argc); cmp rax, 1
            + [0x0F, 0x84] + UInt32(writer.count).littleEndianBytes // je reader
            + writer + reader
    }()

    /// Code for `exit_group(status)`.
    public static func exit(_ status: UInt64) -> [UInt8] { MinimalExecutable.exit(status) }
}

extension FixedWidthInteger {
    // unsafe: reads only the integer's own size in bytes, copied into an array before the closure returns.
    fileprivate var littleEndianBytes: [UInt8] { withUnsafeBytes(of: littleEndian) { Array($0) } }
}

extension ProcessVMConfiguration {
    /// The same, its program's system calls left as they are, each through SYSCALL: what the
    /// getpid loops time (rewritten, getpid is answered in the program: `SyscallRewriter`).
    public func throughSyscall() -> ProcessVMConfiguration {
        var configuration = self
        configuration.rewritesSystemCalls = false
        return configuration
    }
}
