import CShims
import Foundation
import HostSystem
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// Everything a child needs from a warm parent stopped at its fork point: the CPU state
/// (general, segment and control registers, XSAVE, XCRs, MSRs), the engine-side process
/// state (descriptor table, memory map, brk, signal dispositions, cwd), and the parent's
/// guest memory, which no one writes again — children map it copy-on-write.
///
/// `@unchecked Sendable`: every field is a `let` set in init; the parent's memory, `space` and `files` it holds are
/// only read from then on (each child copies them), and `childWrites` locks for itself.
public final class ForkPoint: @unchecked Sendable {
    /// Where the parent stopped.
    public enum Kind: Sendable, Equatable {
        /// At its entry point, program loaded: each child gets its own argv, envp and AT_RANDOM.
        case entry
        /// About to read standard input for the first time: each child reads its own.
        case firstStandardInputRead
        /// At the program's main, its C library started: each child gets its own argv and
        /// environment there (see `ChildArgumentRoom`), and skips the start-up.
        case main
    }

    public let kind: Kind
    public let configuration: ProcessVMConfiguration
    public let memory: GuestMemory
    /// The parent memfd's holes, found once: children map them anonymous.
    let memoryHoles: [Range<Int>]
    let space: AddressSpace
    let files: GuestFiles
    let registers: kvm_regs
    let specialRegisters: kvm_sregs
    let xsave: kvm_xsave
    let xcrs: kvm_xcrs
    let modelSpecificRegisters: [(index: UInt32, value: UInt64)]
    let cpuid: CPUIDTable
    let identity: GuestIdentity
    let signals: SignalState
    let umask: UInt32
    let programName: [UInt8]
    let executablePath: [UInt8]
    let exceptionStackFrame: UInt64
    let entry: ProcessVM.EntryState?
    /// Where a main fork point's children get their own arguments.
    let childArgumentRoom: ChildArgumentRoom?
    /// glibc's cached thread id (set_tid_address's address), where each child's pid goes.
    let threadIDAddress: UInt64?
    /// The pages in the warm-up list (see `SystemArea.warmUpRoutine`) by the frame each maps
    /// (in the parent's tables, which a reused VM's restore brings back), with whether the
    /// program may write it: a restore looks up the frames whose translations went, rather
    /// than walking the tables for every listed page (hundreds, at every return).
    let warmUpPagesByFrame: [UInt64: [(page: UInt64, writable: Bool)]]
    /// The pages its children write, learned from the first that came back, for VMs made
    /// ready ahead of time to write first.
    let childWrites = ChildWriteProfile()
    /// Whether `childWrites` has its first sample (a VM made ready before then may take the
    /// writes ahead: `PreparedVM.warmUpWrites`).
    public var knowsChildWrites: Bool { childWrites.current != nil }
    /// What each child gets afresh of the start-up secrets it would share with the parent
    /// (the canary, pointer guard and AT_RANDOM of a stdin fork point).
    public let rerandomisation: StartupRerandomisation

    static let capturedMSRs: [UInt32] = [
        X86.MSR.star, X86.MSR.lstar, X86.MSR.cstar, X86.MSR.syscallMask, X86.MSR.fsBase, X86.MSR.gsBase, X86.MSR.kernelGSBase,
    ]

