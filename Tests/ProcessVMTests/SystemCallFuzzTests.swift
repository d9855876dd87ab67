import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing
import Synchronization

/// Guests that issue random system calls with random arguments — bad pointers, huge lengths,
/// unknown numbers and flags — must never crash or hang the engine: each ends with a status
/// like any program, and the engine runs the next guest normally.
@Suite(.enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
struct SystemCallFuzzTests {
    /// Calls that end the program or sleep for an argument-chosen time (rt_sigsuspend,
    /// waitid and the epoll waits among them) are left out, so that
    /// each program issues all of its calls in bounded time.
    static let excluded: Set<UInt64> = [7, 23, 34, 35, 60, 61, 62, 200, 230, 231, 234, 270, 271, 15, 130, 247, 232, 281, 441]

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

/// The race mode: guests that post memory calls to their own mailbox and run on while the
/// poller serves them — touching the pages those calls unmap, move and protect, and making
/// real system calls meanwhile — several VMs at once. Whatever they do, each ends by
/// itself (normally, or by a fault of its own), and the engine serves the next VM.
@Suite(.enabled(if: HostFacts.hasKVM && HostileGuest.isAvailable, "needs /dev/kvm and gcc"))
struct MailboxRaceFuzzTests {
    static let program = #"""
    static u64 state_;
    static u64 next(void) { state_ += 0x9E3779B97F4A7C15UL; u64 z = state_; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
                            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL; return z ^ (z >> 31); }
    #define WINDOW 0x50000000UL
    #define WINDOW_PAGES 1024UL
    static u64 page_in_window(void) { return WINDOW + (next() % WINDOW_PAGES) * 4096; }
    static void random_memory_call(u64 *number, u64 args[6]) {
        u64 length = (1 + next() % 64) * 4096;
        for (int i = 0; i < 6; i++) args[i] = 0;
        switch (next() % 6) {
        case 0: *number = SYS_mmap; args[0] = page_in_window(); args[1] = length; args[2] = next() % 8;
                args[3] = MAP_PRIVATE | MAP_ANONYMOUS | ((next() & 1) ? MAP_FIXED : 0); args[4] = (u64)-1; break;
        case 1: *number = SYS_munmap; args[0] = page_in_window(); args[1] = length; break;
        case 2: *number = SYS_mprotect; args[0] = page_in_window(); args[1] = length; args[2] = next() % 8; break;
        case 3: *number = SYS_mremap; args[0] = page_in_window(); args[1] = length; args[2] = (1 + next() % 64) * 4096;
                args[3] = next() & 1; break;
        case 4: *number = SYS_brk; args[0] = next() & 1 ? 0 : 0x1000000UL + (next() % 4096) * 4096; break;
        default: *number = SYS_munmap; args[0] = next(); args[1] = next(); break;
        }
    }
    int main(void) {
        const char *seed = role();
        for (const char *c = seed; *c; c++) state_ = state_ * 10 + (u64)(*c - '0');
        sys(SYS_mmap, WINDOW, WINDOW_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        u64 posted = 0, served = 0;
        for (int step = 0; step < 3000; step++) {
            u64 number, args[6];
            u64 choice = next() % 16;
            if (choice < 6) {
                /* Post without waiting, unless a post is still being served. */
                u32 state = MB_STATE;
                if (state == 2) served++;
                if (state == 2 || state == 5) MB_STATE = 0;
                if (MB_ACTIVE && MB_STATE == 0) {
                    posted++;
                    random_memory_call(&number, args);
                    MB_NUMBER = number;
                    for (int i = 0; i < 6; i++) MB_ARG(i) = args[i];
                    MB_STATE = 1;
                }
            } else if (choice < 10) {
                /* Wait for the poller (or give up), then make a real call. */
                for (int spin = 0; spin < 100000 && (MB_STATE == 1 || MB_STATE == 4); spin++) {}
                u32 state = MB_STATE;
                if (state == 1) { u32 expected = 1; __atomic_compare_exchange_n((u32 *)MAILBOX, &expected, 3, 0, 5, 5); }
                state = MB_STATE;
                if (state == 2) served++;
                if (state != 1 && state != 4) MB_STATE = 0;
                random_memory_call(&number, args);
                sys(number, args[0], args[1], args[2], args[3], args[4], args[5]);
            } else if (choice < 15) {
                /* Let the engine touch window pages on the guest's behalf (never faults). */
                sys(SYS_write, 1, page_in_window(), 1 + next() % 8192);
            } else if (next() % 1024 == 0) {
                /* Now and then touch a page directly: a fault ends this guest, as on Linux. */
                *(volatile u8 *)page_in_window() = 1;
            }
        }
        print("posted "); print_hex(posted); print(" served "); print_hex(served); print("\n");
        return 0;
    }
    """#

    @Test(arguments: 0..<6)
    func racingTheMailboxNeverHurtsTheEngine(round: Int) throws {
        let root = try HostileGuest.rootfs(Self.program, name: "mailbox-race")
        // Four guests at once on the two cores, each with its own seed.
        let statuses = Mutex<[Int: Int32]>([:])
        let errors = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            let seed = round * 4 + index + 1
            do {
                let streams = try CapturedStreams()
                let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 32 << 20, pollsSystemCalls: true)
                let vm = try ProcessVM(system: GuestRunner.system!, configuration: configuration, executable: "/prog",
                                       arguments: ["/prog", "\(seed * 7919)"], environment: [], streams: streams.standard)
                let watchdog = DispatchWorkItem { vm.kill() }
                DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
                let status = try vm.run()
                watchdog.cancel()
                statuses.withLock { $0[seed] = status.code }
            } catch {
                errors.withLock { $0.append("seed \(seed): \(error)") }
            }
        }
        #expect(errors.withLock { $0 }.isEmpty, "\(errors.withLock { $0 })")
        for (seed, status) in statuses.withLock({ $0 }) {
            // It ended by itself: normally or by a fault of its own, never by the watchdog.
            #expect([0, 139].contains(status), "seed \(seed) ended with status \(status)")
        }
        let healthy = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: TinyELF.exit(5)))
        #expect(healthy.status == 5)
    }
}
