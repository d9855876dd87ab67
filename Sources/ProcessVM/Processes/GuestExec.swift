import CShims
import Foundation
import HostSystem
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// execve(2): the process's VM gets a new program. Everything that can fail for a reason the
/// caller should hear (a missing file, one not executable, not a program, a bad interpreter,
/// arguments too large) is checked first, with the old program intact; then the address
/// space is emptied, the program (and its PT_INTERP) loaded from the rootfs as at a
/// container's start, and the process resumes at its entry point with the same pid,
/// descriptors (but those marked close-on-exec), working directory, umask, signal mask and
/// ignored signals. A "#!" script runs its interpreter (one level, as most programs need).
/// Done in place, in the same VM: no VM to make, its memory slot and vCPU stay.
extension ProcessVM {
    /// Bytes argv and envp may take together, pointers included (Linux allows a quarter of
    /// the stack limit; the VM's stack is 2 MiB by default, which must also hold the program's
    /// own frames).
    static let argumentBytesLimit = 256 << 10
    /// One argument or environment string at most (Linux's MAX_ARG_STRLEN).
    static let argumentStringLimit = 128 << 10
    /// The longest "#!" line read.
    static let scriptLineLimit = 256

    private struct Executable {
        /// The guest descriptor it is open on (closed when exec ends, either way).
        let guestFD: Int32
        let host: Int32
    }

    func execve(path pathAddress: UInt64, arguments argumentsAddress: UInt64, environment environmentAddress: UInt64) -> SyscallOutcome {
        var path: [UInt8]
        switch space.readCString(pathAddress, limit: Int(Self.pathMax)) {
        case .badAddress: return .error(.EFAULT)
        case .tooLong: return .error(.ENAMETOOLONG)
        case .string(let bytes): path = bytes
        }
        guard !path.isEmpty else { return .error(.ENOENT) }
        var budget = Self.argumentBytesLimit
        var arguments: [[UInt8]]
        let environment: [[UInt8]]
        switch readStringArray(argumentsAddress, budget: &budget) {
        case .failure(let error): return .error(error)
        case .success(let strings): arguments = strings
        }
        switch readStringArray(environmentAddress, budget: &budget) {
        case .failure(let error): return .error(error)
        case .success(let strings): environment = strings
        }
        if path == Array("/proc/self/exe".utf8) { path = executablePath }

        var opened: [Int32] = []
        defer { for fd in opened { _ = files.close(fd) } }
        func open(_ path: [UInt8]) -> Result<Executable, LinuxErrno> {
            let cPath = path + [0]
            // unsafe: UInt8 and CChar may alias (signed/unsigned variants); cPath ends in its NUL and is read only during the call.
            let access = cPath.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { files.faccessat(dirfd: AT_FDCWD, path: $0.baseAddress!, mode: X_OK, flags: 0) } }
            guard access == 0 else { return .failure(LinuxErrno(rawValue: Int32(-access)) ?? .EACCES) }
            // unsafe: as above: the NUL-terminated bytes are read as CChar (same size, may alias) only during openat.
            let fd = cPath.withUnsafeBufferPointer {
                $0.withMemoryRebound(to: CChar.self) { files.openat(dirfd: AT_FDCWD, path: $0.baseAddress!, flags: O_RDONLY | O_CLOEXEC, mode: 0, chargedToBudget: false) }
            }
            guard fd >= 0 else { return .failure(LinuxErrno(rawValue: Int32(-fd)) ?? .EACCES) }
            opened.append(Int32(fd))
            guard let host = files.hostDescriptor(of: Int32(fd)), (try? HostFileCalls.fileType(host)) == S_IFREG else { return .failure(.EACCES) }
            return .success(Executable(guestFD: Int32(fd), host: host))
        }

        var program: Executable
        switch open(path) {
        case .failure(let error): return .error(error)
        case .success(let file): program = file
        }
        var programPath = path
        // A script: its interpreter runs with the script's path (and the line's one
        // argument) before the script's own arguments.
        var head = [UInt8](repeating: 0, count: Self.scriptLineLimit)
        // unsafe: pread writes at most $0.count bytes, the array's size; a -1 fails the >= 2 check before any slicing.
        let headLength = head.withUnsafeMutableBytes { Glibc.pread(program.host, $0.baseAddress, $0.count, 0) }
        if headLength >= 2, head[0] == UInt8(ascii: "#"), head[1] == UInt8(ascii: "!") {
            let line = head[2..<headLength].prefix { $0 != UInt8(ascii: "\n") }
            let words = line.split(maxSplits: 1, whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
            guard let interpreter = words.first.map(Array.init) else { return .error(.ENOEXEC) }
            var prefix = [interpreter]
            if words.count > 1 {
                let argument = Array(words[1]).trimmingSpaces()
                if !argument.isEmpty { prefix.append(argument) }
            }
            arguments = prefix + [path] + arguments.dropFirst()
            budget -= prefix.reduce(path.count + 9) { $0 + $1.count + 9 }
            guard budget >= 0 else { return .error(.E2BIG) }
            switch open(interpreter) {
            case .failure(let error): return .error(error)
            case .success(let file): program = file
            }
            programPath = interpreter
        }
        let image: ELFImage
        do { image = try ELFImage(file: program.host) } catch { return .error(.ENOEXEC) }
        var interpreterImage: (image: ELFImage, file: Executable)?
        if let interpreterPath = image.interpreter {
            let interpreter: Executable
            switch open(Array(interpreterPath.utf8)) {
            case .failure(let error): return .error(error)
            case .success(let file): interpreter = file
            }
            guard let loaded = try? ELFImage(file: interpreter.host), loaded.kind == .positionIndependent, loaded.interpreter == nil else {
                return .error(.ENOEXEC)
            }
            interpreterImage = (loaded, interpreter)
        }
        let hardwareCapabilities: UInt64
        do {
            hardwareCapabilities = UInt64(try tree.kvmSystem().cpuid.entries.first { $0.function == 1 }?.edx ?? 0)
        } catch {
            return .error(.ENOMEM)
        }

        // The other threads end first, as on Linux; an exec from one of them (which Linux
        // serves by making the caller the first thread) is not served.
        if !threads.isEmpty {
            guard current === mainThread else {
                recordMissing(ProcessCall.execve)
                return .error(.ENOSYS)
            }
            endOtherThreads()
        }
        // No way back from here: a failure ends the process, as Linux's does.
        do throws(GuestError) {
            try replaceProgram(image: image, file: program.host, interpreter: interpreterImage.map { ($0.image, $0.file.host) },
                               path: programPath, arguments: arguments, environment: environment,
                               hardwareCapabilities: hardwareCapabilities)
        } catch {
            EngineDiagnostics.write("vmfork: execve of \(String(decoding: programPath, as: UTF8.self)) failed after the old program was gone: \(error)\n")
            return .exit(.signaled(11))
        }
        for fd in opened { _ = files.close(fd) }
        opened.removeAll()
        files.closeDescriptorsMarkedCloseOnExec()
        return .resumed
    }

