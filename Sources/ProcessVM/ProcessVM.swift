import CShims
import Foundation
import HostSystem
import KVM
import Synchronization

/// What a process VM is made of, chosen before it starts.
public struct ProcessVMConfiguration: Sendable {
    /// Guest memory, which is also the VM's memory limit.
    public var memoryBytes: Int
    /// Stack mapped below the top of the user address space.
    public var stackBytes: Int
    /// The container's root filesystem: a host folder the program cannot leave.
    public var rootfs: String
    public var identity: GuestIdentity
    /// Serve system calls that neither block nor need the vCPU from the engine's poller
    /// thread, without a VM exit (about 4 µs instead of 22). The poller spins while VMs post
    /// calls and parks when they stop, so a computing or waiting VM costs no core.
    public var pollsSystemCalls: Bool
    /// Rewrite the program's `mov eax, N; syscall` pairs as it is loaded, so that those calls
    /// enter the engine's stub from user mode, without PVM's SYSCALL switch: one exit fewer
    /// per call served by exit, and none for a polled one (`SyscallRewriter`).
    public var rewritesSystemCalls = true
    /// Let the program buffer its writes to standard output and error when they go to a file
    /// that never waits (a container's log), answered by the stub without an exit and written
    /// out before the next call the engine serves (`OutputBuffer`).
    public var buffersOutput = true
    /// The guest's RLIMIT_NOFILE: how many descriptors its table holds, and so at most how
    /// many host descriptors it costs the engine (beyond the few every VM has).
    public var descriptorLimit: Int
    /// When set, the root filesystem is served from this (an image's disk chain) instead of
    /// the host folder `rootfs`.
    public var rootFileSystem: (any GuestRootFileSystem)?
    /// The program's working directory when it starts (an image config's WorkingDir), a
    /// path inside the root filesystem.
    public var workingDirectory = "/"
    /// How many processes the container may have at once, its first one included (each
    /// forked process is a VM of its own): fork past it gives EAGAIN, as RLIMIT_NPROC does.
    public var processLimit: Int = ProcessVMConfiguration.defaultProcessLimit
    public static let defaultProcessLimit = 64

    public init(rootfs: String, memoryBytes: Int = 256 << 20, stackBytes: Int = 2 << 20, identity: GuestIdentity = GuestIdentity(),
                pollsSystemCalls: Bool = true, descriptorLimit: Int = GuestFiles.defaultDescriptorLimit) {
        self.rootfs = rootfs
        self.descriptorLimit = descriptorLimit
        self.pollsSystemCalls = pollsSystemCalls
        self.memoryBytes = memoryBytes
        self.stackBytes = stackBytes
        self.identity = identity
    }
}

/// Host descriptors a container's standard streams are connected to; the VM opens each for
/// the guest alone (`OpenFile.standardStream`), the caller keeps its own.
public struct StandardStreams: Sendable {
    public var input: Int32
    public var output: Int32
    public var error: Int32
    /// The time indexes of `output` and `error` when they are a container's log files: each
    /// guest write to them notes itself there (`LogTimeIndex`).
    public var outputTimes: LogTimeIndex?
    public var errorTimes: LogTimeIndex?
    /// Set for a container with a terminal: descriptors 0, 1 and 2 are then one open file on
    /// it, reading `input`; `output`, `error` and their time indexes are not used (the
    /// terminal writes its own log).
    public var terminal: GuestTerminal?
    public init(input: Int32 = 0, output: Int32 = 1, error: Int32 = 2, outputTimes: LogTimeIndex? = nil, errorTimes: LogTimeIndex? = nil,
                terminal: GuestTerminal? = nil) {
        self.terminal = terminal
        self.input = input
        self.output = output
        self.error = error
        self.outputTimes = outputTimes
        self.errorTimes = errorTimes
    }
}

