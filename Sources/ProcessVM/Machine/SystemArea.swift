/// The few pages below the program that make a long-mode CPU work without a kernel: GDT, IDT,
/// TSS (with its I/O bitmap — PVM checks port access only there), an exception stack, and the
/// stub page that system calls and exceptions enter. They sit under 64 KiB, where Linux
/// never maps user memory, so a null-pointer access still faults. Only the stub page is
/// user-accessible: under PVM the SYSCALL target runs with user privilege.
struct SystemArea {
    static let gdt: UInt64 = 0x1000
    static let idt: UInt64 = 0x2000
    static let tss: UInt64 = 0x3000
    static let tssPages: UInt64 = 3
    static let exceptionStackBottom: UInt64 = 0x6000
    static let exceptionStackTop: UInt64 = 0x8000
    static let stubPage: UInt64 = 0x8000

    /// Port the system-call stub writes to; the value is the low byte of RAX (unused).
    static let syscallPort: UInt16 = 0xF0
    /// Port the exception stubs write to; the value is the vector.
    static let exceptionPort: UInt16 = 0xF1
    /// Port the system-call stub writes to on its way back to the program when the engine
    /// asked it to (`SyscallStub.Offset.signalCheck`): a signal waits to be delivered.
    static let signalCheckPort: UInt16 = 0xF2
    /// Offset of vector v's stub in the stub page: 8 bytes each after the system-call stub.
    static func exceptionStub(_ vector: Int) -> UInt64 { stubPage + 0x200 + UInt64(vector * 8) }

    /// The page where the system-call stub posts calls for the poller (user read-write: the
    /// stub runs with user privilege under PVM). It belongs to the guest; the engine treats
    /// everything in it as untrusted, like any system-call argument.
    static let mailbox: UInt64 = 0xB000
    /// Address of the stub's exiting `out`: where a parent stopped at a system call resumes.
    static var syscallExit: UInt64 { stubPage + UInt64(SyscallStub.exitOffset) }
    /// Address of the stub's return to the program (signal check, `iretq` with RCX and R11).
    static var syscallReturn: UInt64 { stubPage + UInt64(SyscallStub.returnOffset) }
    /// The buffered-write routine (`OutputBuffer`), and the offset in it of its copy from the
    /// program's buffer, the one instruction of it that may fault.
    static let (bufferedWriteCode, bufferedWriteCopyOffset) = OutputBuffer.assemble(
        returnTarget: syscallReturn, slowTarget: stubPage + UInt64(SyscallStub.afterWriteOffset))
    static var bufferedWriteRoutine: Range<UInt64> { OutputBuffer.routine..<(OutputBuffer.routine + UInt64(bufferedWriteCode.count)) }
    /// prctl(PR_GET_NAME)'s routine (`ProgramNameRoutine`) and the offsets of its two stores
    /// into the program's buffer, the instructions of it that may fault.
    static let (programNameCode, programNameStoreOffsets) = ProgramNameRoutine.assemble(
        returnTarget: syscallReturn, slowTarget: stubPage + UInt64(SyscallStub.afterPrctlOffset))
    static var programNameRoutine: Range<UInt64> { ProgramNameRoutine.address..<(ProgramNameRoutine.address + UInt64(programNameCode.count)) }
    /// The stub's code that must not be interrupted by a signal handler: from its entry to
    /// the end of its signal check (see `SyscallStub.signalCheckEnd`).
    static var syscallStubBeforeSignalCheck: Range<UInt64> { stubPage..<(stubPage + UInt64(SyscallStub.signalCheckEnd)) }

