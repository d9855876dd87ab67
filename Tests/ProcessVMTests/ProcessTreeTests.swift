import Fork
import Foundation
import ProcessVM
import TestSupport
import Testing

/// Processes inside a container: pipes, fork (a copy of the process in a VM of its own),
/// execve, wait4, kill, process groups — each against the same program run natively on the
/// same files (the rootfs as the VM's "/" and as the native run's working directory).
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct ProcessTreeShellTests {
    static let scripts: [String] = [
        "echo hi | cat",
        "a=$(echo x); echo $a",
        "false; echo $?",
        // 20 forks in a loop: each subshell exits with its own status.
        "i=0; while [ $i -lt 20 ]; do (exit $i); echo -n \"$? \"; i=$((i+1)); done; echo",
        "cat data/words.txt | sort | uniq -c | sort -rn | head -3",
        "true && echo and; false || echo or; false && echo never; echo $?",
        "sleep 0.1 & echo started; wait; echo waited $?",
        "sh -c 'exit 7'; echo $?",
        // The shell may or may not report the job as "Killed", by timing (natively too).
        "{ sleep 5 & kill -9 $!; wait $!; echo $?; } 2>/dev/null",
        "./data/hello.txt; echo $?; nosuchcommand; echo $?",
        "echo $(echo $(echo nested)) $(ls data | wc -l)",
        "exec cat data/hello.txt",
    ]

    @Test(arguments: scripts.indices, [false, true])
    func shellScriptsRunAsNatively(index: Int, polled: Bool) throws {
        let script = Self.scripts[index]
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let environment = ["PATH=/bin", "HOME=/", "LANG=C"]
        // The test runner's threads may block signals, which a native child inherits (busybox
        // sh's `wait` then never sees SIGCHLD): the native run starts with none blocked.
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        let native = try BusyboxRootfs.runNatively(["sh", "-c", script], in: root, environment: environment)
        let guest = try GuestRunner.run(["/bin/busybox", "sh", "-c", script], rootfs: root, environment: environment, pollsSystemCalls: polled)
        #expect(guest.status == native.status, "status for \(script): \(guest.stderr)")
        #expect(guest.stdout == native.stdout, "stdout for \(script)")
        #expect(guest.stderr == native.stderr, "stderr for \(script)")
        #expect(guest.vm.missingSyscalls.isEmpty, "unserved system calls: \(guest.vm.missingSyscalls)")
        // Every forked process ended and was counted; none is left running.
        let ended = guest.vm.tree.endedProcesses
        #expect(guest.vm.tree.runningVMs.isEmpty)
        #expect(ended.filter { $0.status != .signaled(9) }.allSatisfy { $0.exits.map { $0 > 0 } ?? true })
        let exits = ended.compactMap(\.exits).sorted()
        print("processes: \(script) — \(ended.count) forked, exits per forked process p50 \(exits.isEmpty ? 0 : exits[exits.count / 2]), max \(exits.last ?? 0)")
    }
}

