/// One system call as the guest made it: RAX and the six argument registers.
struct SystemCall: Sendable {
    let number: Int
    let arguments: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

    var a0: UInt64 { arguments.0 }
    var a1: UInt64 { arguments.1 }
    var a2: UInt64 { arguments.2 }
    var a3: UInt64 { arguments.3 }
    var a4: UInt64 { arguments.4 }
    var a5: UInt64 { arguments.5 }

    /// An argument the C prototype declares as `int` (the upper half is ignored, as Linux does).
    func int(_ value: UInt64) -> Int32 { Int32(truncatingIfNeeded: value) }
}

/// What serving a system call leads to.
enum SyscallOutcome {
    /// Return this to the guest in RAX: a result, or -errno.
    case value(Int64)
    /// The program is over.
    case exit(ExitStatus)
    /// Every register was set by the call (rt_sigreturn): do not touch RAX.
    case resumed

    static func error(_ errno: LinuxErrno) -> SyscallOutcome { .value(-Int64(errno.rawValue)) }
    static func int(_ value: Int) -> SyscallOutcome { .value(Int64(value)) }
    static let success = SyscallOutcome.value(0)
}

/// The Linux errno values the engine returns (x86-64 numbering).
enum LinuxErrno: Int32, Error {
    case EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, EBADF = 9, EAGAIN = 11, ENOMEM = 12, EACCES = 13
    case E2BIG = 7, ENOEXEC = 8, ECHILD = 10, EPIPE = 32
    case EFAULT = 14, EEXIST = 17, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, EMFILE = 24, ENOTTY = 25
    case ESPIPE = 29, EROFS = 30, ERANGE = 34, ENAMETOOLONG = 36, ENOSYS = 38, ELOOP = 40, ENODEV = 19
    case EOPNOTSUPP = 95
    case ETIMEDOUT = 110
}

typealias SyscallHandler = @Sendable (ProcessVM, SystemCall) -> SyscallOutcome

extension ProcessVM {
    /// System-call numbers to handlers, gathered from each family's table.
    static let syscallTable: [SyscallHandler?] = {
        var table = [SyscallHandler?](repeating: nil, count: 512)
        for (number, handler) in fileSyscalls + fileChangeSyscalls + memorySyscalls + processSyscalls + timeSyscalls + signalSyscalls + processTreeSyscalls
            + suspendSyscalls + eventSyscalls + futexSyscalls + threadSyscalls {
            precondition(table[number] == nil, "system call \(number) registered twice")
            table[number] = handler
        }
        return table
    }()

    /// The key of `missingSyscalls` that counts every number outside the table.
    public static let outOfRangeSyscall = -1

    func dispatch(_ call: SystemCall) -> SyscallOutcome {
        // The program's buffered output first (`OutputBuffer`): every call sees the files as if
        // each buffered write had been made at once; after it, what may be buffered is set anew.
        drainOutputBuffer()
        defer { updateOutputBuffer() }
        guard call.number >= 0, call.number < Self.syscallTable.count, let handler = Self.syscallTable[call.number] else {
            // Numbers past the table are counted together, so that the counts take bounded space.
            recordMissing(call.number >= 0 && call.number < Self.syscallTable.count ? call.number : Self.outOfRangeSyscall)
            return .error(.ENOSYS)
        }
        return handler(self, call)
    }

    /// Reads a path argument: NUL-terminated, at most PATH_MAX, from readable guest memory.
    func withPath(_ address: UInt64, _ body: (UnsafePointer<CChar>) -> SyscallOutcome) -> SyscallOutcome {
        switch space.readCString(address, limit: 4096) {
        case .badAddress: return .error(.EFAULT)
        case .tooLong: return .error(.ENAMETOOLONG)
        case .string(let bytes):
            // unsafe: the bytes and their NUL are read as CChar (which may alias UInt8) only during body's call.
            return (bytes + [0]).withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) } }
        }
    }

    /// Runs `body` on guest buffer [address, address+length) — readable, and writable when the
    /// call writes into it — or answers EFAULT.
    func withBuffer(_ address: UInt64, _ length: UInt64, writable: Bool, _ body: (UnsafeMutableRawBufferPointer) -> Int) -> SyscallOutcome {
        // Linux caps one transfer at 0x7ffff000 bytes.
        let length = Int(min(length, 0x7FFF_F000))
        guard let result = space.withUserBuffer(address, length, writable: writable, body) else { return .error(.EFAULT) }
        return .int(result)
    }
}
