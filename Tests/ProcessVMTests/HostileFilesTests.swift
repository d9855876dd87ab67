import Foundation
import HostSystem
import KVM
@testable import ProcessVM
import TestSupport
import Testing

/// Hostile guests against the engine's file layer and its own resources (issue #11,
/// findings 7, 8 and 10 and their siblings): host calls that block, standard streams shared
/// with the engine, and engine memory and descriptors a guest makes the engine spend. Each
/// asserts that the attack fails and that the engine, and a healthy VM run after it, go on.
/// One at a time: they measure the engine's memory and descriptors, and share its poller.
@Suite(.serialized, .enabled(if: HostFacts.hasKVM && HostileGuest.isAvailable, "needs /dev/kvm and gcc"))
struct HostileFilesTests {
    /// System-call numbers the prelude does not name.
    static let moreNumbers = """
    #define SYS_readv 19
    #define SYS_sendfile 40
    #define SYS_lseek 8
    #define SYS_getdents64 217
    #define SYS_prlimit64 302
    #define O_RDONLY 0
    #define O_WRONLY 1
    #define O_NONBLOCK 0x800
    #define O_DIRECTORY 0x10000
    #define F_GETFL 3
    #define F_SETFL 4
    struct timespec { i64 sec, nsec; };
    static void sleep_long(void) { struct timespec t = { 1000, 0 }; sys(SYS_nanosleep, &t, 0); }

    """

    static func engineStillHealthy() throws {
        let healthy = try GuestRunner.run(["/prog"], rootfs: try GuestRunner.rootfs(withProgram: TinyELF.exit(5)))
        #expect(healthy.status == 5)
    }

    // MARK: - Finding 7: blocking host calls