    init(kind: Kind, parent: ProcessVM, cpuid: CPUIDTable, warmUpPages: [UInt64]) throws(GuestError) {
        self.kind = kind
        configuration = parent.configuration
        memory = parent.memory
        do throws(SystemError) {
            // Frames the parent unmapped become free for its children only once no
            // translation of them survives.
            try parent.space.dropStaleTranslations()
            memoryHoles = try parent.memory.holes()
        } catch {
            throw .system(error)
        }
        space = parent.space
        var byFrame: [UInt64: [(page: UInt64, writable: Bool)]] = [:]
        for page in warmUpPages {
            guard let (frame, permissions) = parent.space.tables.translate(page) else { continue }
            byFrame[frame, default: []].append((page, permissions.contains(.write)))
        }
        warmUpPagesByFrame = byFrame
        files = parent.files
        do {
            var registers = try parent.vcpu.registers()
            if kind == .firstStandardInputRead {
                // The parent stopped at the stub's `out` with the call unserved; a child
                // executes that `out` again (RAX still holds the call number) and so
                // serves the read itself, from its own standard input.
                registers.rip = SystemArea.syscallExit
            }
            self.registers = registers
            specialRegisters = try parent.vcpu.specialRegisters()
            xsave = try parent.vcpu.xsave()
            xcrs = try parent.vcpu.xcrs()
            let msrs = try parent.vcpu.msrs(Self.capturedMSRs)
            modelSpecificRegisters = Self.capturedMSRs.compactMap { index in msrs[index].map { (index, $0) } }
        } catch {
            throw .kvm(error)
        }
        self.cpuid = cpuid
        identity = parent.identity
        signals = parent.signals
        umask = parent.umask
        programName = parent.programName
        executablePath = parent.executablePath
        exceptionStackFrame = parent.exceptionStackFrame
        entry = kind == .entry ? parent.entry : nil
        childArgumentRoom = kind == .main ? parent.childArgumentRoom : nil
        threadIDAddress = parent.threadIDAddress
        if kind == .entry {
            rerandomisation = .notNeeded
        } else {
            let started = ContinuousClock.now
            var found = StartupRerandomisation.find(in: parent.space, holes: memoryHoles, registers: registers,
                                                    fsBase: specialRegisters.fs.base, parentRandom: parent.startupRandom)
            found.searchTime = ContinuousClock.now - started
            found.sharedRandomBytes = parent.randomBytesDrawn
            rerandomisation = found
        }
    }
}

extension ProcessVM {
    /// Turns a freshly loaded program into a warm parent stopped at `kind`. For
    /// `.firstStandardInputRead` the program runs (with this VM's streams) until it first
    /// reads standard input; nil if it ended before that. For `.main` it runs until its main,
    /// within `startupLimit`, and throws `.noMainForkPoint` when it cannot get there. The parent's VM is closed; its
    /// memory lives on in the fork point.
    public static func makeForkPoint(system: KVMSystem, configuration: ProcessVMConfiguration, executable: String,
                                     arguments: [String], environment: [String], kind: ForkPoint.Kind,
                                     streams: StandardStreams = StandardStreams(),
                                     startupLimit: Duration = ProcessVM.startupLimit) throws(GuestError) -> ForkPoint? {
        let parent = try ProcessVM(system: system, configuration: configuration, executable: executable,
                                   arguments: arguments, environment: environment, streams: streams,
                                   reservesChildArguments: kind == .main)
        let cpuid: CPUIDTable
        do { cpuid = try system.supportedCPUID() } catch { throw .kvm(error) }
        switch kind {
        case .entry:
            break
        case .firstStandardInputRead:
            parent.stopsAtFirstStandardInputRead = true
            guard case .atFirstStandardInputRead = try parent.runUntilStop() else { return nil }
        case .main:
            try parent.placeMainBreakpoint()
            try parent.runUntilMain(limit: startupLimit)
        }
        let warmUpPages = try parent.writeWarmUpList()
        try parent.writeVectorState()
        // A point whose children keep their parent's start-up secrets says so in its
        // `rerandomisation`; its maker reports it (the engine's log, `vmfork fork`'s report).
        return try ForkPoint(kind: kind, parent: parent, cpuid: cpuid, warmUpPages: warmUpPages)
    }

    /// Writes the parent's vector state where reused VMs' children load it (`SystemArea.vectorState`).
    private func writeVectorState() throws(GuestError) {
        var state: kvm_xsave
        do { state = try vcpu.xsave() } catch { throw .kvm(error) }
        // unsafe: `region` is kvm_xsave's 1024 UInt32s (4096 contiguous bytes) of a local copy; loaderWrite copies them during the call.
        withUnsafeBytes(of: &state.region) { space.loaderWrite(SystemArea.vectorState, $0) }
    }

