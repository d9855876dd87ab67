import Foundation
import Glibc

/// Process-identity and resource system calls. The answers describe the container (its pid,
/// hostname, limits), not the host process serving it.
extension ProcessVM {
    static let processSyscalls: [(Int, SyscallHandler)] = [
        (24, { vm, _ in // sched_yield: the host's, once the process has threads (a spinning thread lets another run)
            if vm.threads.everHadThreads { _ = Glibc.sched_yield() }
            return .success
        }),
        (39, { vm, _ in .int(Int(vm.identity.pid)) }),
        (60, { vm, c in vm.exitThread(status: c.int(c.a0) & 0xFF) }),
        (231, { _, c in .exit(.exited(c.int(c.a0) & 0xFF)) }),
        (63, { vm, c in vm.uname(c.a0) }),
        (95, { vm, c in
            let old = vm.umask
            vm.umask = UInt32(truncatingIfNeeded: c.a0) & 0o777
            return .int(Int(old))
        }),
        (97, { vm, c in vm.writeLimit(Int32(truncatingIfNeeded: c.a0), to: c.a1) }),
        (98, { vm, c in vm.withBuffer(c.a1, 144, writable: true) { $0.initializeMemory(as: UInt8.self, repeating: 0); return 0 } }),
        (99, { vm, c in vm.sysinfo(c.a0) }),
        (102, { vm, _ in .int(Int(vm.identity.uid)) }),
        (104, { vm, _ in .int(Int(vm.identity.gid)) }),
        (107, { vm, _ in .int(Int(vm.identity.uid)) }),
        (108, { vm, _ in .int(Int(vm.identity.gid)) }),
        // setpgid, getppid, getpgrp, setsid, getpgid: `processTreeSyscalls`.
        (115, { _, _ in .success }), // getgroups: no supplementary groups
        (157, { vm, c in vm.prctl(c) }),
        (158, { vm, c in vm.archPrctl(c) }),
        (186, { vm, _ in .int(Int(vm.current.tid)) }), // gettid
        (204, { vm, c in vm.schedGetAffinity(c) }),
        // set_tid_address: the calling thread's, zeroed and woken at its exit (and where a
        // fork child's pid goes).
        (218, { vm, c in
            vm.threadIDAddress = c.a0
            return .int(Int(vm.current.tid))
        }),
        // set_robust_list and get_robust_list: `threadSyscalls`.
        (302, { vm, c in vm.prlimit(c) }),
        (318, { vm, c in vm.getrandom(c) }),
        (334, { vm, c in vm.rseq(c) }),
    ]

    private func uname(_ address: UInt64) -> SyscallOutcome {
        var host = utsname()
        Glibc.uname(&host)
        func field<T>(_ value: T) -> [UInt8] {
            // unsafe: each utsname field is a 65-CChar tuple, copied into `value`; prefix stops at its NUL or its end.
            withUnsafeBytes(of: value) { Array($0.prefix { $0 != 0 }) }
        }
        let fields: [[UInt8]] = [field(host.sysname), Array(identity.hostname.utf8), field(host.release), field(host.version), field(host.machine), Array("(none)".utf8)]
        var bytes = [UInt8](repeating: 0, count: 65 * 6)
        for (index, value) in fields.enumerated() {
            bytes.replaceSubrange(index * 65..<(index * 65 + min(64, value.count)), with: value.prefix(64))
        }
        return space.write(address, bytes) ? .success : .error(.EFAULT)
    }

    /// The limits the container really has: its stack, its memory, its descriptor table.
    private func limit(_ resource: Int32) -> (current: UInt64, maximum: UInt64)? {
        let infinity = UInt64.max
        switch resource {
        case 0...15:
            switch resource {
            case 2, 9: return (UInt64(memory.size), UInt64(memory.size)) // RLIMIT_DATA, RLIMIT_AS
            case 3: return (UInt64(configuration.stackBytes), UInt64(configuration.stackBytes)) // RLIMIT_STACK
            case 7: return (UInt64(files.descriptorLimit), UInt64(files.descriptorLimit)) // RLIMIT_NOFILE
            case 6: return (UInt64(tree.processLimit), UInt64(tree.processLimit)) // RLIMIT_NPROC
            default: return (infinity, infinity)
            }
        default: return nil
        }
    }

    private func writeLimit(_ resource: Int32, to address: UInt64) -> SyscallOutcome {
        guard let value = limit(resource) else { return .error(.EINVAL) }
        // unsafe: two UInt64s are 16 contiguous bytes (struct rlimit), copied into an array in the closure.
        return space.write(address, withUnsafeBytes(of: (value.current, value.maximum)) { Array($0) }) ? .success : .error(.EFAULT)
    }