/// A kernel-less virtual machine running one static Linux program at CPL3. The engine is
/// the program's kernel: each SYSCALL exits to `run()`, which serves it from the tables in
/// `Syscalls/` and resumes the guest through KVM's synced registers.
///
/// Teardown, in this order (each step is what makes the next safe):
/// 1. The vCPU leaves KVM_RUN: the program ends, or `kill`/`sendSignal` set `immediate_exit`
///    and kick the vCPU thread (and wake any wait through the interrupt eventfd).
/// 2. Polling stops: `run` unregisters the VM from the poller and clears `pollerMailbox`
///    under the VM's lock, so the poller serves it no more calls.
/// 3. The owner lets it go (`Container.release` at its exit, or `remove`, on its pool's queue):
///    the pool may restore it for a sibling (`PreparedVM(reusing:)`); otherwise the last
///    reference goes, and with it the vCPU (its kvm_run mapping and descriptor), the VM's
///    descriptor, then the guest memory's mapping and memfd — on the pool's queue, or on the
///    poller's release queue when the poller's copy of its set held the last reference; never
///    on the poller itself.
///
/// `@unchecked Sendable`: every `var` but `identity` (never reassigned) is used only by the thread holding `machineState`,
/// or by its owner before and after `run`; other threads go through `interrupts`, `slot`, `jobControl`, `threads`, atomics.
public final class ProcessVM: @unchecked Sendable {
    public let configuration: ProcessVMConfiguration
    let vm: VirtualMachine
    /// The process's first thread (its tid is the pid); the other threads are in `threads`.
    let mainThread: GuestThread
    /// The thread whose exit is being served: set by whichever thread holds `machineState`
    /// (the main thread's by default), so that the per-thread state below is that caller's.
    var current: GuestThread
    /// The calling thread's vCPU.
    var vcpu: VCPU { current.vcpu }
    public let memory: GuestMemory
    let space: AddressSpace
    let files: GuestFiles
    var identity: GuestIdentity
    /// Dispositions, shared by the process's threads (the mask and alternate stack in it are
    /// unused: `signals` takes them from the calling thread).
    var sharedSignals = SignalState()
    /// The calling thread's view: the process's dispositions, its own mask and alternate stack.
    var signals: SignalState {
        get {
            var view = sharedSignals
            view.blocked = current.blockedSignals
            view.alternateStack = current.alternateStack
            return view
        }
        set {
            sharedSignals.actions = newValue.actions
            current.alternateStack = newValue.alternateStack
            // Waits and deliveries look at the mask from the interrupts' side.
            if current.blockedSignals != newValue.blocked {
                current.blockedSignals = newValue.blocked
                current.interrupts.setBlocked(newValue.blocked)
            }
        }
    }
    var umask: UInt32 = 0o022
    /// PR_SET_NAME's name (the executable's base name at first).
    var programName: [UInt8] {
        // The words prctl(PR_GET_NAME) reads in the program (`ProgramNameRoutine`) follow it.
        didSet { writeProgramNameWords() }
    }
    /// Guest-physical frame of the exception stack's top page (exception frames are read there).
    let exceptionStackFrame: UInt64
    /// What is needed to write a new initial stack: present until the program first runs.
    var entry: EntryState?
    /// Counts of system calls the program asked for that the engine does not serve (numbers
    /// outside the table all under `outOfRangeSyscall`).
    public private(set) var missingSyscalls: [Int: Int] = [:]
    /// The fault that ended the program, if one did.
    public private(set) var fault: GuestFault?
    /// Kill and signal requests from other threads, for the calling thread.
    var interrupts: Interrupts { current.interrupts }
    /// Held by the vCPU thread whenever it is outside KVM_RUN, and by the system-call poller
    /// while it serves a call: the process state is never touched by both at once.
    let machineState = NSLock()
    /// The mailbox while this VM is registered with the poller.
    var pollerMailbox: UnsafeMutableRawPointer?
    /// True while the mailbox's signal-check word is set (see `signalMustWaitForTheStub`).
    var signalCheckRequested = false
    /// Signals that found the vCPU inside the stub and waited for its way out (read once the VM ended).
    private(set) var signalsHeldForTheStub = 0
    /// The descriptors whose writes the program may buffer, as the engine last set them in the
    /// output buffer's `enabled` word (`OutputBuffer`); only records for these are written out.
    var outputBufferDescriptors: UInt32 = 0
    /// Times buffered output was written out, and buffers whose records stopped being valid
    /// (a program that wrote over its own buffer), for tests and diagnostics.
    public internal(set) var outputBufferDrains = 0
    public internal(set) var outputBufferRefusals = 0
    /// A signal for the calling thread's handler, delivered when it next returns to user code.
    var pendingSignal: Int32? {
        get { current.pendingSignal }
        set { current.pendingSignal = newValue }
    }
    /// The thread inside `run`, so that kill and stop can kick it out of KVM_RUN.
    private var runningThread: ThreadSlot { mainThread.slot }
    /// The process's other threads (see `Threads/`).
    let threads = ThreadGroup()
    /// When set, `run` stops before serving the program's first read of standard input.
    var stopsAtFirstStandardInputRead = false
    /// When set, `run` stops when the program reaches this address, its main, where the
    /// engine put a breakpoint over `originalByte`.
    var stopsAtMain: (address: UInt64, originalByte: UInt8)?
    /// Where a main fork point's children get their own arguments (see `ChildArgumentRoom`).
    var childArgumentRoom: ChildArgumentRoom?
    /// The address the program gave set_tid_address: glibc's cached thread id, which a
    /// child of a fork point gets its own pid written to, as the kernel's fork does.
    var threadIDAddress: UInt64? {
        get { current.clearChildTID }
        set { current.clearChildTID = newValue }
    }
    /// The warm parent this VM was forked from, if it was.
    var forkedFrom: ForkPoint?
    /// The AT_RANDOM bytes the engine gave the program and their address, as the engine wrote
    /// them (a stdin fork point checks the parent's canary and pointer guard against them).
    var startupRandom: (address: UInt64, bytes: [UInt8])?
    /// Bytes getrandom gave the program so far (a stdin fork point's children share those
    /// its parent drew: the engine cannot know what they seeded).
    var randomBytesDrawn = 0
    /// False once the vCPU stopped in a state the engine cannot vouch for (a triple fault, an
    /// unexpected exit, a failed KVM_RUN): such a VM is never reused for another child.
    private(set) var vcpuStateKnown = true
    /// What the last `run` made the hypervisor do: its exits, page faults and emulated
    /// instructions, counted by KVM (nil where KVM keeps no statistics).
    public private(set) var lastRunCounters: VCPUCounters?
    /// The container's processes, this one among them (see `ProcessTree`).
    public let tree: ProcessTree
    /// This process's pid inside its container.
    public var processID: Int32 { identity.pid }
    /// The path of the program this process runs, in the rootfs (execve's "/proc/self/exe").
    var executablePath: [UInt8] = []
    /// Set by execve: the memory no longer holds what the process was forked with, so its VM
    /// is never restored for a sibling.
    var hasExeced = false
    /// Whether this process has a handler for SIGCHLD, read by the threads of its children
    /// when they end (they send it only then).
    let handlesChildSignal = Atomic<Bool>(false)
    /// SA_NOCLDSTOP on its SIGCHLD: no SIGCHLD when a child stops or goes on.
    let ignoresChildStops = Atomic<Bool>(false)
    /// Its job-control stops (SIGSTOP, SIGCONT).
    let jobControl = JobControl()