/// Static C programs (gcc -static, glibc) that fork, wait, pipe and share descriptors,
/// against the same binary run natively.
@Suite(.enabled(if: HostFacts.hasKVM && GlibcGuest.isAvailable, "needs /dev/kvm, gcc and glibc's static library"))
struct ProcessTreeProgramTests {
    static let forks = """
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <unistd.h>
    #include <fcntl.h>
    #include <errno.h>
    #include <signal.h>
    #include <sys/wait.h>
    int main(void) {
        setvbuf(stdout, NULL, _IONBF, 0);
        // Natively the test runner's thread may have signals blocked, which a child inherits.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        // 20 forks in a loop, each child exits with its own status; the parent reaps each.
        int sum = 0;
        for (int i = 0; i < 20; i++) {
            pid_t child = fork();
            if (child < 0) { printf("fork: %s\\n", strerror(errno)); return 1; }
            if (child == 0) _exit(getppid() > 0 ? i : 99);
            int status = 0;
            if (waitpid(child, &status, 0) != child) { printf("waitpid: %s\\n", strerror(errno)); return 1; }
            sum += WIFEXITED(status) ? WEXITSTATUS(status) : 1000;
        }
        printf("sum of statuses %d\\n", sum);
        printf("no more children: %s\\n", waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD ? "ECHILD" : "?");
        // A pipe: the child writes, the parent reads to the end (the child's end closes as it exits).
        int ends[2];
        if (pipe(ends) != 0) return 2;
        pid_t writer = fork();
        if (writer == 0) {
            close(ends[0]);
            for (int i = 0; i < 1000; i++) dprintf(ends[1], "line %d\\n", i);
            _exit(0);
        }
        close(ends[1]);
        char buffer[4096];
        long total = 0, got;
        while ((got = read(ends[0], buffer, sizeof buffer)) > 0) total += got;
        printf("read %ld bytes from the pipe, then %ld\\n", total, got);
        waitpid(writer, NULL, 0);
        // A descriptor shared across fork shares its offset.
        int file = open("data/hello.txt", O_RDONLY);
        pid_t reader = fork();
        if (reader == 0) { char skip[6]; _exit(read(file, skip, 6) == 6 ? 0 : 1); }
        int status;
        waitpid(reader, &status, 0);
        char rest[64] = {0};
        read(file, rest, 10);
        printf("after the child's read: %s\\n", rest);
        // dup2 onto stdout, in a child; the parent's stdout is untouched.
        pid_t redirected = fork();
        if (redirected == 0) {
            int copy[2];
            pipe(copy);
            dup2(copy[1], 1);
            printf("into the pipe\\n");
            close(1);
            close(copy[1]);
            char seen[64] = {0};
            read(copy[0], seen, sizeof seen - 1);
            dprintf(2, "child saw: %s", seen);
            _exit(0);
        }
        waitpid(redirected, NULL, 0);
        // A child killed by a signal, and one killed by another process.
        pid_t victim = fork();
        if (victim == 0) { pause(); _exit(0); }
        kill(victim, SIGTERM);
        waitpid(victim, &status, 0);
        printf("victim: signaled %d by %d\\n", WIFSIGNALED(status), WTERMSIG(status));
        pid_t crasher = fork();
        if (crasher == 0) { *(volatile int *)16 = 1; _exit(0); }
        waitpid(crasher, &status, 0);
        printf("crasher: signaled %d by %d\\n", WIFSIGNALED(status), WTERMSIG(status));
        // Process groups.
        pid_t leader = fork();
        if (leader == 0) {
            if (setpgid(0, 0) != 0) _exit(1);
            _exit(getpgrp() == getpid() ? 5 : 6);
        }
        waitpid(leader, &status, 0);
        printf("group leader: %d\\n", WEXITSTATUS(status));
        pid_t session = fork();
        if (session == 0) {
            pid_t made = setsid();
            _exit(made == getpid() && getsid(0) == made && setsid() < 0 && errno == EPERM ? 7 : 8);
        }
        waitpid(session, &status, 0);
        printf("new session: %d\\n", WEXITSTATUS(status));
        return 0;
    }
    """

