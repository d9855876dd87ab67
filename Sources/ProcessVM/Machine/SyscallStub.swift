/// The SYSCALL target, assembled once. `arch_prctl(ARCH_SET_FS, address)` (every glibc
/// program's first call, setting up its thread pointer) is served by the stub itself with
/// `wrfsbase`, which CR4.FSGSBASE allows at any privilege, as Linux allows it to programs;
/// an address at or above the user range's top goes to the engine, which refuses it. Two
/// ways through it for the rest:
///
/// - Polled (no exit): when a poller serves this VM (mailbox word `pollerActive` set), the
///   stub posts the call to the mailbox page and spins; the engine's poller thread serves it
///   and posts the result. If no answer comes within the spin budget, or the poller stops
///   watching the VM meanwhile, or hands the call back (calls that need the vCPU or may
///   block), the stub takes the exit path.
/// - Exit: `out` to the system-call port; the engine serves the call on the vCPU thread and
///   leaves the result in RAX.
///
/// Either way the stub returns to the program itself with `iretq` (SYSRET faults under PVM):
/// RCX and R11 hold the return RIP and RFLAGS as SYSCALL left them (and still do after it, as
/// Linux leaves them), and the iretq frame is built below the 128-byte red zone so no byte of
/// the program's stack changes. A call the loader rewrote (`SyscallRewriter`) enters from user
/// mode with RCX and R11 set the same way, and its `iretq` returns within user mode.
enum SyscallStub {
    /// Mailbox states (the first word of the mailbox page).
    enum State: UInt32 {
        case idle = 0, posted = 1, done = 2, withdrawn = 3, taken = 4, handedBack = 5
    }

    /// Mailbox layout: state, poller-active flag, RAX and the six argument registers, the
    /// saved RCX, the result.
    enum Offset {
        static let state: UInt64 = 0
        static let pollerActive: UInt64 = 4
        static let number: UInt64 = 8
        static let arguments: UInt64 = 16
        static let savedRCX: UInt64 = 64
        static let result: UInt64 = 72
        /// Bumped by the poller at each turn of its loop while it watches this VM.
        static let heartbeat: UInt64 = 80
        /// The heartbeat the stub last saw (the stub's own scratch word).
        static let seenHeartbeat: UInt64 = 84
        /// Set by the engine when a signal is waiting for the program while its vCPU is
        /// inside the stub: on its way back to the program the stub exits to the signal port
        /// so that the signal is delivered there, as Linux delivers one on the return to user
        /// mode. (A handler must not run in the stub: its own calls would reuse the mailbox
        /// under the interrupted post, whose wait would then never end.)
        static let signalCheck: UInt64 = 88
    }

    /// Spins of `pause` before the stub stops waiting for the poller and exits (roughly
    /// 100 µs). Shorter makes the first call after a fork exit more often, while the poller
    /// is still waking (1,500 cost fork → echo ~15 µs at p50); longer wastes more of the
    /// guest's time when the poller has no core (2 cores, a refill running).
    static let spinBudget: UInt32 = 4000
    /// Spins between two looks at the poller's heartbeat: when it has not moved meanwhile,
    /// the poller is off its core (another thread took it) or serving a long call, and the
    /// stub takes the exit path at once instead of spinning out its budget. 64 `pause`s are
    /// 1-10 µs by CPU, a few turns of the poller's loop, and well under the cost of an exit
    /// on machines where exits are dear (20-60 µs).
    static let heartbeatInterval: UInt32 = 64

    /// The assembled code, the offset of its exiting `out` (a stopped parent's RIP), and the
    /// end of its signal check: before it, the stub may still use the mailbox or check for
    /// a waiting signal; after it, it only returns to the program, which is safe to interrupt.
    /// Also: `returnOffset`, where a call answered in the guest returns to the program (the
    /// signal check, then `iretq`), and `afterWriteOffset` and `afterPrctlOffset`, where the
    /// buffered-write routine (`OutputBuffer`) and the program-name routine
    /// (`ProgramNameRoutine`) send a call they do not answer.
    static let (code, exitOffset, signalCheckEnd, returnOffset, afterWriteOffset, afterPrctlOffset): ([UInt8], Int, Int, Int, Int, Int) = assemble()