    static let memorySlot: UInt32 = 0
    /// The poller that serves this VM's posted calls: its KVM system's (nil when every call
    /// takes the exit path).
    let poller: SyscallPoller?

    /// The loaded program and its stack, kept so a child of an entry-point parent can be
    /// given its own arguments.
    struct EntryState {
        let program: LoadedProgram
        let executablePath: [UInt8]
        let hardwareCapabilities: UInt64
        let stackTop: UInt64
        /// Whether the initial stack leaves room for children's own arguments (the parent of
        /// a main fork point).
        let reservesChildArguments: Bool
        /// Where a dynamically linked program's interpreter was loaded (0: a static program).
        let interpreterBase: UInt64
    }

    init(configuration: ProcessVMConfiguration, vm: VirtualMachine, vcpu: VCPU, memory: GuestMemory, space: AddressSpace,
         files: GuestFiles, identity: GuestIdentity, programName: [UInt8], exceptionStackFrame: UInt64, entry: EntryState?,
         tree: ProcessTree? = nil) {
        self.tree = tree ?? ProcessTree(root: identity.pid, parentOfRoot: identity.parentPid, processLimit: configuration.processLimit)
        self.configuration = configuration
        poller = configuration.pollsSystemCalls ? SyscallPoller.of(vm.system) : nil
        self.vm = vm
        mainThread = GuestThread(tid: identity.pid, vcpu: vcpu)
        current = mainThread
        self.memory = memory
        self.space = space
        self.files = files
        files.creator = GuestFiles.Caller(uid: identity.uid, gid: identity.gid)
        self.identity = identity
        // unsafe: three UInt32s, 12 contiguous little-endian bytes alive for the call (no array made on the fork path); loaderWrite copies them.
        withUnsafeBytes(of: (UInt32(bitPattern: identity.pid).littleEndian, identity.uid.littleEndian, identity.gid.littleEndian)) {
            space.loaderWrite(SystemArea.identityWords, $0)
        }
        self.programName = programName
        self.exceptionStackFrame = exceptionStackFrame
        self.entry = entry
        if tree == nil {
            self.tree.rootVM = self
            files.standardTerminal?.bind(self.tree)
        }
        writeProgramNameWords()
        // A reused VM's buffer may hold its last child's words: empty, and enabled anew.
        updateOutputBuffer(reset: true)
    }

    /// Loads `executable` (a path inside the rootfs) with `arguments` (argv, including argv[0])
    /// and `environment`, ready to run at its entry point, in a VM created now.
    public convenience init(system: KVMSystem, configuration: ProcessVMConfiguration, executable: String, arguments: [String],
                            environment: [String], streams: StandardStreams = StandardStreams(),
                            reservesChildArguments: Bool = false) throws(GuestError) {
        try self.init(blank: BlankVM(system: system, memoryBytes: configuration.memoryBytes), configuration: configuration,
                      executable: executable, arguments: arguments, environment: environment, streams: streams,
                      reservesChildArguments: reservesChildArguments)
    }