    /// Lists the pages a child will likely touch — the program image, heap and mappings the
    /// parent has, and the top of its stack — for prepared VMs to read ahead; returns them.
    private func writeWarmUpList() throws(GuestError) -> [UInt64] {
        let capacity = Int(SystemArea.warmUpListPages) * GuestMemory.pageSize / 8 - 1
        let stackTop = AddressSpace.userTop
        let stackBottom = stackTop - UInt64(configuration.stackBytes)
        var pages: [UInt64] = []
        for region in space.regions {
            let start = region.start >= stackBottom ? max(region.start, stackTop - 8 * AddressSpace.pageSize) : region.start
            var page = start
            while page < region.end && pages.count < capacity {
                if space.permissions(at: page)?.contains(.read) == true { pages.append(page) }
                page += AddressSpace.pageSize
            }
        }
        pages.append(SystemArea.stubPage)
        pages = Array(pages.prefix(capacity))
        for index in 0..<SystemArea.warmUpListPages {
            _ = try space.mapSystemPage(at: SystemArea.warmUpList + index * AddressSpace.pageSize, [.read, .user])
        }
        // unsafe: loaderWrite copies the list's bytes during the call, only into mapped guest pages (the list's pages, mapped just above).
        SystemArea.warmUpListBytes(pages).withUnsafeBytes { space.loaderWrite(SystemArea.warmUpList, $0) }
        return pages
    }

    /// A child of `forkPoint` in `prepared`, a VM made ready for it ahead of time: it shares
    /// the parent's memory copy-on-write, copies its process state, and gets its own
    /// identity and streams — and, for an entry-point parent, its own argv and environment.
    public convenience init(forking forkPoint: ForkPoint, into prepared: PreparedVM, identity: GuestIdentity,
                            arguments: [String]?, environment: [String]?, streams: StandardStreams,
                            rootFileSystem: (any GuestRootFileSystem)? = nil) throws(GuestError) {
        precondition(prepared.forkPoint === forkPoint, "a prepared VM serves the fork point it was made for")
        let files: GuestFiles
        do throws(SystemError) {
            files = try forkPoint.files.copyForChildContainer(standardStreams: (streams.input, streams.output, streams.error), rootFileSystem: rootFileSystem)
            files.attachLogTimes(output: streams.outputTimes, error: streams.errorTimes)
            files.attachTerminal(streams.terminal)
        } catch {
            throw .system(error)
        }
        let space = AddressSpace(copyOf: forkPoint.space, memory: prepared.memory)
        self.init(configuration: forkPoint.configuration, vm: prepared.vm, vcpu: prepared.vcpu, memory: prepared.memory,
                  space: space, files: files, identity: identity, programName: forkPoint.programName,
                  exceptionStackFrame: forkPoint.exceptionStackFrame, entry: forkPoint.entry)
        signals = forkPoint.signals
        umask = forkPoint.umask
        forkedFrom = forkPoint
        executablePath = forkPoint.executablePath
        // The registers go in through the synced area, loaded by KVM on the first entry.
        let sync = vcpu.syncRegisters
        sync.pointee.regs = forkPoint.registers
        if let secrets = prepared.startupSecrets { forkPoint.rerandomisation.apply(secrets, to: &sync.pointee.regs) }
        sync.pointee.sregs = forkPoint.specialRegisters
        switch forkPoint.kind {
        case .entry:
            sync.pointee.regs.rsp = try writeInitialStack(arguments: arguments ?? [], environment: environment ?? [])
        case .main:
            guard let room = forkPoint.childArgumentRoom else { preconditionFailure("a main fork point has room for its children's arguments") }
            let main = try room.write(arguments: arguments ?? [], environment: environment ?? [], into: space)
            sync.pointee.regs.rdi = main.argc
            sync.pointee.regs.rsi = main.argv
            sync.pointee.regs.rdx = main.envp
        case .firstStandardInputRead:
            break
        }
        // As the kernel's fork does for CLONE_CHILD_SETTID: the C library's cached thread id
        // is the child's own (a program that unmapped it gets nothing written).
        // unsafe: the pid's four bytes are only copied into a new array, inside the closure.
        if let address = forkPoint.threadIDAddress { space.write(address, withUnsafeBytes(of: identity.pid.littleEndian) { Array($0) }) }
        // A reused VM holds its last child's vector state: the child loads the fork point's
        // itself before its first instruction (`SystemArea.vectorStateRoutine`).
        if prepared.isReused {
            let regs = sync.pointee.regs
            // unsafe: three UInt64s, 24 contiguous little-endian bytes alive for the call (no array made on the fork path); loaderWrite copies them.
            withUnsafeBytes(of: (regs.rax.littleEndian, regs.rdx.littleEndian, regs.rip.littleEndian)) { space.loaderWrite(SystemArea.entryScratch, $0) }
            sync.pointee.regs.rip = SystemArea.vectorStateRoutine
        }
        // The special registers too, so that a reused VM's restore needs no ioctl for them:
        // KVM loads both on the child's first entry, inside its KVM_RUN.
        vcpu.markDirty(regs: true, sregs: true)
    }
}