    /// Empties the address space and loads the new program there, then points the vCPU at
    /// its entry (its interpreter's, for a dynamically linked one) with a fresh stack.
    private func replaceProgram(image: ELFImage, file: Int32, interpreter: (image: ELFImage, file: Int32)?, path: [UInt8],
                                arguments: [[UInt8]], environment: [[UInt8]], hardwareCapabilities: UInt64) throws(GuestError) {
        hasExeced = true
        tree.markExeced(identity.pid, command: arguments.map { String(decoding: $0, as: UTF8.self) })
        space.unmap(AddressSpace.userBottom, length: AddressSpace.userTop - AddressSpace.userBottom)
        do { try space.dropStaleTranslations() } catch { throw .system(error) }
        let program = try ProgramLoader.load(image, from: file, into: space, rewritingSystemCalls: configuration.rewritesSystemCalls)
        var start = program.entry
        if let interpreter {
            start = try ProgramLoader.load(interpreter.image, from: interpreter.file, into: space, base: ProgramLoader.interpreterBase,
                                           rewritingSystemCalls: configuration.rewritesSystemCalls).entry
        }
        guard let heapStart = AddressSpace.pageUp(program.imageEnd) else { throw .invalidExecutable("its image ends past the address space") }
        space.heapStart = heapStart
        space.heapEnd = heapStart
        let stackTop = AddressSpace.userTop
        try space.mapAnonymous(at: stackTop - UInt64(configuration.stackBytes), length: UInt64(configuration.stackBytes), [.read, .write, .user])
        entry = EntryState(program: program, executablePath: path, hardwareCapabilities: hardwareCapabilities, stackTop: stackTop,
                           reservesChildArguments: false, interpreterBase: interpreter == nil ? 0 : ProgramLoader.interpreterBase)
        defer { entry = nil }
        let stackPointer = try writeInitialStack(argumentBytes: arguments, environmentBytes: environment)

        executablePath = path
        programName = Array((path.split(separator: GuestPath.slash).last.map(Array.init) ?? []).prefix(15))
        threadIDAddress = nil
        childArgumentRoom = nil
        randomBytesDrawn = 0
        // Handlers are gone with the old program; ignored signals stay ignored.
        for index in signals.actions.indices where signals.actions[index].handler != SignalState.ignore {
            signals.actions[index] = (0, 0, 0, 0)
        }
        signals.alternateStack = (0, 2, 0) // SS_DISABLE
        pendingSignal = nil
        handlesChildSignal.store(false, ordering: .relaxed)
        ignoresChildStops.store(false, ordering: .relaxed)

        var registers = kvm_regs()
        registers.rip = start
        registers.rsp = stackPointer
        registers.rflags = X86.rflagsReserved
        let sync = vcpu.syncRegisters
        sync.pointee.regs = registers
        sync.pointee.sregs.cs = CPUSetup.segment(selector: X86.Selector.userCode, code: true)
        sync.pointee.sregs.ss = CPUSetup.segment(selector: X86.Selector.userData, code: false)
        sync.pointee.sregs.fs.base = 0
        sync.pointee.sregs.gs.base = 0
        vcpu.markDirty(regs: true, sregs: true)
    }

    /// A NULL-terminated array of guest string pointers (argv, envp), each string and the
    /// whole charged to `budget` (E2BIG past it); a null array is empty.
    private func readStringArray(_ address: UInt64, budget: inout Int) -> Result<[[UInt8]], LinuxErrno> {
        var strings: [[UInt8]] = []
        guard address != 0 else { return .success([]) }
        var cursor = address
        while true {
            guard let pointer = space.readValue(cursor, as: UInt64.self) else { return .failure(.EFAULT) }
            if pointer == 0 { return .success(strings) }
            switch space.readCString(pointer, limit: Self.argumentStringLimit) {
            case .badAddress: return .failure(.EFAULT)
            case .tooLong: return .failure(.E2BIG)
            case .string(let bytes):
                budget -= bytes.count + 1 + 8
                guard budget >= 0 else { return .failure(.E2BIG) }
                strings.append(bytes)
            }
            let (next, overflow) = cursor.addingReportingOverflow(8)
            guard !overflow else { return .failure(.EFAULT) }
            cursor = next
        }
    }
}

private extension Array where Element == UInt8 {
    func trimmingSpaces() -> [UInt8] {
        let isSpace: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return [] }
        return Array(self[first...last])
    }
}