    /// Where a fork point lists the pages its children will touch (virtual addresses, ending
    /// with 0): two user-readable pages the program never writes.
    static let warmUpList: UInt64 = 0x9000
    static let warmUpListPages: UInt64 = 2
    /// Reads one byte of every page in the list at RSI (zero-terminated page addresses), and
    /// writes it back where the entry's bit 0 is set; then does the same with the list at RDI
    /// unless RDI is 0; then exits like a system call. A prepared VM runs it so that KVM builds
    /// its shadow translations of the parent's pages ahead of the fork instead of on the
    /// child's first touches; writing back makes a translation writable, for pages the VM
    /// already owns a copy of.
    static let warmUpRoutine: UInt64 = stubPage + 0x600
    static let warmUpCode: [UInt8] = [
        0x48, 0x8B, 0x06,             // next: mov rax, [rsi]
        0x48, 0x85, 0xC0,             // test rax, rax
        0x74, 0x11,                   // jz done
        0x48, 0x0F, 0xBA, 0xF0, 0x00, // btr rax, 0 (CF: write back)
        0x8A, 0x10,                   // mov dl, [rax]
        0x73, 0x02,                   // jnc skip
        0x88, 0x10,                   // mov [rax], dl
        0x48, 0x83, 0xC6, 0x08,       // skip: add rsi, 8
        0xEB, 0xE7,                   // jmp next
        0x48, 0x85, 0xFF,             // done: test rdi, rdi
        0x74, 0x07,                   // jz exit
        0x48, 0x89, 0xFE,             // mov rsi, rdi
        0x31, 0xFF,                   // xor edi, edi
        0xEB, 0xDB,                   // jmp next
        0xE6, UInt8(syscallPort),     // exit: out 0xF0, al
    ]
    /// A short warm-up list of a VM's own, in its mailbox page after the engine's words and
    /// before the output buffer (`OutputBuffer.base`): a page every VM that served a child has
    /// its own copy of anyway, so a list written there costs no memory, where one written over
    /// the fork point's list would cost its two pages.
    static let warmUpOwnList: UInt64 = mailbox + 0x140
    /// Entries that list holds, before its terminating zero.
    static let warmUpOwnListCapacity = Int(OutputBuffer.base - warmUpOwnList) / 8 - 1
    /// A fork point's FPU, SSE and AVX state (KVM's XSAVE image, standard format), written once
    /// by the engine when the parent freezes; user read-only, so a child can load it (XRSTOR is
    /// a user-mode instruction) but never change it for the next child of its VM.
    static let vectorState: UInt64 = 0xC000
    /// Where the engine leaves a reused VM's child its first RAX, RDX and RIP (three words in
    /// the child's own mailbox page, after the poller's words) for `vectorStateRoutine`.
    static let entryScratch: UInt64 = mailbox + 0x100
    /// The process's pid, uid and gid (32 bits each, in that order), written by the engine
    /// when the process is made (they never change after), where rewritten `getpid`, `getuid`,
    /// `getgid`, `geteuid` and `getegid` calls read them without leaving the program
    /// (`SyscallRewriter`). In the process's own mailbox page: a program that overwrites them
    /// only misinforms itself; the engine never reads them back.
    static let identityWords: UInt64 = mailbox + 0x120
    /// The process's name as prctl(PR_GET_NAME) answers it (16 bytes, NUL-padded), written by
    /// the engine when the process is made and whenever the name changes (exec, PR_SET_NAME),
    /// where the stub's `ProgramNameRoutine` reads it without an exit. In the process's own
    /// mailbox page: a program that overwrites it misinforms only itself.
    static let programNameWords: UInt64 = mailbox + 0x130
    /// A reused VM's child starts here instead of an ioctl setting its vector state (each vCPU
    /// ioctl costs a vcpu_load, with a read of an MSR the outer hypervisor intercepts): it loads
    /// the fork point's state with XRSTOR, its RAX and RDX from the scratch words, and jumps to
    /// its RIP. None of it changes RFLAGS, so the child starts with every register as forked.
    static let vectorStateRoutine: UInt64 = stubPage + 0x680
    static let vectorStateCode: [UInt8] =
        [0xB8, 0xFF, 0xFF, 0xFF, 0xFF, 0xBA, 0xFF, 0xFF, 0xFF, 0xFF] // mov eax, -1; mov edx, -1 (every component XCR0 enables)
        + [0x48, 0x0F, 0xAE, 0x2C, 0x25] + UInt32(vectorState).littleEndianBytes // xrstor64 [vectorState]
        + [0x48, 0x8B, 0x04, 0x25] + UInt32(entryScratch).littleEndianBytes // mov rax, [scratch]
        + [0x48, 0x8B, 0x14, 0x25] + UInt32(entryScratch + 8).littleEndianBytes // mov rdx, [scratch + 8]
        + [0xFF, 0x24, 0x25] + UInt32(entryScratch + 16).littleEndianBytes // jmp [scratch + 16]

    /// Bit 0 of a warm-up list entry: write the page too.
    static let warmUpWriteBack: UInt64 = 1

    /// A warm-up list as the routine reads it: the entries, then a zero.
    static func warmUpListBytes(_ entries: [UInt64]) -> [UInt8] {
        // unsafe: each entry's eight bytes are only copied into a new array, inside the closure.
        (entries + [0]).flatMap { entry in withUnsafeBytes(of: entry.littleEndian) { Array($0) } }
    }

    private static let tssSize = 104
    private static let ioBitmapBytes = 65536 / 8
    static let tssLimit = UInt32(tssSize + ioBitmapBytes)