/// A VM made ready for a fork off the critical path — created afresh (memory slot first,
/// then the vCPU, CPUID and every register of the fork point set), or reused from a finished
/// child — so that a fork only writes the child's stack and general registers before it runs.
///
/// `@unchecked Sendable`: every field but `writesWarmed` is a `let`; the VM is used by one thread at a time (a fork, a
/// pool queue), and `warmUpWrites` sets `writesWarmed` only on a VM `VMPool` took out of `ready` under its `condition`.
public final class PreparedVM: @unchecked Sendable {
    public let forkPoint: ForkPoint
    let vm: VirtualMachine
    let vcpu: VCPU
    public let memory: GuestMemory
    /// Whether this VM served an earlier child (see `init(reusing:)`).
    public let isReused: Bool
    /// Whether this VM holds writable translations of its own copies of the pages children
    /// write: a reused VM's last child made them, a new one made them ahead with the fork
    /// point's `childWrites` (`warmUpWrites`). Changed only by the thread holding the VM.
    public private(set) var writesWarmed: Bool
    /// The canary, pointer guard and AT_RANDOM drawn for this VM's child and already written
    /// into its memory (nil for an entry-point parent's, whose child draws its own at start-up).
    let startupSecrets: StartupSecrets?

    /// The most pages a finished child may own for its VM to be reused: restoring more costs
    /// more than a new VM, and a pooled VM would hold them all.
    public static let reusablePrivatePages = 1024

    private init(reusing forkPoint: ForkPoint, vm: VirtualMachine, vcpu: VCPU, memory: GuestMemory, startupSecrets: StartupSecrets?) {
        self.forkPoint = forkPoint
        self.vm = vm
        self.vcpu = vcpu
        self.memory = memory
        self.startupSecrets = startupSecrets
        isReused = true
        writesWarmed = true
    }

    /// With `readAhead` (a pool filling in the background) the VM is entered once to read
    /// the parent's pages ahead; a fork that found its pool empty skips that and lets its
    /// child pay as it goes.
    public init(system: KVMSystem, forkPoint: ForkPoint, readAhead: Bool) throws(GuestError) {
        self.forkPoint = forkPoint
        isReused = false
        let writes = readAhead ? forkPoint.childWrites.current : nil
        let lists = writes == nil ? (SystemArea.warmUpList, 0) : Self.writesThenParentsPages
        writesWarmed = writes != nil
        do throws(SystemError) {
            memory = try GuestMemory(copyOnWriteOf: forkPoint.memory, holes: forkPoint.memoryHoles)
            // The pages children write, copied before the VM exists, and the warm-up list
            // that writes them (see `ChildWriteProfile`).
            if let writes { try Self.stage(writes, in: memory, forkPoint: forkPoint) }
        } catch {
            throw .system(error)
        }
        // The child's own secrets, written before the VM exists: its pages are copied once by
        // the host, off the fork's path, and never behind a shadow translation.
        startupSecrets = forkPoint.rerandomisation.apply(to: memory)
        do throws(KVMError) {
            vm = try system.createVM()
            try vm.setMemoryRegion(slot: ProcessVM.memorySlot, guestPhysical: 0, size: memory.size, host: memory.mapping.base)
            vcpu = try vm.createVCPU()
            try vcpu.setCPUID(forkPoint.cpuid)
            try vcpu.setSpecialRegisters(forkPoint.specialRegisters)
            try vcpu.setMSRs(forkPoint.modelSpecificRegisters)
            try vcpu.setXCRs(forkPoint.xcrs)
            try vcpu.setXSave(forkPoint.xsave)
            try vcpu.setRegisters(forkPoint.registers)
            vcpu.enableSyncRegisters()
            if readAhead { try Self.readAhead(vcpu, for: forkPoint, lists: lists) }
        } catch {
            throw .kvm(error)
        }
    }

