import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// Guests that issue random system calls with random arguments — bad pointers, huge lengths,
/// unknown numbers and flags — must never crash or hang the engine: each ends with a status
/// like any program, and the engine runs the next guest normally.
@Suite(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
struct SystemCallFuzzTests {
    /// Calls that end the program or sleep for an argument-chosen time are left out, so that
    /// each program issues all of its calls in bounded time.
    static let excluded: Set<UInt64> = [7, 23, 34, 35, 60, 61, 62, 200, 230, 231, 234, 270, 271, 15]

    static func argument(_ random: inout SplitMix64) -> UInt64 {
        switch random.next() % 9 {
        case 0: return 0
        case 1: return random.next() % 8
        case 2: return UInt64.max
        case 3: return random.next()
        case 4: return TinyELF.dataAddress + random.next() % TinyELF.dataSize
        case 5: return TinyELF.codeAddress + random.next() % 0x1000
        case 6: return 0x7FFF_FFFF_E000 + random.next() % 0x2000
        case 7: return 0xFFFF_8000_0000_0000 + random.next() % 0x1_0000
        default: return (random.next() % 0x1_0000) << 12
        }
    }

    static func program(seed: UInt64, calls: Int) -> [UInt8] {
        var random = SplitMix64(seed: seed)
        var code: [UInt8] = []
        for _ in 0..<calls {
            var number: UInt64
            repeat { number = random.next() % 340 } while excluded.contains(number)
            code += TinyELF.load(.rax, number)
            for register in TinyELF.SyscallRegister.allCases.dropFirst() { code += TinyELF.load(register, argument(&random)) }
            code += TinyELF.syscallInstruction
        }
        return code + TinyELF.exit(0)
    }

    @Test(arguments: 0..<24)
    func randomSystemCallsNeverHurtTheEngine(seed: Int) throws {
        // Odd seeds go through the poller, even ones through VM exits.
        let root = try GuestRunner.rootfs(withProgram: Self.program(seed: UInt64(seed) &* 7919 &+ 1, calls: 300))
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 32 << 20, pollsSystemCalls: seed % 2 == 1),
                               executable: "/prog", arguments: ["/prog"], environment: [], streams: streams.standard)
        let watchdog = DispatchWorkItem { vm.kill() }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: watchdog)
        let status = try vm.run()
        watchdog.cancel()
        // Whatever the calls did to the program, it ended by itself: normally, or by a fault
        // it caused (unmapping its own code, say) — never by the watchdog's SIGKILL.
        #expect(status != .signaled(9), "seed \(seed) had to be killed")
        let healthy = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: TinyELF.exit(5)))
        #expect(healthy.status == 5)
    }
}