    /// Loads `executable` as above into `blank`, a VM made ahead of time with
    /// `configuration.memoryBytes` of memory, which this process VM takes over.
    public convenience init(blank: BlankVM, configuration: ProcessVMConfiguration, executable: String, arguments: [String],
                            environment: [String], streams: StandardStreams = StandardStreams(),
                            reservesChildArguments: Bool = false) throws(GuestError) {
        precondition(blank.memory.size == configuration.memoryBytes, "the blank VM's memory differs from the configuration's")
        blank.markTaken()
        let files: GuestFiles
        do throws(SystemError) {
            if let rootFileSystem = configuration.rootFileSystem {
                files = try GuestFiles(rootFileSystem: rootFileSystem, stdin: streams.input, stdout: streams.output, stderr: streams.error,
                                       descriptorLimit: configuration.descriptorLimit)
            } else {
                files = try GuestFiles(rootfs: configuration.rootfs, stdin: streams.input, stdout: streams.output, stderr: streams.error,
                                       descriptorLimit: configuration.descriptorLimit)
            }
            files.attachLogTimes(output: streams.outputTimes, error: streams.errorTimes)
            files.attachTerminal(streams.terminal)
            if configuration.workingDirectory != "/" {
                let changed = configuration.workingDirectory.withCString { files.chdir($0) }
                if changed < 0 { throw SystemError(call: "chdir(working directory \(configuration.workingDirectory))", errno: Int32(-changed)) }
            }
        } catch {
            throw .system(error)
        }
        let space = blank.space
        let (program, interpreterPath) = try Self.withExecutable(executable, from: files) { file throws(GuestError) in
            let image = try ELFImage(file: file)
            return (try ProgramLoader.load(image, from: file, into: space, rewritingSystemCalls: configuration.rewritesSystemCalls),
                    image.interpreter)
        }
        // A dynamically linked program starts in its interpreter, which maps the libraries.
        var interpreterEntry: UInt64?
        if let interpreterPath {
            interpreterEntry = try Self.withExecutable(interpreterPath, from: files) { file throws(GuestError) in
                let image = try ELFImage(file: file)
                guard image.kind == .positionIndependent, image.interpreter == nil else {
                    throw .invalidExecutable("the interpreter \(interpreterPath) is not a position-independent program without one of its own")
                }
                return try ProgramLoader.load(image, from: file, into: space, base: ProgramLoader.interpreterBase,
                                              rewritingSystemCalls: configuration.rewritesSystemCalls).entry
            }
        }
        space.heapStart = AddressSpace.pageUp(program.imageEnd)!
        space.heapEnd = space.heapStart
        let stackTop = AddressSpace.userTop
        try space.mapAnonymous(at: stackTop - UInt64(configuration.stackBytes), length: UInt64(configuration.stackBytes), [.read, .write, .user])

        let entry = EntryState(program: program, executablePath: Array(executable.utf8),
                               hardwareCapabilities: UInt64(blank.cpuid.entries.first { $0.function == 1 }?.edx ?? 0), stackTop: stackTop,
                               reservesChildArguments: reservesChildArguments,
                               interpreterBase: interpreterEntry == nil ? 0 : ProgramLoader.interpreterBase)
        let programName = Array(executable.split(separator: "/").last.map { Array($0.utf8) }?.prefix(15) ?? [])
        self.init(configuration: configuration, vm: blank.vm, vcpu: blank.vcpu, memory: blank.memory, space: space, files: files,
                  identity: configuration.identity, programName: programName, exceptionStackFrame: blank.exceptionStackFrame, entry: entry)
        executablePath = Array(executable.utf8)
        let stackPointer = try writeInitialStack(arguments: arguments, environment: environment)
        do {
            try CPUSetup.start(vcpu, entry: interpreterEntry ?? program.entry, stack: stackPointer)
        } catch {
            throw .kvm(error)
        }
    }

    /// Writes argv, envp, auxv and fresh AT_RANDOM bytes below the stack top; returns the
    /// stack pointer the program starts with.
    func writeInitialStack(arguments: [String], environment: [String]) throws(GuestError) -> UInt64 {
        try writeInitialStack(argumentBytes: arguments.map { Array($0.utf8) }, environmentBytes: environment.map { Array($0.utf8) })
    }