    @Test func forksPipesAndWaitsAsNatively() throws {
        let root = try GlibcGuest.rootfs(Self.forks, name: "forks")
        defer { try? FileManager.default.removeItem(at: root) }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("data"), withIntermediateDirectories: true)
        try "hello from the rootfs\n".write(to: root.appendingPathComponent("data/hello.txt"), atomically: true, encoding: .utf8)
        let native = try HostFacts.run(root.appendingPathComponent("prog").path, [], currentDirectory: root)
        for polled in [false, true] {
            let guest = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled)
            #expect(guest.status == native.status, "\(guest.stderr)")
            #expect(guest.stdout == native.stdout)
            #expect(guest.stderr == native.stderr)
            #expect(guest.vm.missingSyscalls.isEmpty, "unserved system calls: \(guest.vm.missingSyscalls)")
            let ended = guest.vm.tree.endedProcesses
            #expect(ended.count == 27)
            #expect(guest.vm.tree.runningVMs.isEmpty)
            let exits = ended.compactMap(\.exits).sorted()
            print("processes: \(ended.count) forked (polled \(polled)), exits per forked process p50 \(exits.isEmpty ? 0 : exits[exits.count / 2]), max \(exits.last ?? 0)")
        }
    }

    /// Job control: SIGSTOP and SIGTSTP stop a child (wait4 WUNTRACED and waitid WSTOPPED
    /// report it, WNOHANG then finds nothing), SIGCONT lets it go on (WCONTINUED, CLD_CONTINUED),
    /// SIGKILL ends a stopped child, a child handling SIGTSTP runs its handler instead of
    /// stopping, a SIGCHLD handler hears the stop unless SA_NOCLDSTOP, and a process that
    /// stops itself with raise(SIGSTOP) goes on at SIGCONT — as natively. (Every wait is
    /// bounded: under an engine without stops the program fails rather than hangs.)
    static let jobControl = """
    #include <signal.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/wait.h>
    #include <unistd.h>
    static volatile sig_atomic_t got_tstp = 0, got_chld = 0;
    static void on_tstp(int s) { (void)s; got_tstp = 1; }
    static void on_chld(int s) { (void)s; got_chld++; }
    static pid_t spin(void) {
        pid_t p = fork();
        if (p == 0) { for (int i = 0; i < 3000; i++) usleep(1000); _exit(7); }
        return p;
    }
    int main(void) {
        setvbuf(stdout, NULL, _IONBF, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int st;
        siginfo_t si;
        pid_t p = spin();
        kill(p, SIGSTOP);
        pid_t r = waitpid(p, &st, WUNTRACED);
        printf("stopped: %d stopped=%d sig=%d\\n", r == p, WIFSTOPPED(st), WSTOPSIG(st));
        printf("nothing more: %d\\n", (int)waitpid(p, &st, WNOHANG | WUNTRACED));
        kill(p, SIGCONT);
        r = waitpid(p, &st, WCONTINUED);
        printf("continued: %d continued=%d\\n", r == p, WIFCONTINUED(st));
        kill(p, SIGTSTP);
        memset(&si, 0, sizeof si);
        waitid(P_PID, p, &si, WSTOPPED);
        printf("waitid stopped: code=%d status=%d\\n", si.si_code, si.si_status);
        kill(p, SIGCONT);
        memset(&si, 0, sizeof si);
        waitid(P_PID, p, &si, WCONTINUED);
        printf("waitid continued: code=%d status=%d\\n", si.si_code, si.si_status);
        kill(p, SIGSTOP);
        waitpid(p, &st, WUNTRACED);
        kill(p, SIGKILL);
        r = waitpid(p, &st, 0);
        printf("killed while stopped: %d signaled=%d sig=%d\\n", r == p, WIFSIGNALED(st), WTERMSIG(st));

        // A child that handles SIGTSTP is not stopped: it runs its handler and exits 3.
        p = fork();
        if (p == 0) {
            signal(SIGTSTP, on_tstp);
            for (int i = 0; i < 3000 && !got_tstp; i++) usleep(1000);
            _exit(got_tstp ? 3 : 4);
        }
        usleep(100000);
        kill(p, SIGTSTP);
        waitpid(p, &st, WUNTRACED);
        printf("handled SIGTSTP: exited=%d code=%d\\n", WIFEXITED(st), WEXITSTATUS(st));

        // A SIGCHLD handler hears a stop; with SA_NOCLDSTOP it does not.
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_chld;
        sigaction(SIGCHLD, &sa, NULL);
        p = spin();
        kill(p, SIGSTOP);
        for (int i = 0; i < 1000 && waitpid(p, &st, WUNTRACED) < 0; i++) {}
        printf("SIGCHLD at the stop: %d\\n", got_chld > 0);
        sa.sa_flags = SA_NOCLDSTOP;
        sigaction(SIGCHLD, &sa, NULL);
        got_chld = 0;
        kill(p, SIGCONT);
        for (int i = 0; i < 1000 && waitpid(p, &st, WCONTINUED) < 0; i++) {}
        printf("SIGCHLD at the continue with SA_NOCLDSTOP: %d\\n", got_chld > 0);
        kill(p, SIGKILL);
        for (int i = 0; i < 1000 && waitpid(p, &st, 0) < 0; i++) {}
        signal(SIGCHLD, SIG_DFL);

        // raise(SIGSTOP) stops the caller until its parent sends SIGCONT.
        p = fork();
        if (p == 0) { raise(SIGSTOP); _exit(5); }
        waitpid(p, &st, WUNTRACED);
        printf("stopped itself: %d\\n", WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP);
        kill(p, SIGCONT);
        waitpid(p, &st, 0);
        printf("then exited: %d code=%d\\n", WIFEXITED(st), WEXITSTATUS(st));
        return 0;
    }
    """

    @Test func jobControlStopsAsNatively() throws {
        let root = try GlibcGuest.rootfs(Self.jobControl, name: "job-control")
        defer { try? FileManager.default.removeItem(at: root) }
        let native = try HostFacts.run(root.appendingPathComponent("prog").path, [])
        #expect(native.status == 0 && native.stdout.contains("stopped: 1 stopped=1 sig=19"), "\(native)")
        for polled in [false, true] {
            let guest = try GuestRunner.run(["/prog"], rootfs: root, pollsSystemCalls: polled)
            #expect(guest.status == native.status, "\(guest.stderr)")
            #expect(guest.stdout == native.stdout)
            #expect(guest.vm.tree.runningVMs.isEmpty)
        }
    }

    /// Every process forks for ever: the container's process limit stops it with EAGAIN,
    /// the host is untouched, and when the first process ends every other one goes.
    @Test func aForkBombHitsTheProcessLimit() throws {
        let source = """
        #include <stdio.h>
        #include <string.h>
        #include <errno.h>
        #include <unistd.h>
        int main(void) {
            pid_t first = getpid();
            for (;;) {
                pid_t child = fork();
                if (child < 0) {
                    if (getpid() != first) pause();
                    printf("fork failed: %s\\n", errno == EAGAIN ? "EAGAIN" : strerror(errno));
                    return 0;
                }
            }
        }
        """
        let root = try GlibcGuest.rootfs(source, name: "forkbomb")
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        var configuration = ProcessVMConfiguration(rootfs: root.path, memoryBytes: 32 << 20, pollsSystemCalls: false)
        configuration.processLimit = 12
        let vm = try ProcessVM(system: #require(GuestRunner.system), configuration: configuration, executable: "/prog", arguments: ["/prog"],
                               environment: [], streams: streams.standard)
        let started = ContinuousClock.now
        let status = try vm.run()
        #expect(status == .exited(0), "\(streams.stderr)")
        #expect(streams.stdout == "fork failed: EAGAIN\n")
        #expect(vm.tree.runningVMs.isEmpty)
        // Forks under way when the first process ended are refused (EAGAIN) rather than run.
        #expect((1...11).contains(vm.tree.endedProcesses.count))
        #expect(vm.tree.endedProcesses.allSatisfy { $0.status == .signaled(9) })
        #expect(ContinuousClock.now - started < .seconds(30))
    }
}