    /// Entering a new vCPU the first time, and each first touch of a page, costs the child
    /// dearly under PVM (shadow paging). Pays both ahead of the fork: runs the warm-up routine
    /// in user mode over `lists` — by default the parent's listed pages (a page whose
    /// translation KVM still holds costs nothing) — then loads the fork point's special
    /// registers again; the fork writes the general ones.
    private static func readAhead(_ vcpu: VCPU, for forkPoint: ForkPoint,
                                  lists: (first: UInt64, then: UInt64) = (SystemArea.warmUpList, 0)) throws(KVMError) {
        var warmUp = forkPoint.registers
        warmUp.rip = SystemArea.warmUpRoutine
        warmUp.rsi = lists.first
        warmUp.rdi = lists.then
        try vcpu.setRegisters(warmUp)
        var userMode = forkPoint.specialRegisters
        userMode.cs = CPUSetup.segment(selector: X86.Selector.userCode, code: true)
        userMode.ss = CPUSetup.segment(selector: X86.Selector.userData, code: false)
        try vcpu.setSpecialRegisters(userMode)
        guard case .io(SystemArea.syscallPort, true, _, _, _) = try vcpu.run() else {
            throw KVMError.system(SystemError(call: "KVM_RUN (warm-up of a prepared VM)", errno: EIO))
        }
        try vcpu.setSpecialRegisters(forkPoint.specialRegisters)
    }

    /// The warm-up's lists for a VM staged with the children's writes (`stage`): those first
    /// (so that each page is translated writable at its first touch), then the parent's.
    private static let writesThenParentsPages = (SystemArea.warmUpOwnList, SystemArea.warmUpList)

    /// Takes the first writes of the fork point's children ahead, for a VM made before they
    /// were learned: its own copies of those pages, and writable translations of them. For the
    /// pool, off the forks' path, on a VM no fork holds.
    public func warmUpWrites() throws(GuestError) {
        guard !writesWarmed, let writes = forkPoint.childWrites.current else { return }
        do throws(SystemError) {
            try Self.stage(writes, in: memory, forkPoint: forkPoint)
        } catch {
            throw .system(error)
        }
        do throws(KVMError) {
            try Self.readAhead(vcpu, for: forkPoint, lists: Self.writesThenParentsPages)
        } catch {
            throw .kvm(error)
        }
        writesWarmed = true
    }