    /// The same with the strings as bytes (execve's, which need not be UTF-8).
    func writeInitialStack(argumentBytes arguments: [[UInt8]], environmentBytes environment: [[UInt8]]) throws(GuestError) -> UInt64 {
        guard let entry else { preconditionFailure("the program has already started") }
        let randomBytes = Self.freshRandomBytes(16)
        var stack = InitialStack(arguments: arguments, environment: environment,
                                 executablePath: entry.executablePath, randomBytes: randomBytes,
                                 hardwareCapabilities: entry.hardwareCapabilities)
        stack.interpreterBase = entry.interpreterBase
        var top = entry.stackTop
        if entry.reservesChildArguments {
            top -= ChildArgumentRoom.areaBytes
            stack.environmentSlots = ChildArgumentRoom.environmentSlots
        }
        let written = try stack.write(into: space, top: top, program: entry.program, identity: identity)
        if entry.reservesChildArguments {
            childArgumentRoom = ChildArgumentRoom(area: top..<entry.stackTop, environmentArray: written.environment,
                                                  environmentSlots: ChildArgumentRoom.environmentSlots)
        }
        startupRandom = (written.randomBytes, randomBytes)
        return written.stackPointer
    }

    /// AT_RANDOM's bytes, drawn in one call (a generator draws a word per byte).
    static func freshRandomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        for offset in stride(from: 0, to: count, by: 8) {
            // unsafe: the UInt64's 8 bytes are read only in the closure, at index < min(8, count - offset).
            withUnsafeBytes(of: generator.next()) { word in
                for index in 0..<min(8, count - offset) { bytes[offset + index] = word[index] }
            }
        }
        return bytes
    }

    /// Makes a running `run()` return promptly with `.signaled(signal)` (SIGKILL semantics).
    public func kill(signal: Int32 = 9) {
        jobControl.kill()
        for thread in [mainThread] + threads.all {
            thread.interrupts.raiseKill(signal)
            thread.vcpu.requestImmediateExit()
            thread.slot.kick()
        }
    }

    /// Sends `signal` (SIGTERM for stop) to the program: its handler runs if it installed
    /// one; otherwise the signal's default action applies (SIGTERM ends it with 143).
    /// A signal for the process goes to its first thread that does not block it (the first
    /// thread when all do: it stays pending there), as Linux picks one.
    public func sendSignal(_ signal: Int32) {
        // A stop signal cancels a SIGCONT not yet taken; a SIGCONT resumes a stopped process
        // at once (then its handler, if any, runs like any signal's).
        if JobControl.stoppingByDefault.contains(signal) { jobControl.stopSent() }
        if signal == JobControl.continueSignal { jobControl.resume() }
        let candidates = [mainThread] + threads.all
        let target = candidates.first { !$0.interrupts.blocks(signal) } ?? mainThread
        target.interrupts.raiseSignal(signal)
        target.vcpu.requestImmediateExit()
        target.slot.kick()
    }

    /// Runs the program until it exits, is killed, or faults.
    ///
    /// A forked process's descriptors close as it ends (its pipes' other ends see EOF). When
    /// the container's first process ends, every other process of the container is killed,
    /// and this returns once all of them have ended and their VMs are gone.
    /// CPU seconds this process has used: its threads' host threads while they ran it (its
    /// guest code and the calls they served themselves; polled calls the engine's poller
    /// thread served are not counted), ended threads included.
    public var cpuSeconds: Double {
        threads.all.reduce(mainThread.slot.cpuSeconds + threads.endedCPUSeconds) { $0 + $1.slot.cpuSeconds }
    }

    public func run() throws(GuestError) -> ExitStatus {
        let isRoot = tree.rootVM === self
        defer {
            if isRoot { tree.rootEnded() } else { files.closeAll() }
        }
        switch try runUntilStop() {
        case .ended(let status): return status
        case .atFirstStandardInputRead, .atMain: preconditionFailure("only a warm parent stops at its fork point")
        }
    }

    enum Stop {
        case ended(ExitStatus)
        /// The program reached its main (the vCPU is in user mode at main's first
        /// instruction, the breakpoint gone).
        case atMain
        /// The program is about to read standard input for the first time (the vCPU is at
        /// the system-call stub's `out`, which a fork child executes again).
        case atFirstStandardInputRead
    }

    func runUntilStop() throws(GuestError) -> Stop {
        entry = nil
        let countersBefore = vcpu.counters()
        runningThread.enter()
        machineState.lock()
        current = mainThread
        if let poller, let mailbox {
            pollerMailbox = mailbox
            poller.watch(self, mailbox: mailbox)
        }
        // Output the program buffers and then leaves there while it computes goes out within
        // about two of the flusher's intervals (`OutputFlusher`).
        let flusher = configuration.buffersOutput ? OutputFlusher.of(vm.system) : nil
        if let flusher, let mailbox {
            // unsafe: the word lies inside the VM's mailbox page, mapped until the VM goes; the watch ends below, first.
            flusher.watch(self, used: (mailbox + Int(OutputBuffer.used - SystemArea.mailbox)).assumingMemoryBound(to: UInt32.self))
        }
        defer {
            flusher?.unwatch(self)
            if let poller, pollerMailbox != nil {
                poller.unregister(self)
                pollerMailbox = nil
            }
            endOtherThreads()
            // What the program buffered goes out before its end (or its fork point) is reported.
            drainOutputBuffer()
            machineState.unlock()
            runningThread.leave()
            if let countersBefore, let countersAfter = vcpu.counters() { lastRunCounters = countersAfter - countersBefore }
        }
        while true {
            waitIfStopped()
            if let status = endRequest { return .ended(status) }
            if pendingSignal == nil, let signal = interrupts.takeSignal() { pendingSignal = signal }
            if pendingSignal != nil, vcpu.syncRegisters.pointee.sregs.cs.selector == X86.Selector.userCode, !signalMustWaitForTheStub(),
               let status = deliverPendingSignal(interrupted: vcpu.syncRegisters.pointee.regs) {
                return .ended(status)
            }
            do throws(SystemError) {
                try space.dropStaleTranslations()
            } catch {
                vcpuStateKnown = false
                throw .system(error)
            }
            let exit: VMExit
            machineState.unlock()
            let result = Result { () throws(KVMError) in try mainThread.vcpu.run() }
            machineState.lock()
            current = mainThread
            do { exit = try result.get() } catch {
                vcpuStateKnown = false
                throw .kvm(error)
            }
            switch exit {
            case .io(let port, true, _, _, _) where port == SystemArea.syscallPort:
                if stopsAtFirstStandardInputRead, isStandardInputRead() { return .atFirstStandardInputRead }
                resumePolling(after: vcpu.syncRegisters.pointee.regs.rax)
                clearSignalCheck()
                if let status = serveSystemCall() { return .ended(status) }
            case .io(let port, true, _, _, _) where port == SystemArea.signalCheckPort:
                if let status = serveSignalCheck() { return .ended(status) }
            case .io(let port, true, _, _, let offset) where port == SystemArea.exceptionPort:
                let vector = UInt8(truncatingIfNeeded: UnsafeRawPointer(vcpu.runState).load(fromByteOffset: offset, as: UInt8.self))
                if vector == X86.breakpointVector, let main = stopsAtMain, try resumeInUserMode(atBreakpoint: main) { return .atMain }
                if answerFaultInGuestRoutine(vector: vector) { continue }
                return .ended(terminate(with: recordFault(vector: vector)))
            case .interrupted:
                vcpu.requestImmediateExit(false)
                if let status = endRequest { return .ended(status) }
                // The output flusher's kick (or a signal's): what the program buffered goes out,
                // unless the vCPU stopped inside the buffered-write routine, which appends at the
                // `used` it read and would then find the buffer emptied under it (the next kick
                // finds it out of the routine).
                if !SystemArea.bufferedWriteRoutine.contains(vcpu.syncRegisters.pointee.regs.rip) { drainOutputBuffer() }
            case .shutdown:
                vcpuStateKnown = false
                let rip = vcpu.syncRegisters.pointee.regs.rip
                fault = GuestFault(signal: 11, vector: 8, instructionPointer: rip, address: 0, errorCode: 0)
                return .ended(terminate(with: 11))
            default:
                vcpuStateKnown = false
                let rip = vcpu.syncRegisters.pointee.regs.rip
                fault = GuestFault(signal: 9, vector: 255, instructionPointer: rip, address: 0, errorCode: 0)
                EngineDiagnostics.write("vmfork: unexpected VM exit \(exit) at rip \(String(rip, radix: 16))\n")
                return .ended(terminate(with: 9))
            }
        }
    }

    func terminate(with signal: Int32) -> ExitStatus {
        if let fault { EngineDiagnostics.write("vmfork: program terminated by signal \(signal): \(fault)\n") }
        return .signaled(signal)
    }

    /// Reads the exception frame the CPU pushed on the exception stack.
    func recordFault(vector: UInt8) -> Int32 {
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

    /// True when the pending system call reads standard input (read, readv, pread64, poll on 0).
    private func isStandardInputRead() -> Bool {
        let regs = vcpu.syncRegisters.pointee.regs
        return Self.readsStandardInput(number: Int(truncatingIfNeeded: regs.rax), descriptor: regs.rdi)
    }

    /// True when system call `number` with first argument `descriptor` reads standard input
    /// (read, pread64, readv on 0).
    static func readsStandardInput(number: Int, descriptor: UInt64) -> Bool {
        switch number {
        case 0, 17, 19: return descriptor == 0
        default: return false
        }
    }

    /// Serves the system call the guest is stopped at; returns a status when it ended the program.
    func serveSystemCall() -> ExitStatus? {
        let sync = vcpu.syncRegisters
        let regs = sync.pointee.regs
        let call = SystemCall(number: Int(truncatingIfNeeded: regs.rax), arguments: (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9))
        let outcome = dispatch(call)
        switch outcome {
        case .exit(let status):
            return status
        case .resumed:
            return nil
        case .value(let result):
            if pendingSignal == nil, let signal = interrupts.takeSignal() { pendingSignal = signal }
            if pendingSignal != nil {
                // The result first: a signal that is ignored or stops the process returns
                // through the stub as the call would have; a handler's frame replaces it.
                sync.pointee.regs.rax = UInt64(bitPattern: result)
                vcpu.markDirty(regs: true)
                // The handler runs first; it returns to where the call would have.
                var interrupted = regs
                interrupted.rax = UInt64(bitPattern: result)
                interrupted.rip = regs.rcx
                interrupted.rflags = regs.r11 | X86.rflagsReserved
                return deliverPendingSignal(interrupted: interrupted)
            }
            // The stub returns to the program with the result in RAX.
            sync.pointee.regs.rax = UInt64(bitPattern: result)
            vcpu.markDirty(regs: true)
            return nil
        }
    }

    /// True when the vCPU stopped inside the system-call stub, where a handler must not run
    /// (its calls would reuse the mailbox under a post the stub still waits on): the stub is
    /// told to exit to the signal port on its way back to the program, or the signal goes
    /// with the call it exits for. Only for a polled VM, the one whose stub uses the mailbox
    /// (a VM with threads is never polled, and its threads share the one mailbox page).
    func signalMustWaitForTheStub() -> Bool {
        let rip = vcpu.syncRegisters.pointee.regs.rip
        // In the buffered-write routine (any VM): a handler's own write would append where the
        // interrupted one is about to, and be overwritten by it. The routine ends at the
        // stub's return, which checks the word.
        let inRoutine = SystemArea.bufferedWriteRoutine.contains(rip)
        guard let mailbox = inRoutine ? (pollerMailbox ?? self.mailbox) : pollerMailbox,
              inRoutine || SystemArea.syscallStubBeforeSignalCheck.contains(rip) else { return false }
        // unsafe: the mailbox page is the VM's own and stays mapped, and the word is inside it (the guest may write it too: it only costs the guest an exit).
        (mailbox + Int(SyscallStub.Offset.signalCheck)).storeBytes(of: 1, as: UInt32.self)
        signalCheckRequested = true
        signalsHeldForTheStub += 1
        return true
    }

    /// Clears the mailbox's signal-check word once the signal it was set for goes with a call.
    func clearSignalCheck() {
        if signalCheckRequested { zeroSignalCheck() }
    }

    private func zeroSignalCheck() {
        signalCheckRequested = false
        // unsafe: `mailbox` is the VM's own mapped mailbox page (nil when it has none); the word is inside it.
        mailbox?.storeBytes(of: 0, toByteOffset: Int(SyscallStub.Offset.signalCheck), as: UInt32.self)
    }

    /// The stub stopped on its way back to the program because a signal waits: delivered as
    /// after a system call, RAX the call's result, RCX and R11 the return address and flags.
    /// With none to deliver (the guest can set the word itself) the stub just returns.
    func serveSignalCheck() -> ExitStatus? {
        zeroSignalCheck()  // set by the engine or, as far as it knows, by the guest itself
        if pendingSignal == nil, let signal = interrupts.takeSignal() { pendingSignal = signal }
        guard pendingSignal != nil else { return nil }
        var interrupted = vcpu.syncRegisters.pointee.regs
        interrupted.rip = interrupted.rcx
        interrupted.rflags = interrupted.r11 | X86.rflagsReserved
        return deliverPendingSignal(interrupted: interrupted)
    }

    /// Acts on the pending signal with the program stopped at `interrupted` (user code).
    /// Returns a status when the signal ends the program.
    func deliverPendingSignal(interrupted: kvm_regs) -> ExitStatus? {
        guard let signal = pendingSignal else { return nil }
        pendingSignal = nil
        switch disposition(of: signal) {
        case .ignore:
            return nil
        case .terminate:
            return .signaled(signal)
        case .handler(let handler):
            return enterHandler(of: signal, handler: handler, interrupted: interrupted) ? nil : .signaled(11)
        case .stop:
            return stopProcess(by: signal)
        }
    }

    func recordMissing(_ number: Int) {
        missingSyscalls[number, default: 0] += 1
    }
}

