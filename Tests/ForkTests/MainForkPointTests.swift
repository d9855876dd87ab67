import Fork
import Foundation
import KVM
import ProcessVM
import TestSupport
import Testing

/// A parent stopped at its program's main: the C library's start-up runs once, in the
/// parent, and each child starts at main with its own arguments and environment.
@Suite(.enabled(if: HostFacts.hasKVM && GlibcGuest.isAvailable, "needs /dev/kvm, gcc and glibc's static library"))
final class MainForkPointTests {
    let system = try! KVMSystem()

    /// A constructor (start-up code, before main) counts its runs and says so on stdout; main
    /// prints that count, its arguments and its whole environment, and what getenv finds.
    static let argumentsProgram = #"""
    #include <stdio.h>
    #include <stdlib.h>
    #include <unistd.h>

    extern char **environ;
    static int constructor_runs;

    __attribute__((constructor)) static void before_main(void) {
        constructor_runs++;
        printf("constructor ran\n");
        fflush(stdout);
    }

    int main(int argc, char **argv, char **envp) {
        printf("constructor runs %d\n", constructor_runs);
        printf("argc %d\n", argc);
        for (int i = 0; i < argc; i++) printf("argv[%d] %s\n", i, argv[i]);
        for (char **e = environ; *e; e++) printf("env %s\n", *e);
        printf("envp is environ: %s\n", envp == environ ? "yes" : "no");
        const char *greeting = getenv("GREETING");
        printf("GREETING %s\n", greeting ? greeting : "(unset)");
        return argc;
    }
    """#

    /// What the program prints natively with `arguments` and `environment`.
    func native(_ root: URL, _ arguments: [String], environment: [String]) throws -> String {
        let result = try HostFacts.run("/usr/bin/env", ["-i"] + environment + [root.appendingPathComponent("prog").path] + arguments.dropFirst())
        // argv[0] natively is the host path; the child's is the image's.
        return result.stdout.replacingOccurrences(of: root.appendingPathComponent("prog").path, with: "/prog")
    }

    @Test(arguments: [["-O1"], ["-O1", "-static-pie", "-fPIE"]])
    func childrenStartAtMainWithTheirOwnArgumentsAndEnvironment(flags: [String]) throws {
        let root = try GlibcGuest.rootfs(Self.argumentsProgram, name: "arguments", flags: flags)
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(ProcessVM.mainForkPointRefusal(rootfs: root.path, executable: "/prog") == nil)
        let parentStreams = try CapturedStreams()
        let forkPoint = try #require(try ProcessVM.makeForkPoint(
            system: system, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20), executable: "/prog",
            arguments: ["/prog", "parent"], environment: ["GREETING=parent", "PARENT_ONLY=1"], kind: .main,
            streams: parentStreams.standard))
        // The start-up ran in the parent, and main did not.
        #expect(parentStreams.stdout == "constructor ran\n")

        let cases: [(arguments: [String], environment: [String])] = [
            (["/prog"], []),
            (["/prog", "one", "two words", ""], ["GREETING=hello", "A=1"]),
            (["/prog"] + (0..<50).map { "argument-\($0)" }, (0..<200).map { "VARIABLE_\($0)=\(String(repeating: "v", count: $0))" } + ["GREETING=many"]),
        ]
        var previous: ProcessVM?
        for (index, test) in cases.enumerated() {
            let prepared: PreparedVM
            if let previous, let reused = try PreparedVM(reusing: previous) { prepared = reused } else {
                prepared = try PreparedVM(system: system, forkPoint: forkPoint, readAhead: true)
            }
            let streams = try CapturedStreams()
            let child = try ProcessVM(forking: forkPoint, into: prepared, identity: GuestIdentity(pid: Int32(index + 2), parentPid: 1, hostname: "c\(index)"),
                                      arguments: test.arguments, environment: test.environment, streams: streams.standard)
            let status = try child.run()
            let expected = try native(root, test.arguments, environment: test.environment)
            #expect(status == .exited(Int32(test.arguments.count)), "case \(index): \(streams.stderr)")
            // Natively the constructor prints first; in the child it ran in the parent.
            #expect(expected.hasPrefix("constructor ran\nconstructor runs 1\n"))
            #expect(streams.stdout == String(expected.dropFirst("constructor ran\n".count)), "case \(index)")
            previous = child
        }
    }

    /// main prints the canary, the pointer guard and AT_RANDOM; the constructor does too, in
    /// the parent. Every child has its own, drawn as glibc would from its own AT_RANDOM.
    static let secretsProgram = #"""
    #include <stdio.h>
    #include <sys/auxv.h>

    \#(RerandomisationTests.reportFunction)

    __attribute__((constructor)) static void before_main(void) { report("parent"); }

