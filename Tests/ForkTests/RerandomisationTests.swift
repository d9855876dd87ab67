import Fork
import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// A warm parent's streams: `streams`' output, and /dev/null as input, as `WarmParent` gives it.
private let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)

func warmParentStreams(_ streams: CapturedStreams) -> StandardStreams {
    StandardStreams(input: devNull, output: streams.output, error: streams.error)
}

/// Children of a parent frozen at its first read of standard input share its start-up: the
/// C library's stack-protector canary and pointer guard were drawn from the parent's
/// AT_RANDOM before the fork point. Each child must get its own, and the parent's frames and
/// mangled pointers it inherits must still work with them.
@Suite(.enabled(if: HostFacts.hasKVM && GlibcGuest.isAvailable, "needs /dev/kvm, gcc and glibc's static library"))
final class RerandomisationTests {
    let system = try! KVMSystem()

    /// A glibc program built with every function stack-protected. Before its first read it
    /// registers an atexit handler, sets a jmp_buf and prints its canary (%fs:0x28), pointer
    /// guard (%fs:0x30) and AT_RANDOM bytes; then it reads a line inside a protected frame
    /// (the fork point), prints them again, returns through that frame's canary check,
    /// longjmps to the buffer set before the read and exits through the handler. Each use of
    /// an inherited frame or mangled pointer aborts or faults if the child's values do not fit;
    /// the jmp_buf's RBP holds 188, not a pointer, and must come back as it was.
    /// C: `report(who)` prints "WHO canary HEX guard HEX random HEX" (see `Secrets`).
    static let reportFunction = #"""
    static void report(const char *who) {
        unsigned long canary, guard;
        __asm__ volatile ("mov %%fs:0x28, %0" : "=r"(canary));
        __asm__ volatile ("mov %%fs:0x30, %0" : "=r"(guard));
        const unsigned char *random = (const unsigned char *)getauxval(AT_RANDOM);
        printf("%s canary %016lx guard %016lx random ", who, canary, guard);
        for (int i = 0; i < 16; i++) printf("%02x", random[i]);
        printf("\n");
        fflush(stdout);
    }
    """#

    static let secretsProgram = #"""
    #include <setjmp.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/auxv.h>

    static jmp_buf before_read;

    static void at_exit_handler(void) { printf("atexit handler ran\n"); }

    \#(reportFunction)

    __attribute__((noinline)) static int read_line(void) {
        char line[64];
        memset(line, 0, sizeof line);
        if (fgets(line, sizeof line, stdin) == NULL) return -1;
        report("child");
        return (int)strlen(line);
    }

    /* Calls body with RBP set to value: glibc mangles a jmp_buf's RBP whatever it holds. */
    int call_with_rbp(unsigned long value, int (*body)(void));
    __asm__(".text\n.globl call_with_rbp\ncall_with_rbp:\n"
            "push %rbp\nmov %rdi, %rbp\ncall *%rsi\npop %rbp\nret\n");

    static unsigned long rbp_at_setjmp, rbp_after_longjmp;

    static int body(void) {
        __asm__ volatile ("mov %%rbp, %0" : "=m"(rbp_at_setjmp));
        if (rbp_at_setjmp != 188) return 6;
        if (setjmp(before_read) == 0) {
            int length = read_line();
            printf("read %d bytes, returned through the protected frame\n", length);
            longjmp(before_read, 1);
        }
        __asm__ volatile ("mov %%rbp, %0" : "=m"(rbp_after_longjmp));
        printf("longjmp landed, rbp %s\n", rbp_after_longjmp == rbp_at_setjmp ? "restored" : "lost");
        return 0;
    }