/// Requests from other threads — a kill, a signal for the program — taken by the vCPU
/// thread between exits; sleeping system calls wait on them so both cut a sleep short.
///
/// `@unchecked Sendable`: every `var` is read and written under `condition`; `wakeup` locks for itself.
final class Interrupts: @unchecked Sendable {
    private let condition = NSCondition()
    private var kill: Int32?
    /// Pending signals, bit n-1 for signal n: two sent at once are both kept.
    private var signals: UInt64 = 0
    /// The program's signal mask: blocked signals stay pending, and neither interrupt a
    /// wait nor are taken for delivery.
    private var blocked: UInt64 = 0
    /// Set by a futex wake of this thread (see `waitForFutexWake`).
    private var futexWoken = false
    /// Wakes a host wait of the vCPU thread (`waitUntilReady`) when a request comes.
    let wakeup = InterruptWakeup()

    func raiseKill(_ value: Int32) { update { $0.kill = value } }
    func raiseSignal(_ value: Int32) {
        guard (1...64).contains(value) else { return }
        update { $0.signals |= 1 << UInt64(value - 1) }
    }

    var pendingKill: Int32? { locked { kill } }
    var hasPending: Bool { locked { kill != nil || signals & ~blocked != 0 } }

    /// Set by the VM's own thread, the only one that waits on these requests.
    func setBlocked(_ mask: UInt64) { locked { blocked = mask } }
    /// Whether the mask holds `signal` (1...64) now.
    func blocks(_ signal: Int32) -> Bool { (1...64).contains(signal) && locked { blocked & (1 << UInt64(signal - 1)) != 0 } }

