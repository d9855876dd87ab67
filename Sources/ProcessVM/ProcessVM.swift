import CShims
import Foundation
import HostSystem
import KVM

/// What a process VM is made of, chosen before it starts.
public struct ProcessVMConfiguration: Sendable {
    /// Guest memory, which is also the VM's memory limit.
    public var memoryBytes: Int
    /// Stack mapped below the top of the user address space.
    public var stackBytes: Int
    /// The container's root filesystem: a host folder the program cannot leave.
    public var rootfs: String
    public var identity: GuestIdentity

    public init(rootfs: String, memoryBytes: Int = 256 << 20, stackBytes: Int = 2 << 20, identity: GuestIdentity = GuestIdentity()) {
        self.rootfs = rootfs
        self.memoryBytes = memoryBytes
        self.stackBytes = stackBytes
        self.identity = identity
    }
}

/// Host descriptors a container's standard streams are connected to; the VM dup()s them.
public struct StandardStreams: Sendable {
    public var input: Int32
    public var output: Int32
    public var error: Int32
    public init(input: Int32 = 0, output: Int32 = 1, error: Int32 = 2) {
        self.input = input
        self.output = output
        self.error = error
    }
}

/// A kernel-less virtual machine running one static Linux program at CPL3. The engine is
/// the program's kernel: each SYSCALL exits to `run()`, which serves it from the tables in
/// `Syscalls/` and resumes the guest through KVM's synced registers.
public final class ProcessVM: @unchecked Sendable {
    public let configuration: ProcessVMConfiguration
    let vm: VirtualMachine
    let vcpu: VCPU
    public let memory: GuestMemory
    let space: AddressSpace
    let files: GuestFiles
    var identity: GuestIdentity
    var signals = SignalState()
    var umask: UInt32 = 0o022
    /// Guest-physical frame of the exception stack's top page (exception frames are read there).
    let exceptionStackFrame: UInt64
    /// Counts of system calls the program asked for that the engine does not serve.
    public private(set) var missingSyscalls: [Int: Int] = [:]
    /// The fault that ended the program, if one did.
    public private(set) var fault: GuestFault?
    /// Set from another thread to make `run()` return `.signaled(signal)` at once.
    let killRequest = KillRequest()
    /// PR_SET_NAME's name (the executable's base name at first).
    var programName: [UInt8]

    static let memorySlot: UInt32 = 0

    /// Loads `executable` (a path inside the rootfs) with `arguments` (argv, including argv[0])
    /// and `environment`, ready to run at its entry point.
    public init(system: KVMSystem, configuration: ProcessVMConfiguration, executable: String, arguments: [String],
                environment: [String], streams: StandardStreams = StandardStreams()) throws(GuestError) {
        self.configuration = configuration
        identity = configuration.identity
        programName = Array(executable.split(separator: "/").last.map { Array($0.utf8) }?.prefix(15) ?? [])
        do throws(SystemError) {
            memory = try GuestMemory(size: configuration.memoryBytes)
            files = try GuestFiles(rootfs: configuration.rootfs, stdin: streams.input, stdout: streams.output, stderr: streams.error)
        } catch {
            throw .system(error)
        }
        do {
            vm = try system.createVM()
            // The memory slot goes in before anything else: set later it costs milliseconds.
            try vm.setMemoryRegion(slot: Self.memorySlot, guestPhysical: 0, size: memory.size, host: memory.mapping.base)
            vcpu = try vm.createVCPU()
        } catch {
            throw .kvm(error)
        }
        space = try AddressSpace(memory: memory)
        exceptionStackFrame = try SystemArea.build(in: space)

        let image = try ELFImage(bytes: try Self.readWholeFile(executable, from: files))
        let program = try ProgramLoader.load(image, into: space)
        space.heapStart = AddressSpace.pageUp(program.imageEnd)!
        space.heapEnd = space.heapStart
        let stackTop = AddressSpace.userTop
        let stackBottom = stackTop - UInt64(configuration.stackBytes)
        try space.mapAnonymous(at: stackBottom, length: UInt64(configuration.stackBytes), [.read, .write, .user])

        let cpuid: CPUIDTable
        do { cpuid = try system.supportedCPUID() } catch { throw .kvm(error) }
        let stack = InitialStack(arguments: arguments.map { Array($0.utf8) }, environment: environment.map { Array($0.utf8) },
                                 executablePath: Array(executable.utf8), randomBytes: Self.freshRandomBytes(16),
                                 hardwareCapabilities: UInt64(cpuid.entries.first { $0.function == 1 }?.edx ?? 0))
        let stackPointer = try stack.write(into: space, top: stackTop, program: program, identity: identity)
        do {
            try CPUSetup.configure(vcpu, cpuid: cpuid, pageTableRoot: space.tables.root, entry: program.entry, stack: stackPointer)
        } catch {
            throw .kvm(error)
        }
    }