    int main(void) {
        if (atexit(at_exit_handler) != 0) return 3;
        report("parent");
        return call_with_rbp(188, body);
    }
    """#

    /// What one run of the program printed about itself.
    struct Secrets: Hashable, CustomStringConvertible {
        let canary: UInt64
        let pointerGuard: UInt64
        let random: [UInt8]

        /// Parses "WHO canary HEX guard HEX random HEX".
        init?(line: Substring) {
            let fields = line.split(separator: " ")
            guard fields.count == 7, fields[1] == "canary", fields[3] == "guard", fields[5] == "random",
                  let canary = UInt64(fields[2], radix: 16), let pointerGuard = UInt64(fields[4], radix: 16),
                  fields[6].count == 32 else { return nil }
            let hex = Array(fields[6])
            let random = stride(from: 0, to: 32, by: 2).compactMap { UInt8(String(hex[$0..<($0 + 2)]), radix: 16) }
            guard random.count == 16 else { return nil }
            self.canary = canary
            self.pointerGuard = pointerGuard
            self.random = random
        }

        /// glibc draws the canary from AT_RANDOM's first 8 bytes with the low byte zeroed, and
        /// the pointer guard from the next 8: a child's values must read as if it had started
        /// with its own AT_RANDOM.
        var derivedFromRandom: Bool {
            let first = random[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let second = random[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            return canary == first & ~0xFF && pointerGuard == second
        }

        var description: String {
            "canary \(String(canary, radix: 16)) guard \(String(pointerGuard, radix: 16)) random \(random.map { String(format: "%02x", $0) }.joined())"
        }
    }

    static let childTail = ["read 7 bytes, returned through the protected frame", "longjmp landed, rbp restored", "atexit handler ran"]

    /// Checks a child's output: its secrets, then every inherited frame and pointer at work.
    /// (`exitedCleanly`: the child exited with status 0; `status` describes how it ended.)
    func childSecrets(_ streams: CapturedStreams, exitedCleanly: Bool, status: String, child index: Int) -> Secrets? {
        let lines = streams.stdout.split(separator: "\n")
        #expect(exitedCleanly, "child \(index) ended \(status); stdout \(streams.stdout) stderr \(streams.stderr)")
        #expect(Array(lines.dropFirst().map(String.init)) == Self.childTail, "child \(index): \(streams.stdout)")
        guard let first = lines.first, first.hasPrefix("child "), let secrets = Secrets(line: first) else {
            Issue.record("child \(index) printed no secrets: \(streams.stdout)")
            return nil
        }
        return secrets
    }

    /// Every child differs from the parent and from each sibling in its canary, pointer guard
    /// and AT_RANDOM bytes, and each child's canary and guard are glibc's from its AT_RANDOM.
    func expectFresh(_ children: [Secrets], parent: Secrets?) {
        for child in children {
            #expect(child.derivedFromRandom, "\(child)")
            if let parent {
                #expect(child.canary != parent.canary && child.pointerGuard != parent.pointerGuard && child.random != parent.random,
                        "child \(child) shares with parent \(parent)")
            }
        }
        #expect(Set(children.map(\.canary)).count == children.count, "canaries: \(children)")
        #expect(Set(children.map(\.pointerGuard)).count == children.count, "pointer guards: \(children)")
        #expect(Set(children.map(\.random)).count == children.count, "AT_RANDOM: \(children)")
    }

    @Test func childrenOfAStdinParentGetTheirOwnCanaryPointerGuardAndRandomBytes() throws {
        let root = try GlibcGuest.rootfs(Self.secretsProgram, name: "secrets", flags: ["-O1", "-fstack-protector-all"])
        defer { try? FileManager.default.removeItem(at: root) }
        let parentStreams = try CapturedStreams()
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20)
        let forkPoint = try #require(try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog",
                                                                 arguments: ["/prog"], environment: [], kind: .firstStandardInputRead,
                                                                 streams: warmParentStreams(parentStreams)))
        let parent = try #require(parentStreams.stdout.split(separator: "\n").first.flatMap(Secrets.init(line:)),
                                  "the parent printed \(parentStreams.stdout)")
        #expect(parent.derivedFromRandom, "\(parent)")
        // The canary saved by main's and read_line's frames (and libc's own below them), the
        // TCB's guard, the jmp_buf's RBP, RSP and PC and the atexit handler, at least.
        guard case .rerandomised(let canaries, let guards, let mangled) = forkPoint.rerandomisation.outcome,
              canaries >= 3, guards >= 1, mangled >= 4 else {
            Issue.record("found in the parent: \(forkPoint.rerandomisation.outcome)")
            return
        }
        #expect(forkPoint.rerandomisation.refreshesRandomBytes)

        // Children in new VMs (read ahead, as a pool makes them, and not, as a fork that
        // found its pool empty does), then in VMs reused from the child before.
        var children: [Secrets] = []
        var previous: ProcessVM?
        for index in 0..<8 {
            let prepared: PreparedVM
            if index >= 3, let previous, let reused = try PreparedVM(reusing: previous) {
                #expect(reused.isReused)
                prepared = reused
            } else {
                prepared = try PreparedVM(system: system, forkPoint: forkPoint, readAhead: index != 2)
            }
            let streams = try CapturedStreams(stdin: Data("line-\(index % 10)\n".utf8))
            let child = try ProcessVM(forking: forkPoint, into: prepared,
                                      identity: GuestIdentity(pid: Int32(index + 2), parentPid: 1, hostname: "child-\(index)"),
                                      arguments: nil, environment: nil, streams: streams.standard)
            let status = try child.run()
            if let secrets = childSecrets(streams, exitedCleanly: status == .exited(0), status: "\(status)", child: index) {
                children.append(secrets)
            }
            previous = child
        }
        #expect(children.count == 8)
        expectFresh(children, parent: parent)
    }

    @Test func siblingsForkedFromAWarmParentsPoolDiffer() throws {
        let root = try GlibcGuest.rootfs(Self.secretsProgram, name: "secrets", flags: ["-O2", "-fstack-protector-all"])
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "secrets", rootfs: root.path, executable: "/prog",
                                                                     forkPoint: .firstStandardInputRead), poolSize: 2)
        var children: [Secrets] = []
        var reused = 0
        for index in 0..<20 {
            let streams = try CapturedStreams(stdin: Data("line-\(index % 10)\n".utf8))
            let child = try parent.fork(streams: streams.standard)
            if child.reusesVM { reused += 1 }
            let status = try child.run()
            if let secrets = childSecrets(streams, exitedCleanly: status == .exited(0), status: "\(status)", child: index) {
                children.append(secrets)
            }
            child.remove()
            // The VM goes back to the pool before the next fork (else, on a busy machine, the
            // pool's refill may fill it first and the removed VM is let go instead).
            parent.waitForTeardown()
        }
        #expect(children.count == 20)
        #expect(reused > 0, "no child ran in a reused VM")
        expectFresh(children, parent: nil)
    }
}

/// Parents whose start-up the engine cannot vouch for: no thread pointer, one outside the
/// program's memory, a thread control block that is not glibc's, or one that a hostile
/// program forged with more copies of its canary than a child may have rewritten. The
/// parent is forked with its canary and guard kept (and the reason logged); nothing crashes,
/// and the children run. And what the engine cannot draw again, which it counts: bytes the
/// parent drew from getrandom before its fork point.
@Suite(.enabled(if: HostFacts.hasKVM && HostileGuest.isAvailable, "needs /dev/kvm and gcc"))
final class RerandomisationRefusalTests {
    let system = try! KVMSystem()

    /// Sets its FS base to `FS_BASE` (when not 0), reads a line and echoes it.
    static let readsWithThreadPointer = #"""
    static u64 fake[8] __attribute__((aligned(64)));
    int main(void) {
        u64 fs = FS_BASE;
        if (fs != 0 && sys(158, 0x1002, fs) != 0) return 10; /* arch_prctl(ARCH_SET_FS) */
        char line[16];
        i64 length = sys(SYS_read, 0, line, sizeof line);
        if (length <= 0) return 11;
        print("got ");
        sys(SYS_write, 1, line, length);
        return 0;
    }
    """#

    /// Forks three children of `root`'s /prog, each reading its own line; returns what each
    /// printed, after checking it exited with 0.
    func forkChildren(of forkPoint: ForkPoint) throws -> [String] {
        var outputs: [String] = []
        for index in 0..<3 {
            let prepared = try PreparedVM(system: system, forkPoint: forkPoint, readAhead: index != 0)
            let streams = try CapturedStreams(stdin: Data("line-\(index)\n".utf8))
            let child = try ProcessVM(forking: forkPoint, into: prepared,
                                      identity: GuestIdentity(pid: Int32(index + 2), parentPid: 1, hostname: "child-\(index)"),
                                      arguments: nil, environment: nil, streams: streams.standard)
            let status = try child.run()
            #expect(status == .exited(0), "child \(index): \(status), \(streams.stdout)")
            outputs.append(streams.stdout)
        }
        return outputs
    }

    func stdinForkPoint(_ root: URL) throws -> ForkPoint {
        let configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20)
        let streams = try CapturedStreams()
        return try withExtendedLifetime(streams) {
            try #require(try ProcessVM.makeForkPoint(system: system, configuration: configuration, executable: "/prog",
                                                     arguments: ["/prog"], environment: [], kind: .firstStandardInputRead,
                                                     streams: warmParentStreams(streams)), "the parent ended: \(streams.stdout) \(streams.stderr)")
        }
    }

    @Test(arguments: [
        ("0", "no thread pointer"),
        ("0x7fff00000000UL", "not an aligned address in the program's writable memory"), // unmapped
        ("0xB000UL", "not an aligned address in the program's writable memory"), // the engine's mailbox page
        ("(u64)fake + 3", "not an aligned address in the program's writable memory"),
        ("(u64)fake", "%fs:0 does not hold the thread pointer"),
    ])
    func parentsWithoutGlibcsThreadControlBlockKeepTheirSecrets(fsBase: String, reason: String) throws {
        let root = try HostileGuest.rootfs("#define FS_BASE (\(fsBase))\n" + Self.readsWithThreadPointer, name: "nothreadpointer")
        defer { try? FileManager.default.removeItem(at: root) }
        let forkPoint = try stdinForkPoint(root)
        guard case .skipped(let why) = forkPoint.rerandomisation.outcome else {
            Issue.record("FS base \(fsBase): \(forkPoint.rerandomisation.outcome)")
            return
        }
        #expect(why.contains(reason), "FS base \(fsBase): \(why)")
        // AT_RANDOM is still the parent's, where the engine put it: the children get their own.
        #expect(forkPoint.rerandomisation.refreshesRandomBytes)
        #expect(try forkChildren(of: forkPoint) == (0..<3).map { "got line-\($0)\n" })
    }

    @Test func bytesTheParentDrewFromGetrandomAreCountedAsShared() throws {
        let root = try HostileGuest.rootfs(#"""
            int main(void) {
                u8 seed[16];
                if (sys(SYS_getrandom, seed, sizeof seed, 0) != 16) return 10;
                char line[16];
                i64 length = sys(SYS_read, 0, line, sizeof line);
                if (length <= 0) return 11;
                print("got ");
                sys(SYS_write, 1, line, length);
                return 0;
            }
            """#, name: "getrandom")
        defer { try? FileManager.default.removeItem(at: root) }
        let forkPoint = try stdinForkPoint(root)
        #expect(forkPoint.rerandomisation.sharedRandomBytes == 16)
        #expect("\(forkPoint.rerandomisation)".hasSuffix("children share the 16 bytes the parent drew from getrandom before its fork point"))
        #expect(try forkChildren(of: forkPoint) == (0..<3).map { "got line-\($0)\n" })
    }

    /// Builds a glibc-like thread control block from its own AT_RANDOM (self pointer, canary
    /// with the low byte zeroed, guard), keeps COPIES copies of the canary and one function
    /// pointer mangled with the guard, then reads a line (the fork point). After it, every
    /// copy must equal %fs:0x28 and the pointer must demangle with %fs:0x30 to the function,
    /// which it calls; it prints the canary, guard and AT_RANDOM.
    static let forgedThreadControlBlock = #"""
    u64 *initial_sp;
    __attribute__((naked, noreturn)) void entry(void) { __asm__ volatile ("mov %rsp, initial_sp(%rip)\n\tjmp _start"); }
    static u64 tcb[8] __attribute__((aligned(64)));
    static u64 copies[COPIES];
    static u64 mangled;
    static volatile int called;
    static void target(void) { called = 1; }
    static u64 le(const u8 *b) { u64 v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | b[i]; return v; }
    int main(void) {
        u64 *p = initial_sp;
        p += *p + 2;            /* argc, argv, NULL */
        while (*p) p++;         /* envp */
        const u8 *random = 0;
        for (p++; p[0]; p += 2) if (p[0] == 25) random = (const u8 *)p[1];   /* AT_RANDOM */
        if (!random) return 10;
        u64 canary = le(random) & ~0xFFUL, guard = le(random + 8);
        tcb[0] = (u64)tcb; tcb[5] = canary; tcb[6] = guard;
        if (sys(158, 0x1002, tcb) != 0) return 11;
        for (int i = 0; i < COPIES; i++) copies[i] = canary;
        u64 x = (u64)&target ^ guard;
        mangled = x << 17 | x >> 47;
        char line[16];
        if (sys(SYS_read, 0, line, sizeof line) <= 0) return 12;
        u64 c, g;
        __asm__ volatile ("mov %%fs:0x28, %0" : "=r"(c));
        __asm__ volatile ("mov %%fs:0x30, %0" : "=r"(g));
        for (int i = 0; i < COPIES; i++) if (copies[i] != c) return 20;
        void (*f)(void) = (void (*)(void))((mangled >> 17 | mangled << 47) ^ g);
        f();
        if (!called) return 21;
        print("canary "); print_hex(c); print(" guard "); print_hex(g); print(" random ");
        print_hex(le(random)); print_hex(le(random + 8)); print("\n");
        return 0;
    }
    """#

    @Test func aForgedThreadControlBlockIsRerandomisedWhereverItsSecretsAre() throws {
        let root = try HostileGuest.rootfs("#define COPIES 10\n" + Self.forgedThreadControlBlock, name: "forged",
                                           linkerFlags: ["-Wl,-e,entry"])
        defer { try? FileManager.default.removeItem(at: root) }
        let forkPoint = try stdinForkPoint(root)
        // Its copies and the TCB's, and any the compiler left in callee-saved registers or on the stack.
        guard case .rerandomised(let canaries, let guards, let mangled) = forkPoint.rerandomisation.outcome,
              canaries >= 11, guards >= 1, mangled >= 1 else {
            Issue.record("found in the parent: \(forkPoint.rerandomisation.outcome)")
            return
        }
        let outputs = try forkChildren(of: forkPoint)
        #expect(Set(outputs).count == 3, "\(outputs)")
        // "canary C guard G random R0R1": C and G are glibc's from R0 and R1, AT_RANDOM's two words.
        for output in outputs {
            let fields = output.split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard fields.count == 6, let canary = UInt64(fields[1].dropFirst(2), radix: 16),
                  let pointerGuard = UInt64(fields[3].dropFirst(2), radix: 16), fields[5].count == 36,
                  let first = UInt64(fields[5].dropFirst(2).prefix(16), radix: 16),
                  let second = UInt64(fields[5].suffix(16), radix: 16) else {
                Issue.record("a child printed \(output)")
                continue
            }
            #expect(canary == first & ~0xFF && pointerGuard == second, "\(output)")
        }
    }

    @Test func aParentWithMoreCopiesThanAChildMayHaveRewrittenKeepsItsSecrets() throws {
        let copies = StartupRerandomisation.maximumSites + 1
        let root = try HostileGuest.rootfs("#define COPIES \(copies)\n" + Self.forgedThreadControlBlock, name: "flood",
                                           linkerFlags: ["-Wl,-e,entry"])
        defer { try? FileManager.default.removeItem(at: root) }
        let forkPoint = try stdinForkPoint(root)
        guard case .skipped(let why) = forkPoint.rerandomisation.outcome else {
            Issue.record("\(forkPoint.rerandomisation.outcome)")
            return
        }
        #expect(why.contains("more than \(StartupRerandomisation.maximumSites)"), "\(why)")
        // The children keep the parent's canary and guard, and every copy and pointer works.
        let outputs = try forkChildren(of: forkPoint).map { $0.split(separator: " ").prefix(4).joined(separator: " ") }
        #expect(Set(outputs).count == 1, "\(outputs)")
    }
}
