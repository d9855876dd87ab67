import Foundation
import KVM

/// A warm parent stopped at its program's main: its C library's start-up (CPU feature
/// probing, TLS, RELRO, stdio) ran once, in the parent, so that its children start where the
/// program's own code does. The engine finds main from the entry point (`MainLocator`), puts
/// an `int3` there, runs the parent until it traps, puts the byte back and takes the parent's
/// state as it was at main's first instruction, in user mode.
extension ProcessVM {
    /// How long a parent's start-up may run, by default, before the engine gives up on
    /// reaching main.
    public static let startupLimit: Duration = .seconds(10)

    /// Finds main and puts the breakpoint there; the program must not have run yet.
    func placeMainBreakpoint() throws(GuestError) {
        guard let entry else { preconditionFailure("the program has already started") }
        guard childArgumentRoom != nil else { preconditionFailure("a main fork point's parent leaves room for its children's arguments") }
        let start = entry.program.entry
        guard let code = space.read(start, count: MainLocator.window) ?? space.read(start, count: 16) else {
            throw .noMainForkPoint("the entry point 0x\(String(start, radix: 16)) is not readable")
        }
        let main: UInt64
        do { main = try MainLocator.locateMain(entry: start, code: code) } catch { throw .noMainForkPoint(error.description) }
        guard space.permissions(at: AddressSpace.pageDown(main))?.contains(.execute) == true, let original = space.read(main, count: 1)?.first else {
            throw .noMainForkPoint("main's address 0x\(String(main, radix: 16)), from the entry point's code, is not in the program's code")
        }
        // unsafe: the view of the one int3 byte lives for the call, and loaderWrite only copies it.
        withUnsafeBytes(of: X86.int3) { space.loaderWrite(main, $0) }
        stopsAtMain = (main, original)
    }

    /// The program trapped on a breakpoint. If it is main's, in user mode, the original byte
    /// goes back and the vCPU is set at main in user mode with the registers the program had
    /// there (but RAX's low byte, which the exception stub used and which main does not read),
    /// and true is returned.
    func resumeInUserMode(atBreakpoint main: (address: UInt64, originalByte: UInt8)) throws(GuestError) -> Bool {
        // The frame the CPU pushed for #BP (no error code): RIP (after the int3), CS,
        // RFLAGS, RSP, SS — on the exception stack, which the program cannot write.
        guard let top = memory.pointer(physical: exceptionStackFrame, length: Int(AddressSpace.pageSize)) else { return false }
        let frame = UnsafeRawPointer(top + (Int(AddressSpace.pageSize) - 40))
        let rip = frame.load(fromByteOffset: 0, as: UInt64.self)
        let cs = frame.load(fromByteOffset: 8, as: UInt64.self)
        let rflags = frame.load(fromByteOffset: 16, as: UInt64.self)
        let rsp = frame.load(fromByteOffset: 24, as: UInt64.self)
        guard rip == main.address + 1, cs == UInt64(X86.Selector.userCode) else { return false }
        stopsAtMain = nil
        // unsafe: the view of the saved byte lives for the call, and loaderWrite only copies it.
        withUnsafeBytes(of: main.originalByte) { space.loaderWrite(main.address, $0) }
        do throws(KVMError) {
            var registers = vcpu.syncRegisters.pointee.regs
            registers.rip = main.address
            registers.rsp = rsp
            registers.rflags = rflags
            var special = vcpu.syncRegisters.pointee.sregs
            special.cs = CPUSetup.segment(selector: X86.Selector.userCode, code: true)
            special.ss = CPUSetup.segment(selector: X86.Selector.userData, code: false)
            vcpu.discardSyncedChanges()
            try vcpu.setRegisters(registers)
            try vcpu.setSpecialRegisters(special)
        } catch {
            throw .kvm(error)
        }
        return true
    }

    /// Runs a parent whose breakpoint is at main until it gets there, within `limit`.
    func runUntilMain(limit: Duration) throws(GuestError) {
        let watchdog = DispatchWorkItem { [weak self] in self?.kill() }
        let milliseconds = Int(limit.components.seconds) * 1000 + Int(limit.components.attoseconds / 1_000_000_000_000_000)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(milliseconds), execute: watchdog)
        defer { watchdog.cancel() }
        switch try runUntilStop() {
        case .atMain:
            return
        case .ended(.signaled(9)) where mainThread.interrupts.pendingKill != nil:
            throw .noMainForkPoint("the program's start-up did not reach main within \(limit)")
        case .ended(let status):
            throw .noMainForkPoint("the program ended before it reached main (\(status))")
        case .atFirstStandardInputRead:
            preconditionFailure("a main fork point's parent does not stop at its first read")
        }
    }
}

extension ProcessVM {
    /// Why `executable` (a path inside `rootfs`) cannot have a fork point at main, or nil when
    /// it can: its entry point's code, read from the file, is glibc's `_start`. For choosing
    /// an image's default fork point without starting it.
    public static func mainForkPointRefusal(rootfs: String, executable: String) -> String? {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { return "cannot open /dev/null: \(String(cString: strerror(errno)))" }
        defer { close(null) }
        do {
            let files = try GuestFiles(rootfs: rootfs, stdin: null, stdout: null, stderr: null)
            return try withExecutable(executable, from: files) { file throws(GuestError) -> String? in
                let image = try ELFImage(file: file)
                guard let segment = image.segments.first(where: { $0.virtualAddress <= image.entry && image.entry < $0.virtualAddress + UInt64($0.fileSize) }) else {
                    return "its entry point 0x\(String(image.entry, radix: 16)) is in none of its segments' file bytes"
                }
                let offset = segment.fileOffset + Int(image.entry - segment.virtualAddress)
                let count = min(MainLocator.window, segment.fileOffset + segment.fileSize - offset)
                var code = [UInt8](repeating: 0, count: count)
                // unsafe: pread writes at most `count` bytes, the array's size, while the closure runs.
                guard code.withUnsafeMutableBytes({ pread(file, $0.baseAddress, count, off_t(offset)) }) == count else {
                    return "its entry point's code cannot be read"
                }
                do throws(MainLocator.Refusal) {
                    _ = try MainLocator.locateMain(entry: image.entry, code: code)
                    return nil
                } catch {
                    return error.description
                }
            }
        } catch {
            return "\(error)"
        }
    }
}