    static func freshRandomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// Makes a running `run()` return promptly with `.signaled(signal)` (SIGKILL semantics).
    public func kill(signal: Int32 = 9) {
        killRequest.raise(signal)
        vcpu.requestImmediateExit()
    }

    /// Runs the program until it exits, is killed, or faults.
    public func run() throws(GuestError) -> ExitStatus {
        while true {
            if let signal = killRequest.pending { return .signaled(signal) }
            if space.translationsChanged { flushTranslations() }
            let exit: VMExit
            do { exit = try vcpu.run() } catch { throw .kvm(error) }
            switch exit {
            case .io(let port, true, _, _, _) where port == SystemArea.syscallPort:
                if let status = serveSystemCall() { return status }
            case .io(let port, true, _, _, let offset) where port == SystemArea.exceptionPort:
                let vector = UInt8(truncatingIfNeeded: UnsafeRawPointer(vcpu.runState).load(fromByteOffset: offset, as: UInt8.self))
                return terminate(with: recordFault(vector: vector))
            case .interrupted:
                if let signal = killRequest.pending { return .signaled(signal) }
            case .shutdown:
                let rip = vcpu.syncRegisters.pointee.regs.rip
                fault = GuestFault(signal: 11, vector: 8, instructionPointer: rip, address: 0, errorCode: 0)
                return terminate(with: 11)
            default:
                let rip = vcpu.syncRegisters.pointee.regs.rip
                fault = GuestFault(signal: 9, vector: 255, instructionPointer: rip, address: 0, errorCode: 0)
                FileHandle.standardError.write(Data("vmfork: unexpected VM exit \(exit) at rip \(String(rip, radix: 16))\n".utf8))
                return terminate(with: 9)
            }
        }
    }

    private func terminate(with signal: Int32) -> ExitStatus {
        if let fault { FileHandle.standardError.write(Data("vmfork: program terminated by signal \(signal): \(fault)\n".utf8)) }
        return .signaled(signal)
    }

    /// Reads the exception frame the CPU pushed on the exception stack.
    private func recordFault(vector: UInt8) -> Int32 {
        let hasErrorCode = X86.vectorsWithErrorCode.contains(vector)
        let frameSize = hasErrorCode ? 48 : 40
        let top = memory.pointer(physical: exceptionStackFrame, length: 4096)!
        let frame = top + (4096 - frameSize)
        let errorCode = hasErrorCode ? frame.load(as: UInt64.self) : 0
        let rip = frame.load(fromByteOffset: hasErrorCode ? 8 : 0, as: UInt64.self)
        let signal = GuestFault.signal(forVector: vector)
        fault = GuestFault(signal: signal, vector: vector, instructionPointer: rip,
                           address: vector == 14 ? vcpu.syncRegisters.pointee.sregs.cr2 : 0, errorCode: errorCode)
        return signal
    }

    /// Serves the system call the guest is stopped at; returns a status when it ended the program.
    private func serveSystemCall() -> ExitStatus? {
        let sync = vcpu.syncRegisters
        let regs = sync.pointee.regs
        let call = SystemCall(number: Int(truncatingIfNeeded: regs.rax), arguments: (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9))
        let outcome = dispatch(call)
        switch outcome {
        case .exit(let status):
            return status
        case .value(let result):
            // The stub returns to the program with the result in RAX.
            sync.pointee.regs.rax = UInt64(bitPattern: result)
            vcpu.markDirty(regs: true)
            return nil
        }
    }

    /// Makes KVM drop its shadow translations after mappings were removed or narrowed: a
    /// different CR3 value (the page-level write-through bit toggled; the tables are the same)
    /// resets the vCPU's MMU context on the next entry.
    private func flushTranslations() {
        vcpu.syncRegisters.pointee.sregs.cr3 ^= 1 << 3
        vcpu.markDirty(sregs: true)
        space.translationsChanged = false
    }

    func recordMissing(_ number: Int) {
        missingSyscalls[number, default: 0] += 1
    }
}

/// A pending kill or stop, set from any thread; the vCPU thread checks it between exits and
/// sleeping system calls wait on it.
final class KillRequest: @unchecked Sendable {
    private let condition = NSCondition()
    private var signal: Int32?

    func raise(_ value: Int32) {
        condition.lock()
        signal = value
        condition.broadcast()
        condition.unlock()
    }

    var pending: Int32? {
        condition.lock()
        defer { condition.unlock() }
        return signal
    }

    /// Waits up to `seconds`; true when a signal arrived first.
    func wait(seconds: Double) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while signal == nil {
            if !condition.wait(until: deadline) { break }
        }
        return signal != nil
    }
}