    /// Takes the lowest pending signal.
    func takeSignal() -> Int32? {
        locked {
            let deliverable = signals & ~blocked
            guard deliverable != 0 else { return nil }
            let bit = deliverable.trailingZeroBitCount
            signals &= ~(1 << UInt64(bit))
            return Int32(bit + 1)
        }
    }

    /// The longest one condition wait lasts: NSCondition turns its deadline into a timespec,
    /// which traps for a guest's sleep of 2^63 seconds.
    private static let longestWait: Double = 86_400

    /// Waits up to `seconds`, however long; true when a kill or a signal arrived first.
    func wait(seconds: Double) -> Bool {
        let start = Date()
        condition.lock()
        defer { condition.unlock() }
        while kill == nil && signals & ~blocked == 0 {
            let left = seconds - Date().timeIntervalSince(start)
            guard left > 0 else { break }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(left, Self.longestWait)))
        }
        return kill != nil || signals & ~blocked != 0
    }

    /// Ends a `waitForFutexWake` in progress or about to begin.
    func wakeFutex() { update { $0.futexWoken = true } }
    /// Before a futex wait: forgets an earlier wake.
    func clearFutexWake() { locked { futexWoken = false } }

    /// Waits for a futex wake, up to `seconds` (nil: no limit); true when a kill or an
    /// unblocked signal came (the wake, if one came too, is seen by the caller's table).
    func waitForFutexWake(seconds: Double?) -> Bool {
        let start = Date()
        condition.lock()
        defer { condition.unlock() }
        while !futexWoken && kill == nil && signals & ~blocked == 0 {
            let left = (seconds ?? Self.longestWait) - Date().timeIntervalSince(start)
            if seconds != nil, left <= 0 { break }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(max(left, 0.001), Self.longestWait)))
        }
        return kill != nil || signals & ~blocked != 0
    }

    private func update(_ change: (Interrupts) -> Void) {
        condition.lock()
        change(self)
        condition.broadcast()
        condition.unlock()
        wakeup.notify()
    }

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }
}

