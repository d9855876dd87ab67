import Foundation
import HostSystem
import KVM
@testable import ProcessVM
import TestSupport
import Testing

/// The poller spins only while guests post calls: a polled VM that computes without system
/// calls leaves the poller parked, costing no core, and a quiet VM is not watched while
/// others keep the poller busy.
/// One after the other: their timings would suffer from each other.
@Suite(.serialized, .enabled(if: HostFacts.hasKVM, "needs /dev/kvm"))
struct SyscallPollerTests {
    @Test func pollerParksWhileItsGuestComputes() throws {
        // 200 polled getpid calls, then a loop that never makes another call.
        let code = [0x49, 0xBC] + withUnsafeBytes(of: UInt64(200).littleEndian) { Array($0) } // mov r12, 200
            + [0xB8, 24, 0, 0, 0, 0x0F, 0x05, 0x49, 0xFF, 0xCC, 0x75, 0xF4] // sched_yield (getpid, rewritten, makes no call); dec r12; jnz
            + [0xEB, 0xFE] // jmp $
        let root = try GuestRunner.rootfs(withProgram: code)
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let system = try KVMSystem()
        let vm = try ProcessVM(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, pollsSystemCalls: true),
                               executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            _ = try? vm.run()
            finished.signal()
        }
        // Once the 200 calls are served the poller parks: wait for its clock to stop (a loaded
        // host may take far longer than usual to get there), then watch it for 0.4 s.
        let deadline = Date().addingTimeInterval(20)
        while Self.pollerCPUTime(system) == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        var settled = try #require(Self.pollerCPUTime(system))
        while Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            let now = try #require(Self.pollerCPUTime(system))
            if now - settled < 0.01 { break }
            settled = now
        }
        let before = try #require(Self.pollerCPUTime(system))
        Thread.sleep(forTimeInterval: 0.4)
        let after = try #require(Self.pollerCPUTime(system))
        vm.kill()
        finished.wait()
        // Spinning all along would cost about 0.4 s of CPU; parked, almost none.
        #expect(after - before < 0.05, "the poller used \(after - before) s of CPU in 0.4 s while its guest made no calls")
    }

    @Test func pollerStopsWatchingAQuietVMWhileAnotherPosts() throws {
        // The quiet one: 200 polled getpid calls, then a nanosleep of 1,000 s (served on its
        // vCPU thread, which blocks outside the guest). The busy one: getpid for ever.
        let quiet = [0x49, 0xBC] + withUnsafeBytes(of: UInt64(200).littleEndian) { Array($0) } // mov r12, 200
            + [0xB8, 24, 0, 0, 0, 0x0F, 0x05, 0x49, 0xFF, 0xCC, 0x75, 0xF4] // sched_yield (getpid, rewritten, makes no call); dec r12; jnz
            + [0x6A, 0x00, 0x68, 0xE8, 0x03, 0x00, 0x00, 0x48, 0x89, 0xE7, 0x31, 0xF6] // push 0; push 1000; mov rdi, rsp; xor esi, esi
            + [0xB8, 35, 0, 0, 0, 0x0F, 0x05, 0xEB, 0xFE] // nanosleep; jmp $
        let busy: [UInt8] = [0xB8, 24, 0, 0, 0, 0x0F, 0x05, 0xEB, 0xF7] // sched_yield; jmp back
        let system = try KVMSystem()
        let streams = try CapturedStreams()
        var roots: [URL] = []
        defer { roots.forEach { try? FileManager.default.removeItem(at: $0) } }
        let vms = try [quiet, busy].map { code in
            let root = try GuestRunner.rootfs(withProgram: code)
            roots.append(root)
            return try ProcessVM(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, pollsSystemCalls: true),
                                 executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
        }
        let finished = DispatchSemaphore(value: 0)
        for vm in vms {
            Thread.detachNewThread {
                _ = try? vm.run()
                finished.signal()
            }
        }
        // A VM's pollerActive word is set exactly while the poller watches it.
        func watched(_ vm: ProcessVM) -> Bool {
            vm.mailbox.map { $0.load(fromByteOffset: Int(SyscallStub.Offset.pollerActive), as: UInt32.self) } == 1
        }
        // The quiet one gets to its nanosleep after its 200 calls: on a loaded host that may
        // take a while, so wait until the poller first lets it go, then sample for 0.2 s.
        let deadline = Date().addingTimeInterval(20)
        Thread.sleep(forTimeInterval: 0.2)
        while watched(vms[0]), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        Thread.sleep(forTimeInterval: 0.02)
        var samples: [(quiet: Bool, busy: Bool)] = []
        for _ in 0..<40 {
            samples.append((watched(vms[0]), watched(vms[1])))
            Thread.sleep(forTimeInterval: 0.005)
        }
        vms.forEach { $0.kill() }
        vms.forEach { _ in finished.wait() }
        #expect(!samples.contains { $0.quiet }, "the poller still watched the sleeping VM: \(samples.map { "\($0.quiet ? 1 : 0)\($0.busy ? 1 : 0)" })")
        #expect(samples.contains { $0.busy }, "the poller never watched the VM making calls")
    }

    /// A signal that comes while the guest waits in the stub for a polled call is delivered
    /// on the stub's way back to the program, never inside it: a handler run there would make
    /// its own calls through the mailbox under the interrupted post, which then waited for
    /// ever (seen as ^C at a terminal leaving the guest spinning). The guest makes polled
    /// lseek calls whose results it checks, while the host sends it SIGUSR1 every 200 µs;
    /// the handler makes a polled call of its own. Until the stub's way out was in use for
    /// this, such a run hung within its first few signals.
    @Test func aSignalDuringAPolledCallIsDeliveredOnTheWayOut() throws {
        let root = try HostileGuest.rootfs(#"""
        #define SYS_lseek 8
        #define SYS_rt_sigaction 13
        #define SA_RESTORER 0x04000000
        static volatile u64 handled;
        static volatile int wrong;
        static i64 mine, handlers;
        static void on_signal(int signal) {
            (void)signal;
            handled++;
            if (sys(SYS_lseek, handlers, 7777, 0) != 7777) wrong = 1;
        }
        extern void restorer(void);
        __asm__(".globl restorer\nrestorer:\n mov $15, %eax\n syscall\n hlt\n");
        int main(void) {
            u64 action[4] = {(u64)on_signal, SA_RESTORER, (u64)restorer, 0};
            if (sys(SYS_rt_sigaction, 10, action, 0, 8) != 0) return 1;
            print("ready\n");
            mine = sys(SYS_open, "/prog", 0);
            handlers = sys(SYS_open, "/prog", 0);
            for (u64 i = 0; i < 20000000 && handled < 300; i++) {
                i64 at = (i64)(i & 0xFFFF), result = sys(SYS_lseek, mine, at, 0);
                if (result != at) { print("wrong result "); print_hex((u64)result); print("\n"); return 2; }
            }
            if (wrong) return 3;
            print(handled >= 300 ? "handled\n" : "too few signals\n");
            return 0;
        }
        """#, name: "signals")
        defer { try? FileManager.default.removeItem(at: root) }
        let system = try KVMSystem()
        var held = 0
        // The poller stands back while its core is taken: a few runs until a signal found the
        // guest in the stub.
        for _ in 0..<5 where held == 0 {
            let streams = try CapturedStreams()
            let vm = try ProcessVM(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20, pollsSystemCalls: true),
                                   executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
            let finished = DispatchSemaphore(value: 0)
            let status = Locked<Int32?>(nil)
            let ended = Locked(false)
            Thread.detachNewThread {
                let result = try? vm.run().code
                status.withLock { $0 = result }
                ended.withLock { $0 = true }
                finished.signal()
            }
            let output = streams.output
            Thread.detachNewThread {
                // Signals begin once the handler is in place ("ready" is written; SIGUSR1
                // would end the program before).
                var first: UInt8 = 0
                while !ended.withLock({ $0 }), pread(output, &first, 1, 0) != 1 { usleep(1000) }
                while !ended.withLock({ $0 }) {
                    vm.sendSignal(10)
                    usleep(200)
                }
            }
            let inTime = finished.wait(timeout: .now() + 20) == .success
            if !inTime {
                vm.kill()
                finished.wait()
            }
            #expect(inTime, "the guest hung with a signal sent during its calls; output: \(streams.stdout)")
            guard inTime else { return }
            #expect(status.withLock { $0 } == 0, "output: \(streams.stdout)")
            #expect(streams.stdout == "ready\nhandled\n")
            held = vm.signalsHeldForTheStub
        }
        #expect(held > 0, "in five runs no signal came while the guest was in the stub")
    }

    /// User plus system CPU seconds of the engine's poller thread, from /proc.
    /// The poller belongs to its KVM system (the engine owns it through its system): two
    /// systems' VMs are served by two pollers, and once stopped a poller serves nothing — the
    /// VM's calls take the exit path and still work.
    @Test func eachSystemHasItsOwnPollerWhichStops() throws {
        let code = [0x49, 0xBC] + withUnsafeBytes(of: UInt64(5000).littleEndian) { Array($0) } // mov r12, 5000
            + [0xB8, 24, 0, 0, 0, 0x0F, 0x05, 0x49, 0xFF, 0xCC, 0x75, 0xF4] // sched_yield (getpid, rewritten, makes no call); dec r12; jnz
            + [0x31, 0xFF, 0xB8, 231, 0, 0, 0, 0x0F, 0x05] // xor edi, edi; exit_group(0)
        let root = try GuestRunner.rootfs(withProgram: code)
        defer { try? FileManager.default.removeItem(at: root) }
        let (first, second) = (try KVMSystem(), try KVMSystem())
        #expect(SyscallPoller.of(first) === SyscallPoller.of(first))
        #expect(SyscallPoller.of(first) !== SyscallPoller.of(second))
        func exitsCleanly(on system: KVMSystem) throws -> Bool {
            let streams = try CapturedStreams()
            let vm = try ProcessVM(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, pollsSystemCalls: true),
                                   executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
            return try vm.run() == .exited(0)
        }
        // The poller stands back while its core is taken (CI keeps both busy): a few runs
        // until it has served some.
        for _ in 0..<10 where SyscallPoller.of(first).statistics.callsServed == 0 {
            #expect(try exitsCleanly(on: first))
        }
        let served = SyscallPoller.of(first).statistics.callsServed
        #expect(served > 0, "the first system's poller served none of 10 runs of 5,000 getpid calls")
        #expect(SyscallPoller.of(second).statistics.callsServed == 0, "the second system's poller served the first's calls")
        SyscallPoller.of(first).stop()
        #expect(try exitsCleanly(on: first))
        #expect(SyscallPoller.of(first).statistics.callsServed == served, "a stopped poller served calls")
    }

    /// CPU time of the poller of `system`'s VMs (its own thread, not another system's).
    private static func pollerCPUTime(_ system: KVMSystem) -> Double? {
        guard let task = SyscallPoller.of(system).kernelThreadID,
              let stat = readKernelFile("/proc/self/task/\(task)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The judgement itself, on figures measured on this machine (VM exit 22.6 µs, polled
    /// call 3.6 µs): at 2,000 `busybox echo` launches a second the poller spent 136 µs per
    /// container and served 2.3 of its calls (each saving 19 µs): polling did not pay; a shell
    /// loop's calls, each served in about 3 µs of the poller's time, pay.
    @Test func pollingPaysWhenItsCallsSaveMoreThanThePollerSpends() {
        let saving = 22_600 - 3_600
        #expect(!SyscallPoller.paid(spentNanoseconds: 136_000 * 10, served: 23, savingNanoseconds: saving))
        #expect(SyscallPoller.paid(spentNanoseconds: 3_000 * 1000, served: 1000, savingNanoseconds: saving))
        #expect(SyscallPoller.paid(spentNanoseconds: 19_000, served: 1, savingNanoseconds: saving))
        #expect(!SyscallPoller.paid(spentNanoseconds: 19_001, served: 1, savingNanoseconds: saving))
        // An exit no dearer than a polled call: polling never pays.
        #expect(!SyscallPoller.paid(spentNanoseconds: 1, served: 1000, savingNanoseconds: -500))
    }

    /// Polling judged against this machine's costs (`setCosts`) in a running poller: 20,000
    /// getpid calls under costs where each served call saves 0.1 µs (polling goes off, the
    /// calls exit) and where each saves a second (it never goes off as unprofitable). Only the
    /// judgements are compared: how many calls each serves also depends on the poller losing
    /// its core on a busy host (the other back-off), which a test run in parallel provokes.
    @Test func aRunningPollerGoesOffWhenItsCallsSaveTooLittle() throws {
        let calls = 20_000
        let code = [0x49, 0xBC] + withUnsafeBytes(of: UInt64(calls).littleEndian) { Array($0) } // mov r12, calls
            + [0xB8, 24, 0, 0, 0, 0x0F, 0x05, 0x49, 0xFF, 0xCC, 0x75, 0xF4] // sched_yield (getpid, rewritten, makes no call); dec r12; jnz
            + [0xB8, 60, 0, 0, 0, 0x31, 0xFF, 0x0F, 0x05] // exit(0)
        let root = try GuestRunner.rootfs(withProgram: code)
        defer { try? FileManager.default.removeItem(at: root) }
        func run(exitMicroseconds: Double, polledMicroseconds: Double) throws -> SystemCallPollerStatistics {
            let streams = try CapturedStreams()
            let system = try KVMSystem()
            let poller = SyscallPoller.of(system)
            defer { poller.stop() }
            poller.setCosts(MachineCosts(exitMicroseconds: exitMicroseconds, polledMicroseconds: polledMicroseconds, cpuidMicroseconds: 1))
            let vm = try ProcessVM(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, pollsSystemCalls: true),
                                   executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
            #expect(try vm.run() == .exited(0))
            return poller.statistics
        }
        // A first stretch that served nothing (the vCPU starved by a test beside it) turns
        // polling off as a lost core for 0.5 s, which may outlast the program: up to three runs.
        var doesNot = try run(exitMicroseconds: 3.6, polledMicroseconds: 3.5)
        for _ in 0..<2 where doesNot.unprofitableBackOffs == 0 { doesNot = try run(exitMicroseconds: 3.6, polledMicroseconds: 3.5) }
        // Each served call saves a second: only a stretch of 2 ms of the poller's CPU with no
        // call served at all (its vCPU starved meanwhile) turns polling off here.
        let pays = try run(exitMicroseconds: 1_000_000, polledMicroseconds: 1)
        #expect(doesNot.unprofitableBackOffs > 0, "polling stayed on although each call saved 0.1 µs (\(doesNot.callsServed) served)")
        #expect(doesNot.callsServed < calls, "every call was polled although each saved 0.1 µs")
        // Where a call saves a second, any stretch that served one paid; one that served none
        // (its vCPU starved on a busy host) counts as a lost core, never as unprofitable.
        #expect(pays.unprofitableBackOffs == 0,
                "went off \(pays.unprofitableBackOffs) times as unprofitable where each call saves a second (\(pays.backOffs) for want of a core)")
    }
}
