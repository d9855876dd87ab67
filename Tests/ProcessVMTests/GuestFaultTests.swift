import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// Programs that misbehave end as Linux would end them, and the engine carries on.
@Suite(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
struct GuestFaultTests {
    @Test func exitCodeComesFromExitGroup() throws {
        let root = try GuestRunner.rootfs(withProgram: TinyELF.exit(42))
        #expect(try GuestRunner.run(["/prog"], rootfs: root).status == 42)
    }

    @Test func nullWriteIsSIGSEGV() throws {
        // mov qword [0], 1
        let root = try GuestRunner.rootfs(withProgram: [0x48, 0xC7, 0x04, 0x25, 0, 0, 0, 0, 1, 0, 0, 0])
        let result = try GuestRunner.run(["/prog"], rootfs: root)
        #expect(result.status == 139)
        let fault = try #require(result.vm.fault)
        #expect(fault.vector == 14)
        #expect(fault.address == 0)
        #expect(fault.instructionPointer == TinyELF.codeAddress + 64 + 112)
    }

    /// A whole page of the program's code is mapped from its file: after mprotect the
    /// program writes there and reads its byte back, and the file keeps its own.
    @Test func writeToCodeMadeWritableStaysPrivate() throws {
        let target = TinyELF.codeAddress + 0xF00
        let code = TinyELF.load(.rax, 10) + TinyELF.load(.rdi, TinyELF.codeAddress) + TinyELF.load(.rsi, 0x1000) + TinyELF.load(.rdx, 7)
            + TinyELF.syscallInstruction
            + TinyELF.load(.rax, target) + [0xC6, 0x00, 0x5A] // mov byte [rax], 0x5A
            + [0x48, 0x0F, 0xB6, 0x38] // movzx rdi, byte [rax]
            + TinyELF.load(.rax, 231) + TinyELF.syscallInstruction
        let root = try GuestRunner.rootfs(withProgram: code + [UInt8](repeating: 0xCC, count: 0x1000))
        let file = root.appendingPathComponent("prog")
        let before = try Data(contentsOf: file)
        #expect(try GuestRunner.run(["/prog"], rootfs: root).status == 0x5A)
        #expect(try Data(contentsOf: file) == before)
    }

    @Test func writeToReadOnlyCodeIsSIGSEGV() throws {
        // mov rax, codeAddress; mov byte [rax], 0
        let root = try GuestRunner.rootfs(withProgram: TinyELF.load(.rax, TinyELF.codeAddress) + [0xC6, 0x00, 0x00])
        #expect(try GuestRunner.run(["/prog"], rootfs: root).status == 139)
    }

    @Test(arguments: [false, true])
    func accessAfterMunmapOrMprotectIsSIGSEGV(polled: Bool) throws {
        // mmap a page at a fixed address and write to it (so KVM caches a translation), then
        // take it away — munmap, or mprotect(PROT_READ) — and write again: it must fault
        // there, although the engine changed the page tables behind the shadow MMU's back
        // (on the exit path, or from the poller while the guest spins in its stub).
        let address = TinyELF.probeAddress
        let mapAndWrite = TinyELF.load(.rax, 9) + TinyELF.load(.rdi, address) + TinyELF.load(.rsi, 4096) + TinyELF.load(.rdx, 3)
            + TinyELF.load(.r10, 0x32) + TinyELF.load(.r8, UInt64.max) + TinyELF.load(.r9, 0) + TinyELF.syscallInstruction
            + [0x48, 0xBB] + withUnsafeBytes(of: address.littleEndian) { Array($0) } // mov rbx, address
            + [0xC6, 0x03, 0x01] // mov byte [rbx], 1
        let munmap = TinyELF.load(.rax, 11) + TinyELF.load(.rdi, address) + TinyELF.load(.rsi, 4096) + TinyELF.syscallInstruction
        let readOnly = TinyELF.load(.rax, 10) + TinyELF.load(.rdi, address) + TinyELF.load(.rsi, 4096) + TinyELF.load(.rdx, 1)
            + TinyELF.syscallInstruction
        let writeAgain: [UInt8] = [0xC6, 0x03, 0x02] + TinyELF.exit(0)
        for takeAway in [munmap, readOnly] {
            let result = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: mapAndWrite + takeAway + writeAgain),
                                             pollsSystemCalls: polled)
            #expect(result.status == 139)
            #expect(result.vm.fault?.address == address)
        }
    }

    @Test func illegalInstructionIsSIGILL() throws {
        let root = try GuestRunner.rootfs(withProgram: [0x0F, 0x0B])
        let result = try GuestRunner.run(["/prog"], rootfs: root)
        #expect(result.status == 132)
        #expect(result.vm.fault?.vector == 6)
    }

    @Test func divideByZeroIsSIGFPE() throws {
        // xor ecx, ecx; div ecx
        let root = try GuestRunner.rootfs(withProgram: [0x31, 0xC9, 0xF7, 0xF1])
        #expect(try GuestRunner.run(["/prog"], rootfs: root).status == 136)
    }

    @Test func engineKeepsRunningAfterAFault() throws {
        let crash = try GuestRunner.rootfs(withProgram: [0x0F, 0x0B])
        let fine = try GuestRunner.rootfs(withProgram: TinyELF.exit(7))
        #expect(try GuestRunner.run(["/prog"], rootfs: crash).status == 132)
        #expect(try GuestRunner.run(["/prog"], rootfs: fine).status == 7)
    }

    @Test func unknownSystemCallIsENOSYSAndReported() throws {
        // syscall 400 (unassigned), then exit_group(-rax & 0xff): ENOSYS is 38.
        let code = TinyELF.load(.rax, 400) + TinyELF.syscallInstruction
            + [0x48, 0xF7, 0xD8] // neg rax
            + [0x48, 0x89, 0xC7] // mov rdi, rax
            + TinyELF.load(.rax, 231) + TinyELF.syscallInstruction
        let result = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: code))
        #expect(result.status == 38)
        #expect(result.vm.missingSyscalls == [400: 1])
    }

    @Test func memoryLimitGivesENOMEMNotACrash() throws {
        // mmap(0, 64 MiB, RW, PRIVATE|ANON) in a 16 MiB VM must fail with -ENOMEM (12).
        let code = TinyELF.load(.rax, 9) + TinyELF.load(.rdi, 0) + TinyELF.load(.rsi, 64 << 20) + TinyELF.load(.rdx, 3)
            + TinyELF.load(.r10, 0x22) + TinyELF.load(.r8, UInt64.max) + TinyELF.load(.r9, 0) + TinyELF.syscallInstruction
            + [0x48, 0xF7, 0xD8, 0x48, 0x89, 0xC7] + TinyELF.load(.rax, 231) + TinyELF.syscallInstruction
        let result = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: code), memoryMiB: 16)
        #expect(result.status == 12)
    }

}

/// The machine-cost probe `vmfork doctor` prints: real guests, real exits.
@Suite(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
struct MachineCostsTests {
    @Test func exitsAndCPUIDsAreMeasured() throws {
        let costs = try MachineCosts.measure(system: GuestRunner.system!, calls: 500, runs: 3)
        // Under PVM every exit leaves the guest: never free. A CPUID need not: on a CPU without
        // CPUID faulting (this machine's AMD EPYC, 2026-12-06: 0.7 µs) it runs in the guest,
        // and on a busy host its figure is noise around that, 0 at times.
        #expect(costs.exitMicroseconds > 0.5, "\(costs.summary)")
        #expect(costs.cpuidMicroseconds.isFinite && costs.cpuidMicroseconds < 10_000, "\(costs.summary)")
        #expect(costs.summary.contains("VM exit") && costs.summary.contains("CPUID"))
    }
}