/// The thread running a VM's `run`, recorded so that another thread can interrupt its
/// KVM_RUN with the kick signal.
///
/// `@unchecked Sendable`: every `var` is read and written under `lock`.
final class ThreadSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var thread: pthread_t?
    /// The running host thread's CPU clock, its reading at `enter`, and the CPU seconds of
    /// earlier runs: the guest's time in KVM_RUN and the engine's on this thread.
    private var clock = clockid_t(0)
    private var atEnter = 0.0
    private var earlier = 0.0

    func enter() {
        _ = EngineSignals.installed
        // Threads of Dispatch and of test runners start with most signals blocked; the kick
        // must get through to this one.
        var kick = sigset_t()
        sigemptyset(&kick)
        sigaddset(&kick, EngineSignals.vcpuKick)
        pthread_sigmask(SIG_UNBLOCK, &kick, nil)
        var clock = clockid_t(0)
        let hasClock = pthread_getcpuclockid(pthread_self(), &clock) == 0
        let now = hasClock ? Self.seconds(clock) : 0
        lock.withLock {
            thread = pthread_self()
            self.clock = hasClock ? clock : 0
            atEnter = now
        }
    }

    func leave() {
        lock.withLock {
            if thread != nil, clock != 0 { earlier += Self.seconds(clock) - atEnter }
            thread = nil
        }
    }

    /// CPU seconds the host threads that ran this guest thread have used for it so far.
    var cpuSeconds: Double {
        lock.withLock { earlier + (thread != nil && clock != 0 ? Self.seconds(clock) - atEnter : 0) }
    }

    private static func seconds(_ clock: clockid_t) -> Double {
        var time = timespec()
        guard clock_gettime(clock, &time) == 0 else { return 0 }
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    func kick() {
        lock.withLock {
            if let thread { pthread_kill(thread, EngineSignals.vcpuKick) }
        }
    }
}
