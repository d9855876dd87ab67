import Foundation
import ProcessVM
import TestSupport
import Synchronization
import Testing

/// A container with a terminal (`docker run -t`): descriptors 0, 1 and 2 are the engine's
/// emulated terminal. What the guest sees and what reaches the log is compared with busybox
/// run natively on a real Linux pseudo-terminal of the same size where the two can match.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct TerminalTests {
    static let environment = ["PATH=/bin", "HOME=/", "LANG=C"]

    struct Run {
        let status: Int32
        let output: String
        let stderr: String
    }

    /// busybox with `arguments` in a process VM whose standard streams are a terminal of
    /// `window` reading `stdin`, its calls polled unless `polls` is false. A VM still running
    /// `watchdog` seconds after the start is killed (status 137), so a hang fails the test
    /// instead of stopping the suite.
    static func runInTerminal(_ arguments: [String], stdin: String = "", window: GuestTerminal.WindowSize = .standard,
                              polls: Bool = true, watchdog: Double = 30) throws -> Run {
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams(stdin: Data(stdin.utf8))
        let terminal = try GuestTerminal(output: streams.output, window: window)
        let standard = StandardStreams(input: streams.input, output: streams.output, error: streams.error, terminal: terminal)
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20, pollsSystemCalls: polls),
                               executable: "/bin/busybox", arguments: ["/bin/busybox"] + arguments, environment: environment, streams: standard)
        let ended = Mutex(false)
        DispatchQueue.global().asyncAfter(deadline: .now() + watchdog) { if !ended.withLock({ $0 }) { vm.kill() } }
        let status = try vm.run()
        ended.withLock { $0 = true }
        return Run(status: status.code, output: streams.stdout, stderr: streams.stderr)
    }

    /// The same, natively, on a fresh Linux pseudo-terminal sized `rows` x `columns` (its
    /// kernel defaults otherwise), `stdin` written to its master once the program runs.
    static func runNativelyInPseudoTerminal(_ arguments: [String], stdin: String = "", rows: Int = 24, columns: Int = 80) throws -> Run {
        let script = #"""
        import fcntl, os, struct, subprocess, sys, termios
        rows, columns, busybox = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        data = sys.stdin.buffer.read()
        child = subprocess.Popen([busybox] + sys.argv[4:], stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                 env={"PATH": "/bin", "HOME": "/", "LANG": "C"})
        os.close(slave)
        if data:
            os.write(master, data)
        output = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        sys.stdout.buffer.write(output)
        sys.exit(child.wait())
        """#
        let result = try HostFacts.run("/usr/bin/python3", ["-c", script, "\(rows)", "\(columns)", BusyboxRootfs.hostBusybox] + arguments,
                                       stdin: Data(stdin.utf8))
        return Run(status: result.status, output: result.stdout, stderr: result.stderr)
    }

    static var hasPython: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") }

    /// The issue's case: both streams are a terminal, its size is the default 24 x 80, and
    /// each "\n" reaches the log as "\r\n".
    @Test func standardStreamsAreATerminal() throws {
        let run = try Self.runInTerminal(["sh", "-c", "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty; stty size"])
        #expect(run.status == 0)
        #expect(run.output == "tty\r\n24 80\r\n")
    }

    /// `tty` (the C library's ttyname: fstat, readlink of /proc/self/fd/0, stat of what it
    /// names) prints the terminal's name, as natively on a pseudo-terminal; the name's device
    /// is the same from the descriptor, the path and the link; without a terminal, `tty` says
    /// so and fails, as natively with a pipe.
    @Test func ttyNamesTheTerminal() throws {
        let run = try Self.runInTerminal(["sh", "-c", "tty; stat -c '%F %t:%T %i' /dev/pts/0; stat -L -c '%F %t:%T %i' /proc/self/fd/2"])
        #expect(run.status == 0, "stderr: \(run.stderr)")
        #expect(run.output == "/dev/pts/0\r\ncharacter special file 88:0 3\r\ncharacter special file 88:0 3\r\n")
        if Self.hasPython {
            let native = try Self.runNativelyInPseudoTerminal(["tty"])
            #expect(native.status == 0)
            #expect(native.output.hasPrefix("/dev/pts/") && native.output.hasSuffix("\r\n"), "native: \(native.output)")
        }
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let guest = try GuestRunner.run(["/bin/busybox", "tty"], rootfs: root, environment: Self.environment)
        let native = try HostFacts.run(BusyboxRootfs.hostBusybox, ["tty"], stdin: Data())
        #expect(guest.stdout == native.stdout && guest.stdout == "not a tty\n", "guest: \(guest.stdout) native: \(native.stdout)")
        #expect(guest.status == native.status && guest.status == 1)
    }

    /// /dev/tty and /dev/pts/0 open the terminal: what is written there reaches the log
    /// through its output processing, and it is a terminal; without one, /dev/tty gives ENXIO
    /// as Linux does for a process with no controlling terminal (busybox run natively with
    /// setsid, so that it has none, says the same).
    @Test func devTTYOpensTheTerminal() throws {
        let run = try Self.runInTerminal(["sh", "-c", "echo one > /dev/tty; echo two > //dev/pts//0; [ -t 3 ] 3</dev/tty && echo tty3"])
        #expect(run.status == 0, "stderr: \(run.stderr)")
        #expect(run.output == "one\r\ntwo\r\ntty3\r\n")
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let guest = try GuestRunner.run(["/bin/busybox", "sh", "-c", "echo x > /dev/tty"], rootfs: root, environment: Self.environment)
        let native = try HostFacts.run("/usr/bin/setsid", ["-w", BusyboxRootfs.hostBusybox, "sh", "-c", "echo x > /dev/tty"], stdin: Data())
        #expect(guest.status != 0 && guest.stderr.contains("No such device or address"), "guest: \(guest.stderr)")
        #expect(native.status != 0 && native.stderr.contains("No such device or address"), "native: \(native.stderr)")
    }

    /// Without a terminal nothing changes: isatty fails, stty answers ENOTTY, no "\r".
    @Test func withoutATerminalTheStreamsStayFiles() throws {
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let guest = try GuestRunner.run(["/bin/busybox", "sh", "-c", "[ -t 1 ] || echo no tty; stty size"], rootfs: root, environment: Self.environment)
        #expect(guest.stdout == "no tty\n")
        #expect(guest.status != 0)
        #expect(guest.stderr.contains("Not a tty") || guest.stderr.contains("Inappropriate ioctl"), "stderr: \(guest.stderr)")
    }

    /// stderr goes to the one stream, in order with stdout.
    @Test func bothStreamsGoToTheTerminal() throws {
        let run = try Self.runInTerminal(["sh", "-c", "echo out; echo err >&2; echo out again"])
        #expect(run.output == "out\r\nerr\r\nout again\r\n")
        #expect(run.stderr.isEmpty)
    }

    /// The window size the client set, and one the program sets itself.
    @Test func windowSizeIsTheClientsAndTheProgramsOwn() throws {
        let run = try Self.runInTerminal(["sh", "-c", "stty size; stty rows 50 cols 132; stty size"], window: .init(rows: 40, columns: 100))
        #expect(run.output == "40 100\r\n50 132\r\n")
    }

    /// `stty -a` (every termios field and control character, read with TCGETS) prints what
    /// it prints on a new Linux pseudo-terminal; and a setting changed with TCSETS reads back.
    @Test(.enabled(if: TerminalTests.hasPython, "needs python3"), arguments: [
        ["stty", "-a"],
        ["sh", "-c", "stty -echo -icanon min 3 time 2 intr ^X -onlcr; stty -a; stty sane; stty -a"],
        ["sh", "-c", "stty raw; stty -a; stty -raw; stty -g"],
    ])
    func settingsAreLinuxs(arguments: [String]) throws {
        let guest = try Self.runInTerminal(arguments)
        let native = try Self.runNativelyInPseudoTerminal(arguments)
        #expect(guest.status == native.status)
        #expect(guest.output == native.output)
    }

    /// Input through the line discipline: echo (control characters as ^X), erase, kill,
    /// \r mapped to \n, one line per read, ^D at a line's start as end of file.
    @Test(.enabled(if: TerminalTests.hasPython, "needs python3"), arguments: [
        (["sh", "-c", "read a; echo \"got $a\""], "abc\u{7F}d\r"),
        (["sh", "-c", "read a; read b; echo \"[$a] [$b]\""], "gone\u{15}kept\nx\u{1B}y\n"),
        (["sh", "-c", "read a; echo \"[$a]\"; cat; echo end"], "one two \u{17}three\nrest\n\u{04}"),
    ])
    func inputGoesThroughTheLineDiscipline(arguments: [String], input: String) throws {
        let guest = try Self.runInTerminal(arguments, stdin: input)
        let native = try Self.runNativelyInPseudoTerminal(arguments, stdin: input)
        #expect(guest.status == native.status)
        #expect(guest.output == native.output)
    }

    /// Settings the program changes before it reads apply to that input (natively, input
    /// written before they change is processed as it arrives, so no native run compares):
    /// raw mode passes bytes through unechoed (ICRNL still maps \r); without ICRNL, \r stays
    /// and echoes as ^M.
    @Test func inputFollowsTheProgramsSettings() throws {
        let raw = try Self.runInTerminal(["sh", "-c", "stty -icanon -echo; head -c 4 | od -c"], stdin: "ab\rc")
        let rawExpected = try BusyboxRootfs.runNatively(["od", "-c"], in: URL(fileURLWithPath: "/"), stdin: Data("ab\nc".utf8)).stdout
        #expect(raw.output == rawExpected.replacingOccurrences(of: "\n", with: "\r\n"))
        let noMapping = try Self.runInTerminal(["sh", "-c", "stty -icrnl; read a; echo \"$a\" | od -c"], stdin: "x\ry\n")
        let mappedExpected = try BusyboxRootfs.runNatively(["od", "-c"], in: URL(fileURLWithPath: "/"), stdin: Data("x\ry\n".utf8)).stdout
        #expect(noMapping.output == "x^My\r\n" + mappedExpected.replacingOccurrences(of: "\n", with: "\r\n"))
    }

    /// ^C at the terminal interrupts the foreground group (the shell waiting in read), with
    /// the system-call poller on and off. With it on, the signal can come while the guest
    /// waits in the stub for a polled call (the terminal's echo, say): it used to be delivered
    /// there, and the guest then spun for ever (see
    /// `SyscallPollerTests.aSignalDuringAPolledCallIsDeliveredOnTheWayOut`); a few runs each.
    @Test(arguments: [true, false])
    func interruptCharacterSignalsTheForegroundGroup(polls: Bool) throws {
        for _ in 0..<3 {
            let run = try Self.runInTerminal(["sh", "-c", "trap 'echo caught; exit 7' INT; read a; echo not reached"], stdin: "partial\u{03}", polls: polls)
            #expect(run.output == "partial^Ccaught\r\n")
            #expect(run.status == 7)
            let uncaught = try Self.runInTerminal(["sh", "-c", "read a; echo not reached"], stdin: "\u{03}", polls: polls)
            #expect(uncaught.output == "^C")
            #expect(uncaught.status == 128 + 2)
        }
    }

    /// Every argument of the terminal ioctls is checked: a pointer that does not cover the
    /// whole structure (null, kernel half, running into an unmapped page) is EFAULT, a termios
    /// to set needs only readable memory, a group must be positive (EINVAL) and in the
    /// caller's session (EPERM), TCFLSH's selector is range-checked, TIOCGPTN is a master's
    /// (ENOTTY); without a terminal every one of them stays ENOTTY.
    @Test(.enabled(if: HostileGuest.isAvailable, "needs gcc"), arguments: [true, false])
    func ioctlArgumentsAreChecked(withTerminal: Bool) throws {
        let root = try HostileGuest.rootfs(#"""
        #define SYS_ioctl 16
        #define SYS_getpgrp 111
        #define CHECK(n, call, want) do { i64 r_ = (call); if (r_ != (want)) { print("check " #n " got "); print_hex((u64)r_); print("\n"); return n; } } while (0)
        int main(void) {
            u8 *p = (u8 *)sys(SYS_mmap, 0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            sys(SYS_munmap, p + 4096, 4096);
            int group = 0;
            if (role()[0] == 'p') {
                CHECK(20, sys(SYS_ioctl, 1, 0x5401, p), -25);
                CHECK(21, sys(SYS_ioctl, 1, 0x5414, p), -25);
                group = (int)sys(SYS_getpgrp);
                CHECK(22, sys(SYS_ioctl, 1, 0x5410, &group), -25);
                print("plain\n");
                return 0;
            }
            CHECK(1, sys(SYS_ioctl, 1, 0x5401, p), 0);
            CHECK(2, sys(SYS_ioctl, 1, 0x5401, 0), -14);
            CHECK(3, sys(SYS_ioctl, 1, 0x5401, 0xFFFF800000000000UL), -14);
            CHECK(4, sys(SYS_ioctl, 1, 0x5401, p + 4096 - 10), -14);
            CHECK(5, sys(SYS_ioctl, 1, 0x5402, p + 4096 - 10), -14);
            CHECK(6, sys(SYS_ioctl, 1, 0x802C542A, p + 4096 - 40), -14);
            CHECK(7, sys(SYS_ioctl, 1, 0x5414, p + 4096 - 4), -14);
            CHECK(8, sys(SYS_ioctl, 1, 0x5413, 0), -14);
            CHECK(9, sys(SYS_ioctl, 1, 0x5410, &group), -22);
            group = -5;
            CHECK(10, sys(SYS_ioctl, 1, 0x5410, &group), -22);
            group = 4242;
            CHECK(11, sys(SYS_ioctl, 1, 0x5410, &group), -1);
            CHECK(12, sys(SYS_ioctl, 1, 0x5410, 0), -14);
            group = (int)sys(SYS_getpgrp);
            CHECK(13, sys(SYS_ioctl, 1, 0x5410, &group), 0);
            int seen = 0;
            CHECK(14, sys(SYS_ioctl, 0, 0x540F, &seen), 0);
            CHECK(15, seen, group);
            u32 number;
            CHECK(16, sys(SYS_ioctl, 1, 0x80045430, &number), -25);
            CHECK(17, sys(SYS_ioctl, 1, 0x540B, 7), -22);
            sys(SYS_mprotect, p, 4096, PROT_READ);
            CHECK(18, sys(SYS_ioctl, 1, 0x5401, p), -14);
            CHECK(19, sys(SYS_ioctl, 1, 0x5402, p), 0);
            print("checked\n");
            return 0;
        }
        """#, name: "terminal-ioctls")
        defer { try? FileManager.default.removeItem(at: root) }
        let streams = try CapturedStreams()
        let terminal = withTerminal ? try GuestTerminal(output: streams.output) : nil
        let vm = try ProcessVM(system: GuestRunner.system!, configuration: ProcessVMConfiguration(rootfs: root.path, memoryBytes: 64 << 20),
                               executable: "/prog", arguments: ["prog", withTerminal ? "terminal" : "plain"], environment: [],
                               streams: StandardStreams(input: streams.input, output: streams.output, error: streams.error, terminal: terminal))
        let status = try vm.run()
        #expect(status.code == 0, "\(streams.stdout)")
        #expect(streams.stdout == (withTerminal ? "checked\r\n" : "plain\n"))
    }
}