    /// Builds the pages in `space` and returns the guest-physical frame of the exception
    /// stack's top page, where the engine reads exception frames.
    static func build(in space: AddressSpace) throws(GuestError) -> UInt64 {
        let supervisor: PagePermissions = [.read, .write]
        let gdtFrame = try space.mapSystemPage(at: gdt, supervisor)
        let idtFrame = try space.mapSystemPage(at: idt, supervisor)
        var tssFrames: [UInt64] = []
        for page in 0..<tssPages { tssFrames.append(try space.mapSystemPage(at: tss + page * 0x1000, supervisor)) }
        _ = try space.mapSystemPage(at: exceptionStackBottom, supervisor)
        let stackTopFrame = try space.mapSystemPage(at: exceptionStackBottom + 0x1000, supervisor)
        let stubFrame = try space.mapSystemPage(at: stubPage, [.read, .execute, .user])
        let memory = space.memory

        // GDT in Linux's layout: kernel code/data, 32- and 64-bit user code, user data, TSS.
        let descriptors: [UInt64] = [
            0,
            0,
            0x00AF_9B00_0000_FFFF, // 0x10 kernel code, 64-bit
            0x00CF_9300_0000_FFFF, // 0x18 kernel data
            0x00CF_FB00_0000_FFFF, // 0x23 user code, 32-bit
            0x00CF_F300_0000_FFFF, // 0x2b user data
            0x00AF_FB00_0000_FFFF, // 0x33 user code, 64-bit
            0,
        ]
        let gdtBytes = memory.pointer(physical: gdtFrame, length: 4096)!
        for (index, descriptor) in descriptors.enumerated() { gdtBytes.storeBytes(of: descriptor, toByteOffset: index * 8, as: UInt64.self) }
        // 0x40: 16-byte available 64-bit TSS descriptor.
        let limit = UInt64(tssLimit)
        let base = tss
        let low = (limit & 0xFFFF) | ((base & 0xFF_FFFF) << 16) | (UInt64(0x89) << 40) | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56)
        gdtBytes.storeBytes(of: low, toByteOffset: 0x40, as: UInt64.self)
        gdtBytes.storeBytes(of: base >> 32, toByteOffset: 0x48, as: UInt64.self)

        // IDT: vectors 0-31 as DPL3 interrupt gates on IST1, each to its own stub.
        let idtBytes = memory.pointer(physical: idtFrame, length: 4096)!
        for vector in 0..<32 {
            let handler = exceptionStub(vector)
            let low = (handler & 0xFFFF) | (UInt64(X86.Selector.kernelCode) << 16) | (UInt64(1) << 32) | (UInt64(0xEE) << 40) | (((handler >> 16) & 0xFFFF) << 48)
            idtBytes.storeBytes(of: low, toByteOffset: vector * 16, as: UInt64.self)
            idtBytes.storeBytes(of: handler >> 32, toByteOffset: vector * 16 + 8, as: UInt64.self)
        }

        // TSS: RSP0 and IST1 on the exception stack; I/O bitmap right after, all ports open.
        let tssBytes = memory.pointer(physical: tssFrames[0], length: 4096)!
        tssBytes.storeBytes(of: exceptionStackTop, toByteOffset: 4, as: UInt64.self)
        tssBytes.storeBytes(of: exceptionStackTop, toByteOffset: 36, as: UInt64.self)
        tssBytes.storeBytes(of: UInt16(tssSize), toByteOffset: 102, as: UInt16.self)
        // The byte after the bitmap must be all ones.
        let terminator = tssSize + ioBitmapBytes
        memory.pointer(physical: tssFrames[terminator / 4096] + UInt64(terminator % 4096), length: 1)!.storeBytes(of: 0xFF, as: UInt8.self)

        // Stubs: vector v lands on `mov al, v; out 0xF1, al; ud2`; SYSCALL on `syscallStub`.
        let stubs = memory.pointer(physical: stubFrame, length: 4096)!
        precondition(SyscallStub.code.count <= 0x200, "the system-call stub must end before the exception stubs")
        stubs.copyMemory(from: SyscallStub.code, byteCount: SyscallStub.code.count)
        _ = try space.mapSystemPage(at: mailbox, [.read, .write, .user])
        for vector in 0..<32 {
            let code: [UInt8] = [0xB0, UInt8(vector), 0xE6, UInt8(exceptionPort), 0x0F, 0x0B, 0x90, 0x90]
            (stubs + Int(exceptionStub(vector) - stubPage)).copyMemory(from: code, byteCount: code.count)
        }
        (stubs + Int(warmUpRoutine - stubPage)).copyMemory(from: warmUpCode, byteCount: warmUpCode.count)
        precondition(warmUpRoutine + UInt64(warmUpCode.count) <= vectorStateRoutine, "the warm-up routine must end before the vector-state routine")
        precondition(warmUpOwnList >= programNameWords + 16, "a VM's own warm-up list must follow the program's name in the mailbox")
        (stubs + Int(vectorStateRoutine - stubPage)).copyMemory(from: vectorStateCode, byteCount: vectorStateCode.count)
        precondition(vectorStateRoutine + UInt64(vectorStateCode.count) <= OutputBuffer.routine, "the vector-state routine must end before the buffered-write routine")
        precondition(bufferedWriteRoutine.upperBound <= stubPage + 0x1000, "the buffered-write routine must fit in the stub page")
        (stubs + Int(OutputBuffer.routine - stubPage)).copyMemory(from: bufferedWriteCode, byteCount: bufferedWriteCode.count)
        precondition(bufferedWriteRoutine.upperBound <= ProgramNameRoutine.address, "the buffered-write routine must end before the program-name routine")
        precondition(programNameRoutine.upperBound <= stubPage + 0x1000, "the program-name routine must fit in the stub page")
        (stubs + Int(ProgramNameRoutine.address - stubPage)).copyMemory(from: programNameCode, byteCount: programNameCode.count)
        _ = try space.mapSystemPage(at: vectorState, [.read, .user])
        return stackTopFrame
    }
}