    /// open(2) of a FIFO in the rootfs blocked the poller (or the vCPU thread) in the host's
    /// open for good, and kill could not end it. It is refused now without being opened.
    @Test(arguments: [true, false]) func fifoInTheRootfsIsRefusedWithoutBlocking(polled: Bool) throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            i64 r = sys(SYS_open, "/fifo", O_RDONLY);
            if (r >= 0) return 1;
            print("refused "); print_hex(-r); print("\n");
            if (sys(SYS_open, "/fifo", O_RDONLY | O_NONBLOCK) >= 0) return 2;
            if (sys(SYS_open, "/fifo", O_WRONLY) >= 0) return 3;
            return 0;
        }
        """#, name: "fifo")
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(mkfifo(root.appendingPathComponent("fifo").path, 0o666) == 0)
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polled),
                               executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
        let status = Self.runKilled(vm, after: 1.0, within: 10)
        #expect(status == 0, "the FIFO open was not refused at once (\(String(describing: status)))")
        #expect(streams.stdout == "refused 0x000000000000000d\n")
        try Self.engineStillHealthy()
    }

    /// The executable itself may be a FIFO: loading it must not block the engine's caller.
    @Test func fifoAsTheExecutableIsRefusedWithoutBlocking() throws {
        let root = try HostFacts.makeTemporaryFolder("fifo-exec")
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(mkfifo(root.appendingPathComponent("prog").path, 0o666) == 0)
        let finished = DispatchSemaphore(value: 0)
        let outcome = Locked<String?>(nil)
        Thread.detachNewThread {
            do {
                _ = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20),
                                  executable: "/prog", arguments: ["prog"], environment: [])
                outcome.withLock { $0 = "loaded" }
            } catch {
                outcome.withLock { $0 = "\(error)" }
            }
            finished.signal()
        }
        #expect(finished.wait(timeout: .now() + 10) == .success, "loading a FIFO as the program blocked")
        #expect(outcome.withLock { $0 }?.contains("Permission denied") == true)
        try Self.engineStillHealthy()
    }

    enum BlockingCall: String, CaseIterable { case read, readv, sendfile }

    /// A read of an idle stdin pipe blocked in the host's read, retried on EINTR, so kill
    /// (and stop) could never end the container. They end it at once now, on both paths.
    @Test(arguments: BlockingCall.allCases, [true, false])
    func killEndsAReadOfAnIdlePipe(call: BlockingCall, polled: Bool) throws {
        let calls: [BlockingCall: String] = [
            .read: "sys(SYS_read, 0, b, 16);",
            .readv: "u64 v[2] = { (u64)b, 16 }; sys(SYS_readv, 0, v, 1);",
            .sendfile: "sys(SYS_sendfile, 1, 0, 0, 16);",
        ]
        let root = try HostileGuest.rootfs(Self.moreNumbers + """
        int main(void) { char b[16]; \(calls[call]!) print("returned\\n"); return 3; }
        """, name: "idle-\(call)")
        defer { try? FileManager.default.removeItem(at: root) }
        for (stop, expected) in [(false, Int32(137)), (true, Int32(143))] {
            let pipe = try Self.makePipe()
            defer { close(pipe.read); close(pipe.write) }
            let streams = try CapturedStreams()
            let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polled),
                                   executable: "/prog", arguments: ["prog"], environment: [],
                                   streams: StandardStreams(input: pipe.read, output: streams.output, error: streams.error))
            let status = Self.runKilled(vm, after: 0.3, within: 10, stop: stop)
            #expect(status == expected, "\(stop ? "stop" : "kill") did not end a \(call) of an idle pipe")
        }
        try Self.engineStillHealthy()
    }

    /// The wait a guest asks of poll is its own to choose: a ppoll timeout of 10^12 s
    /// trapped the engine converting it to milliseconds. The wait is served, and kill and
    /// stop end it at once.
    @Test(arguments: [true, false]) func killEndsAPollOfAnyLength(stop: Bool) throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        #define SYS_ppoll 271
        int main(void) {
            struct { int fd; short events, revents; } entry = { 0, 1, 0 };
            struct timespec t = { 1000000000000L, 0 };
            sys(SYS_ppoll, &entry, 1, &t, 0, 8);
            return 3;
        }
        """#, name: "ppoll")
        defer { try? FileManager.default.removeItem(at: root) }
        let pipe = try Self.makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20),
                               executable: "/prog", arguments: ["prog"], environment: [],
                               streams: StandardStreams(input: pipe.read, output: streams.output, error: streams.error))
        let started = ContinuousClock.now
        #expect(Self.runKilled(vm, after: 0.3, within: 10, stop: stop) == (stop ? 143 : 137))
        #expect(ContinuousClock.now - started < .seconds(1), "the poll was not ended at once")
        try Self.engineStillHealthy()
    }

    /// The same for a sleep of any length (nanosleep of 2^63 - 1 seconds).
    @Test(arguments: [true, false]) func killEndsASleepOfAnyLength(stop: Bool) throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            struct timespec t = { 0x7fffffffffffffffL, 999999999 };
            sys(SYS_nanosleep, &t, 0);
            return 3;
        }
        """#, name: "sleep")
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20),
                               executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
        #expect(Self.runKilled(vm, after: 0.3, within: 10, stop: stop) == (stop ? 143 : 137))
        try Self.engineStillHealthy()
    }

    /// A write to a stdout pipe nobody reads blocked in the host's write for good.
    @Test(arguments: [true, false]) func killEndsAWriteToAFullPipe(polled: Bool) throws {
        let root = try HostileGuest.rootfs(#"""
        int main(void) { static char b[4096]; for (;;) sys(SYS_write, 1, b, sizeof b); }
        """#, name: "full-pipe")
        defer { try? FileManager.default.removeItem(at: root) }
        let pipe = try Self.makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polled),
                               executable: "/prog", arguments: ["prog"], environment: [],
                               streams: StandardStreams(input: streams.input, output: pipe.write, error: streams.error))
        #expect(Self.runKilled(vm, after: 0.3, within: 10) == 137)
        try Self.engineStillHealthy()
    }

    // MARK: - Finding 8: standard streams shared with the engine

    /// fcntl(F_SETFL, O_NONBLOCK) on the guest's stderr set O_NONBLOCK on the caller's own
    /// open file description. The guest's flags are its own now, and still honoured.
    @Test(arguments: [true, false]) func statusFlagsOfTheStreamsStayTheGuests(polled: Bool) throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            static char b[4096];
            if (sys(SYS_fcntl, 2, F_SETFL, O_NONBLOCK) != 0) return 1;
            if (!(sys(SYS_fcntl, 2, F_GETFL) & O_NONBLOCK)) return 2;
            i64 r;
            for (int i = 0; i < 1000; i++) { r = sys(SYS_write, 2, b, sizeof b); if (r < 0) break; }
            print("write "); print_hex(-r); print("\n");
            return 0;
        }
        """#, name: "nonblock")
        defer { try? FileManager.default.removeItem(at: root) }
        let pipe = try Self.makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polled),
                               executable: "/prog", arguments: ["prog"], environment: [],
                               streams: StandardStreams(input: streams.input, output: streams.output, error: pipe.write))
        let status = Self.runKilled(vm, after: 10, within: 20)
        #expect(status == 0)
        #expect(streams.stdout == "write 0x000000000000000b\n", "the guest's O_NONBLOCK was not honoured")
        #expect(fcntl(pipe.write, F_GETFL) & O_NONBLOCK == 0, "the guest changed the caller's open file description")
        try Self.engineStillHealthy()
    }

    /// The finding as reported: `vmfork run` with its stderr a pipe read late. The guest made
    /// the engine's stderr non-blocking, filled it and faulted; the engine trapped writing
    /// its diagnostic (EAGAIN). Now the engine reports the fault and exits with 139.
    @Test func engineReportsAFaultAfterTheGuestFilledItsStderr() throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            static char b[4096];
            sys(SYS_fcntl, 2, F_SETFL, O_NONBLOCK);
            for (int i = 0; i < 1000; i++) if (sys(SYS_write, 2, b, sizeof b) < 0) break;
            *(volatile int *)8 = 1;
            return 0;
        }
        """#, name: "fill-stderr")
        defer { try? FileManager.default.removeItem(at: root) }
        let process = Process()
        process.executableURL = HostFacts.productsFolder.appendingPathComponent("vmfork")
        process.arguments = ["run", "--rootfs", root.path, "--memory", "64", "--", "/prog"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // The reader comes late: the guest fills the pipe and faults before it.
        Thread.sleep(forTimeInterval: 1)
        let written = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 139,
                "vmfork ended by \(process.terminationReason == .exit ? "exit" : "signal") \(process.terminationStatus)")
        #expect(String(decoding: written, as: UTF8.self).contains("vmfork: program terminated by signal 11"))
    }

    // MARK: - Finding 10: engine memory and descriptors

    /// A file mmap built a host buffer as long as the mapping: a 128 MiB mapping cost the
    /// engine 128 MiB of its own memory. The file is read straight into guest frames now.
    @Test(arguments: [true, false]) func fileMmapCostsTheEngineNoMemory(polled: Bool) throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            i64 fd = sys(SYS_open, "/big", O_RDONLY);
            if (fd < 0) return 1;
            for (int i = 0; i < 6; i++) {
                i64 p = sys(SYS_mmap, 0, 128UL << 20, PROT_READ, MAP_PRIVATE, fd, 0);
                if (p < 0 && p > -4096) return 2;
                if (((volatile u8 *)p)[(128UL << 20) - 1] != 0x5a) return 3;
                if (((volatile u8 *)p)[0] != 0x5a) return 4;
                sys(SYS_munmap, p, 128UL << 20);
            }
            return 0;
        }
        """#, name: "mmap-big")
        defer { try? FileManager.default.removeItem(at: root) }
        try Self.makeFile(root.appendingPathComponent("big"), megabytes: 128)
        let (result, growth) = try Self.measuringEngineMemory {
            try GuestRunner.run(["/prog"], rootfs: root, memoryMiB: 256, pollsSystemCalls: polled)
        }
        #expect(result.status == 0)
        #expect(growth < 32 << 20, "the engine grew by \(growth >> 20) MiB serving a guest's file mmap")
        try Self.engineStillHealthy()
    }

    /// The same class: a transfer into or out of a guest buffer whose frames are not
    /// contiguous went through a bounce buffer as long as the guest asked (up to 2 GiB).
    @Test(arguments: [true, false]) func fragmentedBuffersCostTheEngineNoMemory(polled: Bool) throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        #define LEN (64UL << 20)
        int main(void) {
            i64 p = sys(SYS_mmap, 0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            sys(SYS_munmap, p, LEN);
            /* The frames come back in reverse order: no two neighbours are contiguous. */
            u8 *q = (u8 *)sys(SYS_mmap, 0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            i64 big = sys(SYS_open, "/big", O_RDONLY);
            i64 null = sys(SYS_open, "/dev/null", O_WRONLY);
            i64 dir = sys(SYS_open, "/", O_RDONLY | O_DIRECTORY);
            if ((i64)q < 0 || big < 0 || null < 0 || dir < 0) return 1;
            for (int i = 0; i < 2; i++) {
                sys(SYS_lseek, big, 0, 0);
                if (sys(SYS_read, big, q, LEN) != (i64)LEN) return 2;
                if (q[0] != 0x5a || q[LEN - 1] != 0x5a) return 3;
                if (sys(SYS_write, null, q, LEN) != (i64)LEN) return 4;
                if (sys(SYS_getrandom, q, 32UL << 20, 0) <= 0) return 5;
                sys(SYS_lseek, dir, 0, 0);
                if (sys(SYS_getdents64, dir, q, LEN) <= 0) return 6;
            }
            return 0;
        }
        """#, name: "bounce")
        defer { try? FileManager.default.removeItem(at: root) }
        try Self.makeFile(root.appendingPathComponent("big"), megabytes: 64)
        let (result, growth) = try Self.measuringEngineMemory {
            try GuestRunner.run(["/prog"], rootfs: root, memoryMiB: 256, pollsSystemCalls: polled)
        }
        #expect(result.status == 0)
        #expect(growth < 32 << 20, "the engine grew by \(growth >> 20) MiB serving transfers into a fragmented buffer")
        try Self.engineStillHealthy()
    }

    /// A fork child's engine-side records of the frames it reused and of the translations
    /// dropped since the fork grew by an entry per page at each mmap and munmap: a child
    /// mapping and unmapping in a loop grew the engine without bound. They are sets of
    /// frames now, bounded by the VM's memory.
    @Test(arguments: [true, false]) func aForkChildsMappingChurnCostsTheEngineNoMemory(polled: Bool) throws {
        let root = try HostileGuest.rootfs(#"""
        int main(void) {
            for (int i = 0; i < 6000; i++) {
                i64 p = sys(SYS_mmap, 0, 64 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p < 0 && p > -4096) return 1;
                ((volatile u8 *)p)[0] = 1;
                sys(SYS_munmap, p, 64 * 4096);
            }
            return 0;
        }
        """#, name: "churn")
        defer { try? FileManager.default.removeItem(at: root) }
        let system = GuestRunner.system!
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polled)
        let point = try #require(try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog",
                                                             arguments: ["prog"], environment: [], kind: .entry))
        let streams = try CapturedStreams()
        let child = try ProcessVM(forking: point, into: PreparedVM(system: system, forkPoint: point, readAhead: false), identity: GuestIdentity(),
                                  arguments: ["prog"], environment: [], streams: streams.standard)
        let status = try child.run()
        #expect(status == .exited(0))
        // The records themselves, not the process's memory: other tests run in this process
        // at the same time, and a loaded CI host saw them grow it by 8 MiB meanwhile. With the
        // old lists the churn left 6,000 × 64 entries; now at most one per frame of each kind.
        let frames = configuration.memoryBytes / GuestMemory.pageSize
        #expect(child.memory.recordedFrames <= 3 * frames, "the engine holds \(child.memory.recordedFrames) frame records for a VM of \(frames) frames")
        try Self.engineStillHealthy()
    }

    /// Calls the engine does not serve were counted per number, any 64-bit number: a guest
    /// calling distinct numbers grew the engine's table without bound.
    @Test func unservedCallsAreCountedInBoundedSpace() throws {
        let root = try HostileGuest.rootfs(#"""
        int main(void) { for (u64 n = 0; n < 50000; n++) sys(1000 + n * 7919, 0); return 0; }
        """#, name: "missing")
        defer { try? FileManager.default.removeItem(at: root) }
        let result = try GuestRunner.run(["/prog"], rootfs: root)
        #expect(result.status == 0)
        #expect(result.vm.missingSyscalls.count <= 513, "\(result.vm.missingSyscalls.count) entries for unserved calls")
        try Self.engineStillHealthy()
    }

    /// Each VM could hold its 1,021 host descriptors whatever the engine had left: a few
    /// such guests took every descriptor the engine had, and no VM could be made. Guests
    /// together now stop short of the engine's limit (ENFILE), each within its own (EMFILE).
    /// While it runs, every guest of this test process gets ENFILE: `scripts/test.sh` runs it
    /// in a process of its own, after the others.
    @Test func guestsCannotTakeTheEnginesDescriptors() throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            i64 n = 0, r;
            for (;;) { r = sys(SYS_open, "/dev/null", O_RDONLY); if (r < 0) break; n++; }
            u64 limit[2];
            sys(SYS_prlimit64, 0, 7, 0, limit);
            print("opened "); print_hex(n); print(" error "); print_hex(-r); print(" limit "); print_hex(limit[0]); print("\n");
            sleep_long();
            return 0;
        }
        """#, name: "descriptors")
        defer { try? FileManager.default.removeItem(at: root) }
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        let count = Int(limit.rlim_cur) / GuestFiles.defaultDescriptorLimit + 2
        try #require(count <= 64, "the engine's descriptor limit (\(limit.rlim_cur)) is too large to exhaust here")
        var vms: [(ProcessVM, CapturedStreams)] = []
        for _ in 0..<count {
            let streams = try CapturedStreams()
            let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20),
                                   executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
            vms.append((vm, streams))
        }
        let finished = DispatchGroup()
        for (vm, _) in vms {
            finished.enter()
            Thread.detachNewThread {
                _ = try? vm.run()
                finished.leave()
            }
        }
        defer {
            for (vm, _) in vms { vm.kill() }
            _ = finished.wait(timeout: .now() + 30)
        }
        let deadline = Date(timeIntervalSinceNow: 60)
        while Date() < deadline, !vms.allSatisfy({ $0.1.stdout.contains("limit") }) { Thread.sleep(forTimeInterval: 0.05) }
        for (_, streams) in vms {
            let words = streams.stdout.split(separator: " ")
            try #require(words.count == 6, "a guest did not report: \(streams.stdout)")
            let opened = Int(words[1].dropFirst(2), radix: 16)!, error = Int(words[3].dropFirst(2), radix: 16)!
            let reported = Int(words[5].dropFirst(2).dropLast(), radix: 16)!
            #expect(error == 24 || error == 23, "open failed with errno \(error)")
            #expect(reported == GuestFiles.defaultDescriptorLimit && opened + 3 <= reported)
        }
        // With every guest holding all it could, the engine still makes and runs VMs.
        try Self.engineStillHealthy()
    }

    /// A VM's descriptor table is its configured RLIMIT_NOFILE, as getrlimit tells the guest.
    @Test func descriptorLimitIsTheConfiguredOne() throws {
        let root = try HostileGuest.rootfs(Self.moreNumbers + #"""
        int main(void) {
            i64 n = 0, r;
            for (;;) { r = sys(SYS_open, "/dev/null", O_RDONLY); if (r < 0) break; n++; }
            u64 limit[2];
            if (sys(SYS_prlimit64, 0, 7, 0, limit) != 0) return 1;
            return n == 61 && r == -24 && limit[0] == 64 && limit[1] == 64 ? 0 : 2;
        }
        """#, name: "limit")
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20, descriptorLimit: 64),
                               executable: "/prog", arguments: ["prog"], environment: [], streams: streams.standard)
        #expect(try vm.run() == .exited(0))
        try Self.engineStillHealthy()
    }

    // MARK: - Helpers

    /// Runs `vm` on a thread of its own, kills it (or stops it) after `delay` seconds, and
    /// returns its status code, or nil when it has not ended `timeout` seconds after the start.
    static func runKilled(_ vm: ProcessVM, after delay: Double, within timeout: Double, stop: Bool = false) -> Int32? {
        let finished = DispatchSemaphore(value: 0)
        let status = Locked<Int32?>(nil)
        Thread.detachNewThread {
            let result = try? vm.run().code
            status.withLock { $0 = result }
            finished.signal()
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + delay) {
            if stop { vm.sendSignal(15) } else { vm.kill() }
        }
        guard finished.wait(timeout: .now() + timeout) == .success else { return nil }
        return status.withLock { $0 }
    }

    static func makePipe() throws -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw SystemError(call: "pipe2", errno: errno) }
        return (ends[0], ends[1])
    }

    /// A file of `megabytes` MiB of 0x5a bytes.
    static func makeFile(_ url: URL, megabytes: Int) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        for _ in 0..<megabytes { _ = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
    }

    /// Runs `body` while sampling the engine's anonymous resident memory (guest memory is a
    /// memfd, so it is not counted); returns the body's result and the highest growth seen.
    static func measuringEngineMemory<T>(_ body: () throws -> T) throws -> (T, Int) {
        let baseline = anonymousResident()
        let peak = Locked(baseline)
        let done = Locked(false)
        let sampler = Thread {
            while !done.withLock({ $0 }) {
                let now = anonymousResident()
                peak.withLock { $0 = Swift.max($0, now) }
                usleep(1000)
            }
        }
        sampler.start()
        defer { done.withLock { $0 = true } }
        let result = try body()
        let now = anonymousResident()
        return (result, peak.withLock { Swift.max($0, now) } - baseline)
    }

    /// RssAnon of this process, in bytes.
    static func anonymousResident() -> Int {
        guard let status = readKernelFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
              let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) else { return 0 }
        return kilobytes * 1024
    }
}

/// A value shared between a test and the threads it starts.
final class Locked<Value>: @unchecked Sendable {
    // @unchecked: every access to `value` holds `lock`.
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) -> T) -> T { lock.withLock { body(&value) } }
}
