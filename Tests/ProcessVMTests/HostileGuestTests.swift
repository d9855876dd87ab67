import Foundation
import HostSystem
import KVM
@testable import ProcessVM
import TestSupport
import Testing

/// Hostile guests (issue #11): static programs with raw system calls, no libc, each trying
/// one way across the guest boundary. Every test asserts that the attack fails and that the
/// engine, and a healthy VM run after it, go on normally.
@Suite(.enabled(if: HostFacts.hasKVM && HostileGuest.isAvailable, "needs /dev/kvm and gcc"))
struct HostileGuestTests {
    /// A healthy guest after an attack: the engine still runs VMs normally.
    static func expectEngineStillHealthy() throws {
        let healthy = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: TinyELF.exit(5)))
        #expect(healthy.status == 5)
    }

    /// Runs `/prog` with `arguments`, killed by a watchdog after `seconds` (then the status is
    /// SIGKILL's 137, which every test here treats as a failure).
    static func run(_ root: URL, _ arguments: [String] = [], polled: Bool, memoryMiB: Int = 64, seconds: Double = 20) throws -> GuestRunner.Result {
        let streams = try CapturedStreams()
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: memoryMiB << 20, pollsSystemCalls: polled)
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: configuration, executable: "/prog",
                               arguments: ["/prog"] + arguments, environment: [], streams: streams.standard)
        let watchdog = DispatchWorkItem { vm.kill() }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: watchdog)
        let status = try vm.run()
        watchdog.cancel()
        return GuestRunner.Result(status: status.code, stdout: streams.stdout, stderr: streams.stderr, vm: vm)
    }

    @Test func preludeBuildsAndRuns() throws {
        let root = try HostileGuest.rootfs(#"int main(void) { print("hostile hello "); print(role()); print("\n"); return 7; }"#)
        let result = try GuestRunner.run(["/prog", "there"], rootfs: root)
        #expect(result.stdout == "hostile hello there\n")
        #expect(result.status == 7)
    }

    // MARK: Finding 1: frames freed while a translation to them survives

    /// The guest posts `mmap(MAP_FIXED)` to its mailbox itself and keeps running while the
    /// poller serves it. The call unmaps two pages and, in the same call, needs a new page
    /// table for the page below them: were the freed frames reused at once, the page table
    /// would be one of them, which the guest still reaches through its old translation and
    /// fills with an entry of its own (to the PML4 at frame 0x1000, or outside guest memory).
    static let pageTableRace = #"""
    int main(void) {
        u64 target = streq(role(), "outside") ? 0xFFFFF0000000UL : 0x1000UL;
        sys(SYS_sched_yield);                  /* polled: the poller now watches this VM (a rewritten getpid never reaches it) */
        for (u64 attempt = 0; attempt < 64; attempt++) {
            /* Each attempt in fresh 2 MiB regions: Y's has a page table, R1's (below) none. */
            u64 Y = 0x40200000UL + attempt * 0x400000UL, R1 = Y - 0x200000UL;
            if (sys(SYS_mmap, Y, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != (i64)Y) return 2;
            volatile u64 *stale = (volatile u64 *)Y;
            stale[0] = 1;                      /* a writable translation of Y's frame */
            ((volatile u64 *)(Y + 4096))[0] = 1;
            if (MB_ACTIVE == 0) { sys(SYS_sched_yield); continue; }
            MB_NUMBER = SYS_mmap;
            MB_ARG(0) = Y - 4096; MB_ARG(1) = 3 * 4096; MB_ARG(2) = PROT_READ | PROT_WRITE;
            MB_ARG(3) = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED; MB_ARG(4) = (u64)-1; MB_ARG(5) = 0;
            MB_STATE = 1;                      /* posted, without a SYSCALL: keep running */
            u32 state;
            u64 spins = 0;
            /* Bounded, as the stub's own wait is: a poller that stopped watching this VM after
               the check above never serves the post (a loaded CI host once spun here until the
               watchdog's 20 s); the attempt is then withdrawn and the next one made. */
            while (((state = MB_STATE) == 1 || state == 4) && ++spins < 50000000UL) stale[0] = target | 0x67;
            MB_STATE = 0;
            /* R1 was never mapped: only a forged page-table entry makes it readable, by the
               engine on the guest's behalf ("outside": an entry past guest memory) or by the
               guest itself. */
            if (sys(SYS_write, 1, R1, 8) == 8) { print("\nBROKEN: the engine read through a forged entry\n"); return 99; }
        }
        /* Touching a range never mapped must fault. */
        return (int)*(volatile u64 *)0x40000000UL;
    }
    """#

    @Test(arguments: ["pml4", "outside"])
    func aPostedCallCannotTurnAFreedFrameIntoAPageTable(role: String) throws {
        let root = try HostileGuest.rootfs(Self.pageTableRace, name: "race")
        let result = try Self.run(root, [role], polled: true)
        #expect(!result.stdout.contains("BROKEN"), "\(result.stdout)")
        #expect(result.status == 139, "the guest's touch of a range it never mapped must fault; got \(result.status)")
        try Self.expectEngineStillHealthy()
    }

    // MARK: Findings 2 and 3: what a reused VM keeps of its previous child

    /// "first" moves a page of its .data with mremap (to the predictable top of the mmap
    /// area), writes it there, makes a read-only page writable and writes it, and fills a
    /// large anonymous mapping with a pattern. "second", in the same VM after reuse, maps a
    /// fresh page at that same address and a large anonymous mapping: neither may alias or
    /// show the first child's data, and its read-only page must stay read-only.
    static let reuseProgram = #"""
    static volatile u64 data_pages[3 * 512] __attribute__((aligned(4096))) = { 0x1111 };
    static const u64 ro_page[512] __attribute__((aligned(4096))) = { 0x2222 };
    int main(void) {
        volatile u64 *ro = (volatile u64 *)ro_page;
        if (streq(role(), "small")) return 0;
        if (streq(role(), "first")) {
            i64 moved = sys(SYS_mremap, data_pages, 4096, 8192, MREMAP_MAYMOVE);
            if (moved < 0 || moved == (i64)data_pages) return 2;
            ((volatile u64 *)moved)[0] = 0x5EC7E7;
            if (sys(SYS_mprotect, ro_page, 4096, PROT_READ | PROT_WRITE) != 0) return 3;
            ro[0] = 0x5EC7E7;
            u64 big = 2UL << 20;
            volatile u8 *fill = (volatile u8 *)sys(SYS_mmap, 0, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            for (u64 i = 0; i < big; i += 64) fill[i] = 0x5A;
            print("first done\n");
            return 0;
        }
        if (streq(role(), "fresh")) {
            u64 size = 2UL << 20, dirty = 0;
            volatile u8 *fresh = (volatile u8 *)sys(SYS_mmap, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            for (u64 i = 0; i < size; i++) if (fresh[i] != 0) dirty++;
            if (dirty) { print("DIRTY: fresh memory holds bytes: "); print_hex(dirty); print("\n"); return 1; }
            print("clean\n");
            return 0;
        }
        volatile u64 *fresh = (volatile u64 *)sys(SYS_mmap, 0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        fresh[0] = 0xABCD;
        if (data_pages[0] == 0xABCD) print("ALIAS: a fresh page writes the .data page\n");
        if (data_pages[0] != 0x1111) print("DATA: the .data page is not the parent's\n");
        u64 big = 2UL << 20;
        volatile u8 *check = (volatile u8 *)sys(SYS_mmap, 0, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        u64 dirty = 0;
        for (u64 i = 0; i < big; i++) if (check[i] != 0) dirty++;
        if (dirty) { print("DIRTY: fresh memory holds the first child's bytes: "); print_hex(dirty); print("\n"); }
        if (ro[0] != 0x2222) print("RO: the read-only page is not the parent's\n");
        print("second checked\n");
        ro[0] = 7;                             /* must fault */
        print("WROTE-RO: the read-only page took a write\n");
        return 98;
    }
    """#

    @Test(arguments: [false, true])
    func aReusedVMKeepsNothingOfItsPreviousChild(polled: Bool) throws {
        let root = try HostileGuest.rootfs(Self.reuseProgram, name: "reuse")
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polled)
        let system = GuestRunner.system!
        let forkPoint = try #require(try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog",
                                                                 arguments: ["/prog"], environment: [], kind: .entry))
        var prepared = try PreparedVM(system: system, forkPoint: forkPoint, readAhead: true)
        for round in 0..<3 {
            let firstStreams = try CapturedStreams()
            let first = try ProcessVM(forking: forkPoint, into: prepared, identity: GuestIdentity(pid: 10), arguments: ["/prog", "first"],
                                      environment: [], streams: firstStreams.standard)
            #expect(try first.run() == .exited(0), "round \(round): \(firstStreams.stdout)\(firstStreams.stderr)")
            // Where this process can track writes, the restore finds the child's pages so.
            #expect(first.memory.tracksWrites == (WriteTracking.probe() == nil))
            prepared = try #require(try PreparedVM(reusing: first))
            let secondStreams = try CapturedStreams()
            let second = try ProcessVM(forking: forkPoint, into: prepared, identity: GuestIdentity(pid: 11), arguments: ["/prog", "second"],
                                       environment: [], streams: secondStreams.standard)
            let status = try second.run()
            #expect(secondStreams.stdout == "second checked\n", "round \(round)")
            #expect(status == .signaled(11), "round \(round): the write to the read-only page must fault")
            prepared = try #require(try PreparedVM(reusing: second))
        }
        try Self.expectEngineStillHealthy()
    }

    /// A frame the guest wrote behind the engine's back (through a translation the engine
    /// did not know of) must be restored too: the restore looks at every frame the VM ever
    /// handed out, not only those below the last child's allocation mark. The test writes
    /// such a frame itself, where a stale translation would have.
    @Test func theRestoreCoversFramesWrittenBehindTheEnginesBack() throws {
        let root = try HostileGuest.rootfs(Self.reuseProgram, name: "reuse")
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: false)
        let system = GuestRunner.system!
        let forkPoint = try #require(try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog",
                                                                 arguments: ["/prog"], environment: [], kind: .entry))
        func child(_ role: String, in prepared: PreparedVM) throws -> (ProcessVM, Int32, String) {
            let streams = try CapturedStreams()
            let vm = try ProcessVM(forking: forkPoint, into: prepared, identity: GuestIdentity(pid: 12), arguments: ["/prog", role],
                                   environment: [], streams: streams.standard)
            let status = try vm.run()
            return (vm, status.code, streams.stdout)
        }
        let (first, firstStatus, _) = try child("first", in: try PreparedVM(system: system, forkPoint: forkPoint, readAhead: true))
        #expect(firstStatus == 0)
        let (small, smallStatus, _) = try child("small", in: try #require(try PreparedVM(reusing: first)))
        #expect(smallStatus == 0)
        // A frame the first child used and the small one never had.
        let frame = forkPoint.memory.bumpFrame + 256 * UInt64(GuestMemory.pageSize)
        #expect(frame >= small.memory.bumpFrame)
        let page = small.memory.pointer(physical: frame, length: GuestMemory.pageSize)
        page?.initializeMemory(as: UInt8.self, repeating: 0x77, count: GuestMemory.pageSize)
        let (_, status, stdout) = try child("fresh", in: try #require(try PreparedVM(reusing: small)))
        #expect(stdout == "clean\n")
        #expect(status == 0)
    }

    // MARK: Finding 4: segments over the engine's system area

    @Test func aSegmentOverTheSystemAreaIsRefused() throws {
        let root = try HostileGuest.rootfs(#"int main(void) { return 0; }"#, name: "low", linkerFlags: ["-Wl,-Ttext-segment=0x1000"])
        #expect {
            _ = try GuestRunner.run(["/prog"], rootfs: root)
        } throws: { error in
            guard case GuestError.invalidExecutable(let why) = error else { return false }
            return why.contains("p_vaddr") && why.contains("0x1000")
        }
        try Self.expectEngineStillHealthy()
    }

    // MARK: Findings 5 and 6: arithmetic and work bounded by what is mapped

    static let hugeRanges = #"""
    int main(void) {
        i64 p = sys(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p < 0) return 2;
        /* Lengths that overflow an address. */
        if (sys(SYS_mremap, p, 4096, 0xfffffffffffff000UL, 0) >= 0) return 3;
        if (sys(SYS_mremap, p, 4096, 0xfffffffffffff000UL, MREMAP_MAYMOVE) >= 0) return 4;
        if (sys(SYS_mremap, p, 0xfffffffffffff000UL, 8192, MREMAP_MAYMOVE) >= 0) return 5;
        if (sys(SYS_mmap, p, 0xfffffffffffff000UL, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) >= 0) return 6;
        /* Ranges of 96 TiB: the work must depend on what is mapped, not on what is asked. */
        u64 huge = 96UL << 40;
        for (int i = 0; i < 20; i++) {
            /* From 4 GiB up: below the stack and the mmap area, above the program. */
            sys(SYS_munmap, 1UL << 32, huge);
            sys(SYS_mprotect, 1UL << 32, huge, PROT_READ);
            sys(SYS_mremap, 1UL << 32, huge, huge + 4096, MREMAP_MAYMOVE);
            sys(SYS_mremap, 1UL << 32, huge, 4096, 0);
            sys(SYS_mmap, 1UL << 32, huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        }
        print("survived\n");
        return 0;
    }
    """#

    @Test(arguments: [false, true])
    func hugeLengthsNeitherCrashNorStallTheEngine(polled: Bool) throws {
        let root = try HostileGuest.rootfs(Self.hugeRanges, name: "huge")
        let started = ContinuousClock.now
        let result = try Self.run(root, polled: polled, seconds: 30)
        // 100 calls over 96 TiB each took a minute apiece before; a watchdog kill gives 137.
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout == "survived\n")
        #expect(ContinuousClock.now - started < .seconds(30))
        try Self.expectEngineStillHealthy()
    }
}