    int main(void) {
        report("child");
        return 0;
    }
    """#

    @Test func childrenGetTheirOwnCanaryPointerGuardAndRandomBytes() throws {
        let root = try GlibcGuest.rootfs(Self.secretsProgram, name: "secrets", flags: ["-O1", "-fstack-protector-all"])
        defer { try? FileManager.default.removeItem(at: root) }
        let parentStreams = try CapturedStreams()
        let forkPoint = try #require(try ProcessVM.makeForkPoint(
            system: system, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20), executable: "/prog",
            arguments: ["/prog"], environment: [], kind: .main, streams: parentStreams.standard))
        let parent = try #require(parentStreams.stdout.split(separator: "\n").first.flatMap(RerandomisationTests.Secrets.init(line:)))
        guard case .rerandomised = forkPoint.rerandomisation.outcome else {
            Issue.record("the parent's secrets were not found: \(forkPoint.rerandomisation.outcome)")
            return
        }
        var children: [RerandomisationTests.Secrets] = []
        var previous: ProcessVM?
        for index in 0..<6 {
            let prepared: PreparedVM
            if index >= 3, let previous, let reused = try PreparedVM(reusing: previous) { prepared = reused } else {
                prepared = try PreparedVM(system: system, forkPoint: forkPoint, readAhead: index != 1)
            }
            let streams = try CapturedStreams()
            let child = try ProcessVM(forking: forkPoint, into: prepared, identity: GuestIdentity(pid: Int32(index + 2), parentPid: 1, hostname: "c"),
                                      arguments: ["/prog"], environment: [], streams: streams.standard)
            #expect(try child.run() == .exited(0), "\(streams.stderr)")
            let line = streams.stdout.split(separator: "\n").first
            #expect(line?.hasPrefix("child ") == true, "\(streams.stdout)")
            if let secrets = line.flatMap(RerandomisationTests.Secrets.init(line:)) { children.append(secrets) }
            previous = child
        }
        #expect(children.count == 6)
        for child in children {
            #expect(child.derivedFromRandom, "\(child)")
            #expect(child.canary != parent.canary && child.pointerGuard != parent.pointerGuard && child.random != parent.random)
        }
        #expect(Set(children.map(\.canary)).count == children.count && Set(children.map(\.random)).count == children.count)
    }

    /// The address a program gave set_tid_address holds the thread id, which glibc caches
    /// there at start-up: each child finds its own pid there, as after the kernel's fork.
    @Test func eachChildFindsItsOwnPidWhereTheProgramAskedForItsThreadID() throws {
        let source = """
        #include <stdio.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        static int thread_id;
        __attribute__((constructor)) static void before_main(void) { thread_id = (int)syscall(SYS_set_tid_address, &thread_id); }
        int main(void) {
            printf("%d %d\\n", thread_id, getpid());
            return 0;
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "thread-id")
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "tid", rootfs: root.path, executable: "/prog",
                                                                     memoryBytes: 16 << 20, forkPoint: .main), poolSize: 2)
        var pids: Set<String> = []
        for _ in 0..<4 {
            let streams = try CapturedStreams()
            let child = try parent.fork(arguments: [], streams: streams.standard)
            #expect(try child.run() == .exited(0))
            let fields = streams.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(fields.count == 2 && fields[0] == fields[1], "thread id and pid: \(streams.stdout)")
            pids.insert(fields.first ?? "")
            child.remove()
        }
        #expect(pids.count == 4, "each child its own pid: \(pids)")
    }

    /// Start-up code that never reaches main, ends first, or traps on its own: each a clear
    /// refusal that names what happened, within the limit.
    @Test(arguments: [
        ("while (1) {}", "did not reach main within"),
        ("_exit(3);", "ended before it reached main (exited with 3)"),
        ("__asm__ volatile (\"int3\");", "ended before it reached main (killed by signal 5"),
    ])
    func startUpThatDoesNotReachMainIsRefused(constructorBody: String, reason: String) throws {
        let source = """
        #include <unistd.h>
        __attribute__((constructor)) static void before_main(void) { \(constructorBody) }
        int main(void) { return 0; }
        """
        let root = try GlibcGuest.rootfs(source, name: "no-main")
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        #expect {
            _ = try ProcessVM.makeForkPoint(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 32 << 20),
                                            executable: "/prog", arguments: ["/prog"], environment: [], kind: .main,
                                            streams: streams.standard, startupLimit: .milliseconds(500))
        } throws: { error in
            guard let error = error as? GuestError, case .noMainForkPoint = error else { return false }
            return error.description.contains(reason)
        }
    }

    /// A program whose entry point is not glibc's `_start` has no main the engine can find:
    /// it says so, before and when a parent is made, and the entry point still works.
    @Test func aProgramWithoutGlibcsStartIsRefusedWithWhatWasFound() throws {
        // The prelude's own `_start` (stack pointer to C, then its main), as a program built
        // without a C library, or with another one, has.
        let root = try HostileGuest.rootfs("int main(void) { return 0; }", name: "no-glibc")
        defer { try? FileManager.default.removeItem(at: root) }
        let refusal = try #require(ProcessVM.mainForkPointRefusal(rootfs: root.path, executable: "/prog"))
        #expect(refusal.contains("not glibc's _start"), "\(refusal)")
        let streams = try CapturedStreams()
        #expect {
            _ = try ProcessVM.makeForkPoint(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20),
                                            executable: "/prog", arguments: ["/prog"], environment: [], kind: .main, streams: streams.standard)
        } throws: { error in
            (error as? GuestError)?.description.contains("not glibc's _start") == true
        }
        let entry = try #require(try ProcessVM.makeForkPoint(system: system, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 16 << 20),
                                                             executable: "/prog", arguments: ["/prog"], environment: [], kind: .entry,
                                                             streams: streams.standard))
        let child = try ProcessVM(forking: entry, into: try PreparedVM(system: system, forkPoint: entry, readAhead: false),
                                  identity: GuestIdentity(pid: 2, parentPid: 1, hostname: "c"), arguments: ["/prog"], environment: [],
                                  streams: streams.standard)
        #expect(try child.run() == .exited(0))
    }

    /// Arguments or an environment beyond the room the parent left are refused by name.
    @Test func argumentsBeyondTheParentsRoomAreRefused() throws {
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: root.path, executable: "/bin/busybox",
                                                                     memoryBytes: 32 << 20, forkPoint: .main), poolSize: 1)
        let streams = try CapturedStreams()
        let tooMany = (0..<300).map { "V\($0)=x" }
        #expect { _ = try parent.fork(arguments: ["true"], environment: tooMany, streams: streams.standard) } throws: { error in
            "\(error)".contains("300 environment variables")
        }
        let tooLong = [String(repeating: "a", count: 200 << 10)]
        #expect { _ = try parent.fork(arguments: ["echo"] + tooLong, streams: streams.standard) } throws: { error in
            "\(error)".contains("bytes of arguments and environment")
        }
        // The parent still forks.
        let child = try parent.fork(arguments: ["echo", "still", "here"], streams: streams.standard)
        #expect(try child.run() == .exited(0))
        #expect(streams.stdout == "still here\n")
        child.remove()
    }

    /// The point of forking at main: a child of busybox makes a fraction of the exits one of
    /// its entry point makes (KVM's own count), since the C library's start-up — its CPUID
    /// probing above all — ran once, in the parent. At most half: where CPUID exits (20 µs
    /// each on most machines of this kind) the medians were 8 against ~70; where it does not
    /// (0.7 µs, 2026-12-06) 6-8 against 25-38, and 8 against 29 under CI's load, which a
    /// bound of a quarter failed.
    /// A `busybox echo hi` child in a reused VM, its output buffered, makes one exit: its
    /// exit_group's `out`. Its `_exit` loads the number from a register (`mov eax, esi`),
    /// which the loader rewrites too since 2026-12-07; before, that call went through PVM's
    /// SYSCALL switch, a second exit. The fewest of six (a busy host only adds exits).
    @Test func aBusyboxEchoChildMakesOneExit() throws {
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: root.path, executable: "/bin/busybox",
                                                                     memoryBytes: 32 << 20, forkPoint: .main), poolSize: 2)
        var exits: [UInt64] = []
        for _ in 0..<6 {
            let streams = try CapturedStreams()
            let child = try parent.fork(arguments: ["echo", "hi"], streams: streams.standard)
            #expect(try child.run() == .exited(0))
            #expect(streams.stdout == "hi\n")
            if child.reusesVM, let counters = child.processVM?.lastRunCounters { exits.append(counters.exits) }
            child.remove()
            parent.waitForTeardown()
        }
        #expect(exits.count >= 4 && exits.min() == 1, "exits of reused VMs' children: \(exits)")
    }

    @Test func childrenOfAMainParentMakeAFractionOfTheExits() throws {
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        func medianExits(_ kind: ForkPoint.Kind) throws -> UInt64 {
            let parent = try WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: root.path, executable: "/bin/busybox",
                                                                         memoryBytes: 32 << 20, forkPoint: kind), poolSize: 2)
            var exits: [UInt64] = []
            for _ in 0..<9 {
                let streams = try CapturedStreams()
                let child = try parent.fork(arguments: ["echo", "hi"], streams: streams.standard)
                #expect(try child.run() == .exited(0))
                #expect(streams.stdout == "hi\n")
                if let counters = child.processVM?.lastRunCounters { exits.append(counters.exits) }
                child.remove()
                parent.waitForTeardown()
            }
            return exits.sorted()[exits.count / 2]
        }
        let main = try medianExits(.main)
        let entry = try medianExits(.entry)
        #expect(main > 0, "KVM counted no exit at all")
        #expect(main * 2 <= entry, "exits per child: main \(main), entry \(entry)")
    }
}