    /// Copies the written pages' frames (and the mailbox page's) on write from the host,
    /// contents unchanged (a translation KVM held of the shared page goes), and writes the
    /// list of the written pages into the VM's mailbox (`SystemArea.warmUpOwnList`).
    private static func stage(_ writes: ChildWriteProfile.Learned, in memory: GuestMemory, forkPoint: ForkPoint) throws(SystemError) {
        guard let (mailbox, _) = forkPoint.space.tables.translate(SystemArea.mailbox) else { preconditionFailure("a fork point maps its mailbox") }
        try memory.populateForWrite(frames: writes.frames + [mailbox])
        let offset = Int(SystemArea.warmUpOwnList - SystemArea.mailbox)
        guard let target = memory.pointer(physical: mailbox + UInt64(offset), length: writes.list.count) else {
            preconditionFailure("the mailbox lies in guest memory")
        }
        // unsafe: `pointer` checked these list.count bytes lie in guest memory; at most warmUpOwnListCapacity + 1 words, they end before the output buffer.
        writes.list.withUnsafeBytes { target.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }
}

extension PreparedVM {
    /// The VM of a finished fork child, made ready for its next sibling: the child's memory is
    /// restored to the parent's content in place, and every register of the fork point set
    /// again. Nothing is unmapped, so the shadow translations the child's VM built (its reads
    /// and its copies on write) serve the next child, which runs without most of the faults a
    /// new VM takes. Nil when the child did not end cleanly (a triple fault or an unexpected
    /// exit leaves the vCPU in an unknown state) or owns more than `reusablePrivatePages`.
    public convenience init?(reusing child: ProcessVM) throws(GuestError) {
        // A child that made threads has vCPUs beyond its first: its VM is not reused.
        guard let forkPoint = child.forkedFrom, child.vcpuStateKnown, !child.hasExeced, !child.threads.everHadThreads else { return nil }
        let restored: RestoredFrames
        do throws(SystemError) {
            guard let frames = try child.memory.restoreOrigin(maximumPrivatePages: Self.reusablePrivatePages,
                                                              retiredFrames: child.space.retiredFrames) else { return nil }
            restored = frames
        } catch {
            throw .system(error)
        }
        forkPoint.childWrites.record(written: restored.copies, forkPoint: forkPoint)
        // The child's tables are the parent's again, and KVM still holds the translations the
        // child used, except where the engine dropped them (glibc's RELRO pages, which the
        // child's mprotect narrowed, for one). Those pages are read ahead again, and written
        // back where writable and owned, which makes their translations writable too.
        var readAgain: [UInt64] = []
        for frame in restored.invalidated {
            for (page, writable) in forkPoint.warmUpPagesByFrame[frame] ?? [] {
                readAgain.append(writable && restored.owned.contains(frame) ? page | SystemArea.warmUpWriteBack : page)
            }
        }
        // The next child's own secrets, written in place over the restored parent's: the pages
        // are this VM's own (the last child's were written there too), so the shadow
        // translations of them stay valid.
        let startupSecrets = forkPoint.rerandomisation.apply(to: child.memory)
        let vcpu = child.vcpu
        do throws(KVMError) {
            vcpu.discardSyncedChanges()
            vcpu.requestImmediateExit(false)
            // Only what a child can change is set again, and with no ioctl (each costing ~10 µs
            // with 22 µs exits, ~30 µs with 130 µs exits, the vCPU's state switched in and out
            // around it): the special registers (segments, their bases: FS and GS too) go in
            // with the fork's general ones, through the synced area on the child's first
            // entry, and the child loads the FPU/vector state itself first
            // (`init(forking:into:)`, `SystemArea.vectorStateRoutine`). Not the MSRs
            // captured (STAR, LSTAR, CSTAR, SFMASK, the GS and FS bases and the kernel's GS
            // base) nor XCR0: only privileged code writes them, and a child has none — its
            // code runs in user mode, and in PVM's supervisor mode only the engine's
            // read-only system-call stub runs, which writes neither; the FS and GS bases are
            // the segments' bases, set with the special registers. Not the general registers:
            // the fork writes them all through the synced area.
            if !readAgain.isEmpty {
                // In the VM's own mailbox when the list fits there, else over its copy of the
                // fork point's list (two more pages of its own).
                let list = readAgain.count <= SystemArea.warmUpOwnListCapacity ? SystemArea.warmUpOwnList : SystemArea.warmUpList
                // unsafe: loaderWrite copies the list during the call into mapped guest pages; readAgain is a subset of the warm-up list, so it fits its pages.
                SystemArea.warmUpListBytes(readAgain).withUnsafeBytes { child.space.loaderWrite(list, $0) }
                try Self.readAhead(vcpu, for: forkPoint, lists: (list, 0))
            }
        } catch {
            throw .kvm(error)
        }
        self.init(reusing: forkPoint, vm: child.vm, vcpu: vcpu, memory: child.memory, startupSecrets: startupSecrets)
    }
}
