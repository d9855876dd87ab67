import Foundation
import Synchronization
@testable import ProcessVM
import Testing
import TestSupport

/// Writes to a standard output or error that never waits, buffered in the program (`OutputBuffer`):
/// the same bytes in the same order as writes made at once, fewer exits, EFAULT for a buffer the
/// program cannot read, and nothing but the program's own output lost when it scribbles on the buffer.
@Suite(.enabled(if: GuestRunner.system != nil, "needs /dev/kvm"))
struct OutputBufferTests {
    private static let write: UInt32 = 1, exitGroup: UInt32 = 231

    private static func mov(eax value: UInt32) -> [UInt8] { [0xB8] + withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    private static func mov(edi value: UInt32) -> [UInt8] { [0xBF] + withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    private static func mov(edx value: UInt32) -> [UInt8] { [0xBA] + withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    private static let exitWithRAX: [UInt8] = [0x48, 0xF7, 0xD8, 0x48, 0x89, 0xC7] // neg rax; mov rdi, rax
        + mov(eax: exitGroup) + TinyELF.syscallInstruction

    /// `count` rounds of write(1, "o\n", 2) and write(2, "e\n", 2) through rewritable pairs, then exit_group(0).
    private static func writeLoop(count: UInt64) -> [UInt8] {
        let body = mov(edi: 1) + [0x48, 0x89, 0xE6] + mov(edx: 2) + mov(eax: write) + TinyELF.syscallInstruction // rsi = rsp: "o\n"
            + mov(edi: 2) + [0x48, 0x8D, 0x74, 0x24, 0x08] + mov(edx: 2) + mov(eax: write) + TinyELF.syscallInstruction // rsi = rsp + 8: "e\n"
            + [0x49, 0xFF, 0xCC] // dec r12
        return TinyELF.load(.rax, 0x0A65) + [0x50] // push "e\n"
            + TinyELF.load(.rax, 0x0A6F) + [0x50] // push "o\n"
            + [0x49, 0xBC] + withUnsafeBytes(of: count.littleEndian) { Array($0) } // mov r12, count
            + body + [0x0F, 0x85] + withUnsafeBytes(of: Int32(-(body.count + 6)).littleEndian) { Array($0) } // jnz loop
            + mov(edi: 0) + mov(eax: exitGroup) + TinyELF.syscallInstruction
    }

    /// 1,000 rounds of two writes fill the buffer a few times over: every byte arrives, in order
    /// per stream, and the run makes a few dozen exits where writes made at once make 2,000.
    @Test(arguments: [false, true]) func buffersWritesToFilesWithoutExits(polled: Bool) throws {
        let root = try GuestRunner.rootfs(withProgram: Self.writeLoop(count: 1000))
        let buffered = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled)
        let direct = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled, buffersOutput: false)
        for run in [buffered, direct] {
            #expect(run.status == 0)
            #expect(run.stdout == String(repeating: "o\n", count: 1000))
            #expect(run.stderr == String(repeating: "e\n", count: 1000))
        }
        let fewer = try #require(buffered.vm.lastRunCounters?.exits), more = try #require(direct.vm.lastRunCounters?.exits)
        #expect(buffered.vm.outputBufferDrains >= 5 && buffered.vm.outputBufferRefusals == 0)
        if !polled { #expect(fewer < 100 && more >= 2000, "buffered \(fewer) exits, at once \(more)") }
        #expect(direct.vm.outputBufferDrains == 0)
    }

    /// A buffer the program cannot read gets EFAULT (14), as the engine answers it, not a crash:
    /// an unmapped page, and a non-canonical address (a #GP rather than a page fault).
    @Test(arguments: [UInt64(0x10), 0x8000_0000_0000_0000]) func anUnreadableBufferIsAnsweredEFAULT(address: UInt64) throws {
        let code = Self.mov(edi: 1) + TinyELF.load(.rsi, address) + Self.mov(edx: 5) + Self.mov(eax: Self.write) + TinyELF.syscallInstruction
            + Self.exitWithRAX
        let root = try GuestRunner.rootfs(withProgram: code)
        for buffers in [true, false] {
            let run = try GuestRunner.run(["/prog"], rootfs: root, buffersOutput: buffers)
            #expect(run.status == 14, "buffered \(buffers)")
            #expect(run.stdout.isEmpty)
        }
    }

    /// A program that writes over its own buffer's records loses (part of) its own buffered
    /// output and nothing else: the engine writes out what checks, refuses the rest, and the
    /// program goes on.
    @Test func aScribbledBufferOnlyLosesTheProgramsOwnOutput() throws {
        let data = UInt32(OutputBuffer.data)
        let code = TinyELF.load(.rax, 0x0A6F) + [0x50] // push "o\n"
            + Self.mov(edi: 1) + [0x48, 0x89, 0xE6] + Self.mov(edx: 2) + Self.mov(eax: Self.write) + TinyELF.syscallInstruction // buffered
            + [0xC7, 0x04, 0x25] + withUnsafeBytes(of: data.littleEndian) { Array($0) } + [0x09, 0xFF, 0xFF, 0xFF] // header: fd 9, huge length
            + Self.mov(edi: 1) + [0x48, 0x89, 0xE6] + Self.mov(edx: 2) + Self.mov(eax: Self.write) + TinyELF.syscallInstruction // buffered after it
            + Self.mov(edi: 3) + Self.mov(eax: Self.exitGroup) + TinyELF.syscallInstruction
        let root = try GuestRunner.rootfs(withProgram: code)
        let run = try GuestRunner.run(["/prog"], rootfs: root)
        #expect(run.status == 3)
        #expect(run.stdout.isEmpty)
        #expect(run.vm.outputBufferRefusals == 1)
    }

    /// A shell's output keeps its order across what it writes itself (buffered), what its
    /// stderr-onto-stdout writes, and what a program it forks writes (its fork makes the
    /// description shared: the child writes it at once, after the parent's buffer went out).
    @Test func aShellsOutputKeepsItsOrderAcrossDescriptorsAndProcesses() throws {
        let root = try BusyboxRootfs.make()
        let script = "exec 2>&1; echo 1; echo 2 >&2; /bin/busybox echo 3; echo 4; echo 5 >&2"
        let run = try GuestRunner.run(["/bin/sh", "-c", script], rootfs: root)
        #expect(run.status == 0)
        #expect(run.stdout == "1\n2\n3\n4\n5\n")
    }

    /// busybox echo by exit: its write is buffered, so it makes one system-call exit fewer (its
    /// `out` to the system-call port, which KVM counts as an emulated instruction; the fewest
    /// of three runs each way: a busy host only adds exits).
    @Test func busyboxEchoMakesOneExitFewer() throws {
        let root = try BusyboxRootfs.make()
        func fewest(_ buffers: Bool) throws -> UInt64 {
            var fewest = UInt64.max
            for _ in 0..<3 {
                let run = try GuestRunner.run(["/bin/busybox", "echo", "hi"], rootfs: root, buffersOutput: buffers)
                #expect(run.stdout == "hi\n")
                fewest = min(fewest, try #require(run.vm.lastRunCounters?.emulatedInstructions))
            }
            return fewest
        }
        let buffered = try fewest(true), direct = try fewest(false)
        #expect(buffered + 1 == direct, "buffered \(buffered) system-call exits, at once \(direct)")
    }

    /// A program that writes a line and then computes without any call has the line in its
    /// file while it still computes: the flusher kicks its vCPU (`OutputFlusher`).
    @Test func outputWaitsNoLongerThanTheFlushersLooksWhileTheProgramComputes() throws {
        let code = TinyELF.load(.rax, 0x0A78) + [0x50] // push "x\n"
            + Self.mov(edi: 1) + [0x48, 0x89, 0xE6] + Self.mov(edx: 2) + Self.mov(eax: Self.write) + TinyELF.syscallInstruction
            + TinyELF.load(.rax, 4_000_000_000) + [0x48, 0xFF, 0xC8, 0x75, 0xFB] // spin: dec rax; jnz spin
            + Self.mov(edi: 0) + Self.mov(eax: Self.exitGroup) + TinyELF.syscallInstruction
        let root = try GuestRunner.rootfs(withProgram: code)
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: false),
                               executable: "/prog", arguments: ["/prog"], environment: [], streams: streams.standard)
        let ended = DispatchSemaphore(value: 0)
        let status = Mutex<Int32?>(nil)
        Thread {
            let code = (try? vm.run())?.code
            status.withLock { $0 = code }
            ended.signal()
        }.start()
        var seenWhileRunning = false
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, status.withLock({ $0 }) == nil {
            if streams.stdout == "x\n" {
                seenWhileRunning = status.withLock { $0 } == nil
                break
            }
            usleep(5_000)
        }
        ended.wait()
        #expect(seenWhileRunning, "the line reached the file while the program computed (kicks \(OutputFlusher.of(GuestRunner.system!).kickCount), drains \(vm.outputBufferDrains))")
        #expect(status.withLock { $0 } == 0)
        #expect(streams.stdout == "x\n")
        #expect(OutputFlusher.of(GuestRunner.system!).kickCount >= 1)
    }
}
