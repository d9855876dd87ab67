import Foundation
@testable import ProcessVM
import Testing
import TestSupport

/// prctl(PR_GET_NAME) answered in the program (`ProgramNameRoutine`): the same 16 bytes as
/// the engine's answer, after PR_SET_NAME too, no exit for it, and EFAULT for a buffer the
/// program cannot write.
@Suite(.enabled(if: GuestRunner.system != nil, "needs /dev/kvm"))
struct ProgramNameTests {
    private static let prctl: UInt32 = 157, write: UInt32 = 1, exitGroup: UInt32 = 231

    private static func mov(eax value: UInt32) -> [UInt8] { [0xB8] + withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    private static func mov(edi value: UInt32) -> [UInt8] { [0xBF] + withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    private static func mov(edx value: UInt32) -> [UInt8] { [0xBA] + withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    /// prctl(PR_GET_NAME, rsp - 64); write(1, rsp - 64, 16).
    private static let getNameAndPrint: [UInt8] = [0x48, 0x8D, 0x74, 0x24, 0xC0] // lea rsi, [rsp - 64]
        + mov(edi: 16) + mov(eax: prctl) + TinyELF.syscallInstruction
        + [0x48, 0x8D, 0x74, 0x24, 0xC0] + mov(edi: 1) + mov(edx: 16) + mov(eax: write) + TinyELF.syscallInstruction

    /// The name as the program gets it, from the start (its file's name) and after PR_SET_NAME
    /// (which the engine serves), as Linux answers, from a rewritten call and from one through
    /// SYSCALL (the stub sends both to the routine).
    @Test func theNameIsTheEnginesAnswer() throws {
        let setName = TinyELF.load(.rax, 0x0073_7961_646F_6C61) + [0x50] // push "alodays\0"
            + [0x48, 0x89, 0xE6] + Self.mov(edi: 15) + Self.mov(eax: Self.prctl) + TinyELF.syscallInstruction // prctl(PR_SET_NAME, rsp)
        let code = Self.getNameAndPrint + setName + Self.getNameAndPrint + Self.mov(edi: 0) + Self.mov(eax: Self.exitGroup) + TinyELF.syscallInstruction
        let root = try GuestRunner.rootfs(withProgram: code)
        let inProgram = try GuestRunner.run(["/prog"], rootfs: root)
        let throughSyscall = try GuestRunner.run(["/prog"], rootfs: root, rewritesSystemCalls: false)
        let expected = Array("prog".utf8) + [UInt8](repeating: 0, count: 12) + Array("alodays".utf8) + [UInt8](repeating: 0, count: 9)
        #expect(Array(inProgram.stdout.utf8) == expected)
        #expect(Array(throughSyscall.stdout.utf8) == expected)
    }

    /// 200 PR_GET_NAMEs make almost no system-call exits; 200 PR_SET_NAMEs, which the engine
    /// serves, make 200 or more.
    @Test func theNameCostsNoExit() throws {
        func loop(option: UInt32) -> [UInt8] {
            let body = [0x48, 0x8D, 0x74, 0x24, 0xC0] + Self.mov(edi: option) + Self.mov(eax: Self.prctl) + TinyELF.syscallInstruction + [0x49, 0xFF, 0xCC]
            return TinyELF.load(.rax, 0x61) + [0x48, 0x89, 0x44, 0x24, 0xC0] // mov [rsp - 64], "a\0"
                + [0x49, 0xBC] + withUnsafeBytes(of: UInt64(200).littleEndian) { Array($0) } // mov r12, 200
                + body + [0x0F, 0x85] + withUnsafeBytes(of: Int32(-(body.count + 6)).littleEndian) { Array($0) } // jnz loop
                + Self.mov(edi: 0) + Self.mov(eax: Self.exitGroup) + TinyELF.syscallInstruction
        }
        let gets = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: loop(option: 16)))
        let sets = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: loop(option: 15)))
        #expect(gets.status == 0 && sets.status == 0)
        let fewer = try #require(gets.vm.lastRunCounters?.emulatedInstructions), more = try #require(sets.vm.lastRunCounters?.emulatedInstructions)
        #expect(fewer < 10 && more >= 200, "PR_GET_NAME: \(fewer) system-call exits, PR_SET_NAME: \(more)")
    }

    /// A buffer the program cannot write gets EFAULT (14) both ways: an unmapped page, a
    /// read-only one (the program's own code), a non-canonical address.
    @Test(arguments: [UInt64(0x10), TinyELF.codeAddress, 0x8000_0000_0000_0000]) func anUnwritableBufferIsAnsweredEFAULT(address: UInt64) throws {
        let code = TinyELF.load(.rsi, address) + Self.mov(edi: 16) + Self.mov(eax: Self.prctl) + TinyELF.syscallInstruction
            + [0x48, 0xF7, 0xD8, 0x48, 0x89, 0xC7] // neg rax; mov rdi, rax
            + Self.mov(eax: Self.exitGroup) + TinyELF.syscallInstruction
        let root = try GuestRunner.rootfs(withProgram: code)
        for rewrites in [true, false] {
            #expect(try GuestRunner.run(["/prog"], rootfs: root, rewritesSystemCalls: rewrites).status == 14, "rewritten \(rewrites)")
        }
    }
}
