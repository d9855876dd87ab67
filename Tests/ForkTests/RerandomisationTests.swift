import Fork
import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

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
    /// an inherited frame or mangled pointer aborts or faults if the child's values do not fit.
    static let secretsProgram = #"""
    #include <setjmp.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/auxv.h>

    static jmp_buf before_read;

    static void at_exit_handler(void) { printf("atexit handler ran\n"); }

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

    __attribute__((noinline)) static int read_line(void) {
        char line[64];
        memset(line, 0, sizeof line);
        if (fgets(line, sizeof line, stdin) == NULL) return -1;
        report("child");
        return (int)strlen(line);
    }

    int main(void) {
        if (atexit(at_exit_handler) != 0) return 3;
        report("parent");
        if (setjmp(before_read) == 0) {
            int length = read_line();
            printf("read %d bytes, returned through the protected frame\n", length);
            longjmp(before_read, 1);
        }
        printf("longjmp landed\n");
        return 0;
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

    static let childTail = ["read 7 bytes, returned through the protected frame", "longjmp landed", "atexit handler ran"]

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
                                                                 streams: parentStreams.standard))
        let parent = try #require(parentStreams.stdout.split(separator: "\n").first.flatMap(Secrets.init(line:)),
                                  "the parent printed \(parentStreams.stdout)")
        #expect(parent.derivedFromRandom, "\(parent)")

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
        let parent = try WarmParent(system: system, image: ImageSpec(name: "secrets", rootfs: root.path, executable: "/prog",
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
        }
        #expect(children.count == 20)
        #expect(reused > 0, "no child ran in a reused VM")
        expectFresh(children, parent: nil)
    }
}