/// python3 forks and runs a subprocess (vfork, execve, a close-on-exec pipe for exec errors,
/// wait4) as natively.
@Suite(.enabled(if: HostFacts.hasKVM && DynamicRootfs.isAvailable && DynamicRootfs.python != nil, "needs /dev/kvm, ldd and python3"))
final class ProcessTreePythonTests {
    let root: URL
    let python: String

    init() throws {
        python = DynamicRootfs.python!
        let library = "/usr/lib/" + URL(fileURLWithPath: python).lastPathComponent
        root = try DynamicRootfs.make(programs: [python, "/usr/bin/echo"], folders: [library], name: "python-processes")
        // Debian's /bin is /usr/bin.
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("bin").path, withDestinationPath: "usr/bin")
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    static let script = """
    import os, subprocess, sys
    r = subprocess.run(["/bin/echo", "hi"])
    print("echo returned", r.returncode, flush=True)
    out = subprocess.run(["/bin/echo", "captured"], capture_output=True)
    print("captured", repr(out.stdout), flush=True)
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    waited, status = os.waitpid(pid, 0)
    print("child", waited == pid, "exit code", os.waitstatus_to_exitcode(status), flush=True)
    try:
        subprocess.run(["/no/such/program"])
    except FileNotFoundError as error:
        print("missing:", error.strerror, flush=True)
    sys.exit(4)
    """