    private static func assemble() -> ([UInt8], Int, Int, Int, Int, Int) {
        var a = StubAssembler()
        let mailbox = SystemArea.mailbox
        func at(_ offset: UInt64) -> UInt32 { UInt32(mailbox + offset) }
        let archPrctl: UInt32 = 158, setFS: UInt32 = 0x1002, write: UInt32 = 1, prctl: UInt32 = 157
        // write(2) and prctl(2): the buffered-write and program-name routines answer them when
        // they may (they lie elsewhere in the stub page), else come back here.
        a.labels["bufferedWrite"] = Int(OutputBuffer.routine - SystemArea.stubPage)
        a.labels["programName"] = Int(ProgramNameRoutine.address - SystemArea.stubPage)
        a.emit([0x83, 0xF8, UInt8(write)]) // cmp eax, SYS_write
        a.jump(.equal, to: "bufferedWrite")
        a.label("afterWrite")
        a.emit([0x3D] + a.le(prctl)) // cmp eax, SYS_prctl
        a.jump(.equal, to: "programName")
        a.label("afterPrctl")
        a.emit([0x3D] + a.le(archPrctl)) // cmp eax, SYS_arch_prctl
        a.jump(.notEqual, to: "general")
        a.emit([0x81, 0xFF] + a.le(setFS)) // cmp edi, ARCH_SET_FS
        a.jump(.notEqual, to: "general")
        a.emit([0x48, 0xB8] + a.le(AddressSpace.userTop)) // mov rax, userTop
        a.emit([0x48, 0x39, 0xC6]) // cmp rsi, rax
        a.jump(.aboveOrEqual, to: "refused")
        a.emit([0xF3, 0x48, 0x0F, 0xAE, 0xD6]) // wrfsbase rsi
        a.emit([0x31, 0xC0]) // xor eax, eax
        a.jump(.always, to: "return")
        a.label("refused")
        a.emit([0xB8] + a.le(archPrctl)) // mov eax, SYS_arch_prctl
        a.label("general")
        // No poller for this VM: exit straight away.
        a.emit([0x83, 0x3C, 0x25] + a.le(at(Offset.pollerActive)) + [0x00]) // cmp dword [pollerActive], 0
        a.jump(.equal, to: "exit")
        // Post the call.
        let stores: [[UInt8]] = [
            [0x48, 0x89, 0x04, 0x25], [0x48, 0x89, 0x3C, 0x25], [0x48, 0x89, 0x34, 0x25], [0x48, 0x89, 0x14, 0x25],
            [0x4C, 0x89, 0x14, 0x25], [0x4C, 0x89, 0x04, 0x25], [0x4C, 0x89, 0x0C, 0x25],
        ] // rax, rdi, rsi, rdx, r10, r8, r9
        for (index, store) in stores.enumerated() { a.emit(store + a.le(at(Offset.number + UInt64(index * 8)))) }
        a.emit([0x48, 0x89, 0x0C, 0x25] + a.le(at(Offset.savedRCX))) // mov [savedRCX], rcx
        a.emit([0x8B, 0x04, 0x25] + a.le(at(Offset.heartbeat))) // mov eax, [heartbeat]
        a.emit([0x89, 0x04, 0x25] + a.le(at(Offset.seenHeartbeat))) // mov [seenHeartbeat], eax
        a.emit([0xC7, 0x04, 0x25] + a.le(at(Offset.state)) + a.le(State.posted.rawValue)) // mov dword [state], posted
        a.emit([0xB9] + a.le(spinBudget)) // mov ecx, budget
        a.label("spin")
        a.waitStep(state: at(Offset.state))
        // The poller stopped watching this VM: it may never come.
        a.emit([0x83, 0x3C, 0x25] + a.le(at(Offset.pollerActive)) + [0x00]) // cmp dword [pollerActive], 0
        a.jump(.equal, to: "giveUp")
        // Every `heartbeatInterval` spins: has the poller turned its loop since the last look?
        a.emit([0xF7, 0xC1] + a.le(heartbeatInterval - 1)) // test ecx, interval - 1
        a.jump(.notEqual, to: "count")
        a.emit([0x8B, 0x04, 0x25] + a.le(at(Offset.heartbeat))) // mov eax, [heartbeat]
        a.emit([0x3B, 0x04, 0x25] + a.le(at(Offset.seenHeartbeat))) // cmp eax, [seenHeartbeat]
        a.jump(.equal, to: "giveUp")
        a.emit([0x89, 0x04, 0x25] + a.le(at(Offset.seenHeartbeat))) // mov [seenHeartbeat], eax
        a.label("count")
        a.emit([0xFF, 0xC9]) // dec ecx
        a.jump(.notEqual, to: "spin")
        // Out of patience: withdraw the post unless the poller has taken it.
        a.label("giveUp")
        a.emit([0xB8] + a.le(State.posted.rawValue)) // mov eax, posted
        a.emit([0xB9] + a.le(State.withdrawn.rawValue)) // mov ecx, withdrawn
        a.emit([0xF0, 0x0F, 0xB1, 0x0C, 0x25] + a.le(at(Offset.state))) // lock cmpxchg [state], ecx
        a.jump(.equal, to: "handedBack")
        a.label("wait")
        a.waitStep(state: at(Offset.state))
        a.jump(.always, to: "wait")
        a.label("handedBack")
        a.emit([0xC7, 0x04, 0x25] + a.le(at(Offset.state)) + a.le(State.idle.rawValue))
        a.emit([0x48, 0x8B, 0x04, 0x25] + a.le(at(Offset.number))) // mov rax, [number]
        a.emit([0x48, 0x8B, 0x0C, 0x25] + a.le(at(Offset.savedRCX))) // mov rcx, [savedRCX]
        a.label("exit")
        let exitOffset = a.bytes.count
        a.emit([0xE6, UInt8(SystemArea.syscallPort)]) // out 0xF0, al
        a.jump(.always, to: "return")
        a.label("done")
        a.emit([0x48, 0x8B, 0x04, 0x25] + a.le(at(Offset.result))) // mov rax, [result]
        a.emit([0x48, 0x8B, 0x0C, 0x25] + a.le(at(Offset.savedRCX))) // mov rcx, [savedRCX]
        a.emit([0xC7, 0x04, 0x25] + a.le(at(Offset.state)) + a.le(State.idle.rawValue))
        a.label("return")
        // A signal waits (the engine was told while the vCPU was in here): exit so that it
        // is delivered with the program's registers, RCX and R11 as SYSCALL left them.
        a.emit([0x83, 0x3C, 0x25] + a.le(at(Offset.signalCheck)) + [0x00]) // cmp dword [signalCheck], 0
        a.jump(.equal, to: "returnNow")
        a.emit([0xE6, UInt8(SystemArea.signalCheckPort)]) // out 0xF2, al
        a.label("returnNow")
        let signalCheckEnd = a.bytes.count
        a.emit([
            0x48, 0x81, 0xEC, 0x80, 0, 0, 0, // sub rsp, 128
            0x51, // push rcx (return RIP)
            0x48, 0x8D, 0x8C, 0x24, 0x88, 0, 0, 0, // lea rcx, [rsp+136] (the program's RSP)
            0x6A, UInt8(X86.Selector.userData), // push SS
            0x51, // push rcx (RSP)
            0x41, 0x53, // push r11 (RFLAGS)
            0x6A, UInt8(X86.Selector.userCode), // push CS
            0xFF, 0x74, 0x24, 0x20, // push qword [rsp+32] (RIP)
            0x48, 0x8B, 0x0C, 0x24, // mov rcx, [rsp]: RCX holds the return RIP, as after Linux's SYSRET
            0x48, 0xCF, // iretq
        ])
        return (a.finish(), exitOffset, signalCheckEnd, a.labels["return"]!, a.labels["afterWrite"]!, a.labels["afterPrctl"]!)
    }
}

extension StubAssembler {
    /// pause; then go to "done" or "handedBack" when the poller has answered.
    mutating func waitStep(state: UInt32) {
        emit([0xF3, 0x90]) // pause
        emit([0x8B, 0x04, 0x25] + le(state)) // mov eax, [state]
        emit([0x83, 0xF8, UInt8(SyscallStub.State.done.rawValue)]) // cmp eax, done
        jump(.equal, to: "done")
        emit([0x83, 0xF8, UInt8(SyscallStub.State.handedBack.rawValue)]) // cmp eax, handedBack
        jump(.equal, to: "handedBack")
    }
}