    private func prlimit(_ c: SystemCall) -> SyscallOutcome {
        let pid = c.int(c.a0)
        guard pid == 0 || pid == identity.pid else { return .error(.ESRCH) }
        guard limit(c.int(c.a1)) != nil else { return .error(.EINVAL) }
        // New limits are accepted but the engine's own limits stay in force.
        if c.a2 != 0, space.read(c.a2, count: 16) == nil { return .error(.EFAULT) }
        return c.a3 == 0 ? .success : writeLimit(c.int(c.a1), to: c.a3)
    }

    private func sysinfo(_ address: UInt64) -> SyscallOutcome {
        var info = [UInt8](repeating: 0, count: 112)
        func put<T>(_ value: T, at offset: Int) {
            // unsafe: `put` gets trivial integers only; replaceSubrange copies their bytes, range-checked, into `info`.
            withUnsafeBytes(of: value) { info.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        put(UInt64(ProcessInfo.processInfo.systemUptime), at: 0)
        put(UInt64(memory.size), at: 32) // totalram
        put(UInt64(memory.freeFrameCount * GuestMemory.pageSize), at: 40) // freeram
        put(UInt16(1), at: 80) // procs
        put(UInt32(1), at: 104) // mem_unit
        return space.write(address, info) ? .success : .error(.EFAULT)
    }

    private func prctl(_ c: SystemCall) -> SyscallOutcome {
        let setName: Int32 = 15, getName: Int32 = 16
        switch c.int(c.a0) {
        case setName:
            guard case .string(let name) = space.readCString(c.a1, limit: 4096) else { return .error(.EFAULT) }
            programName = Array(name.prefix(15))
            return .success
        case getName:
            return space.write(c.a1, programName + [UInt8](repeating: 0, count: 16 - programName.count)) ? .success : .error(.EFAULT)
        default:
            return .error(.EINVAL)
        }
    }

    private func archPrctl(_ c: SystemCall) -> SyscallOutcome {
        let setGS: Int32 = 0x1001, setFS: Int32 = 0x1002, getFS: Int32 = 0x1003, getGS: Int32 = 0x1004
        let sregs = vcpu.syncRegisters
        switch c.int(c.a0) {
        case setFS, setGS:
            guard c.a1 < AddressSpace.userTop else { return .error(.EPERM) }
            if c.int(c.a0) == setFS { sregs.pointee.sregs.fs.base = c.a1 } else { sregs.pointee.sregs.gs.base = c.a1 }
            vcpu.markDirty(sregs: true)
            return .success
        case getFS, getGS:
            let value = c.int(c.a0) == getFS ? sregs.pointee.sregs.fs.base : sregs.pointee.sregs.gs.base
            // unsafe: the UInt64 base's eight bytes are copied into an array before the closure returns.
            return space.write(c.a1, withUnsafeBytes(of: value) { Array($0) }) ? .success : .error(.EFAULT)
        default:
            return .error(.EINVAL)
        }
    }

    private func schedGetAffinity(_ c: SystemCall) -> SyscallOutcome {
        // One vCPU: CPU 0 only.
        guard c.a1 >= 8, c.a1 % 8 == 0 else { return .error(.EINVAL) }
        // unsafe: the mask's eight bytes are copied into an array before the closure returns.
        return space.write(c.a2, withUnsafeBytes(of: UInt64(1)) { Array($0) }) ? .int(8) : .error(.EFAULT)
    }

    private func getrandom(_ c: SystemCall) -> SyscallOutcome {
        guard c.int(c.a2) & ~0x7 == 0 else { return .error(.EINVAL) }
        return transfer(c.a0, min(c.a1, 33_554_431), writable: true) { buffer, _ in
            var generator = SystemRandomNumberGenerator()
            var index = 0
            while index < buffer.count {
                let word = generator.next()
                // unsafe: the word's 8 bytes are read only in the closure; each store is at index < buffer.count (the `where`).
                withUnsafeBytes(of: word) { bytes in
                    for byte in bytes where index < buffer.count {
                        buffer[index] = byte
                        index += 1
                    }
                }
            }
            randomBytesDrawn += buffer.count
            return buffer.count
        }
    }

    /// rseq registration: the program runs on one vCPU that never migrates, so its CPU id is
    /// always 0; critical sections never span a system call, so no abort is ever due.
    private func rseq(_ c: SystemCall) -> SyscallOutcome {
        let unregister: Int32 = 1
        if c.int(c.a2) == unregister { return .success }
        guard c.int(c.a2) == 0, c.a1 >= 32, c.a0 % 32 == 0 else { return .error(.EINVAL) }
        return space.write(c.a0, [UInt8](repeating: 0, count: 8)) ? .success : .error(.EFAULT)
    }
}