    @Test func subprocessAndForkRunAsNatively() throws {
        let arguments = [python, "-S", "-c", Self.script]
        let environment = ["LC_ALL=C", "PYTHONHASHSEED=0"]
        let guest = try GuestRunner.run(arguments, rootfs: root, environment: environment, memoryMiB: 256)
        let host = try HostFacts.run("/usr/bin/env", ["-i"] + environment + arguments, currentDirectory: root)
        #expect(guest.status == host.status, "\(guest.stderr)")
        #expect(guest.stdout == host.stdout)
        #expect(guest.stderr == host.stderr)
        #expect(guest.vm.tree.runningVMs.isEmpty)
        let ended = guest.vm.tree.endedProcesses
        #expect(ended.count == 4)
        let exits = ended.compactMap(\.exits).sorted()
        print("processes: python3 — \(ended.count) forked, exits per forked process \(exits)")
    }
}

/// A container is its processes: kill reaches all of them, its status is its first
/// process's, the sharing report counts every VM, and no VM of a child outlives it.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct ContainerProcessTreeTests {
    @Test func killReachesEveryProcessAndTheReportCountsEveryVM() throws {
        let system = try #require(GuestRunner.system)
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "sh", rootfs: root.path, executable: "/bin/busybox",
                                                                     environment: ["PATH=/bin"], memoryBytes: 32 << 20), poolSize: 1)
        let streams = try CapturedStreams()
        let container = try parent.fork(arguments: ["sh", "-c", "sleep 30 & sleep 30 & echo ready; wait"], streams: streams.standard)
        container.start()
        let first = try #require(container.processVM)
        let deadline = ContinuousClock.now + .seconds(20)
        while first.tree.runningVMs.count < 2 && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(first.tree.runningVMs.count == 2)
        let report = try SharingReport.measure(parent: parent, containers: [container])
        #expect(report.children.count == 3, "\(report.children.map(\.name))")
        let killed = ContinuousClock.now
        #expect(container.kill() == .signaled(9))
        #expect(ContinuousClock.now - killed < .seconds(5))
        #expect(first.tree.runningVMs.isEmpty)
        #expect(first.tree.endedProcesses.count == 2)
        container.remove()
    }

    @Test func theContainersStatusIsItsFirstProcesss() throws {
        let system = try #require(GuestRunner.system)
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let parent = try WarmParent(system: system, image: ParentSpec(name: "sh", rootfs: root.path, executable: "/bin/busybox",
                                                                     environment: ["PATH=/bin"], memoryBytes: 32 << 20), poolSize: 1)
        for (script, expected) in [("(exit 9) & exit 3", ExitStatus.exited(3)), ("sh -c 'exit 5'", .exited(5)), ("echo a | cat; kill -9 $$", .signaled(9))] {
            let streams = try CapturedStreams()
            let container = try parent.fork(arguments: ["sh", "-c", script], streams: streams.standard)
            #expect(try container.run() == expected, "\(script): \(streams.stderr)")
            #expect(container.processVM?.tree.runningVMs.isEmpty == true)
            container.remove()
        }
    }
}
