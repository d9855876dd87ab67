import Foundation
import TestSupport
import Testing

/// The same busybox applets, run natively on the host and in a process VM, must print the
/// same thing and exit with the same status: Linux itself is the reference.
@Suite(.enabled(if: HostFacts.hasKVM && BusyboxRootfs.isAvailable, "needs /dev/kvm and busybox-static"))
struct BusyboxDifferentialTests {
    static let cases: [(arguments: [String], stdin: String)] = [
        (["echo", "hi"], ""),
        (["echo", "-n", "no newline", "and", "more"], ""),
        (["cat", "data/hello.txt"], ""),
        (["cat"], "from stdin\nline two\n"),
        (["cat", "data/missing.txt"], ""),
        (["ls", "data"], ""),
        (["ls", "-a", "-1", "data/sub"], ""),
        (["wc", "data/numbers.txt"], ""),
        (["wc", "-l"], "a\nb\nc\n"),
        (["head", "-n", "3", "data/numbers.txt"], ""),
        (["sort", "data/words.txt"], ""),
        (["sort", "-n", "-r", "data/numbers.txt"], ""),
        (["sha256sum", "data/blob.bin", "data/hello.txt"], ""),
        (["seq", "1", "3", "20"], ""),
        (["sleep", "0.05"], ""),
        (["env"], ""),
        (["uname", "-s", "-m"], ""),
        (["date", "+%Y"], ""),
        (["true"], ""),
        (["false"], ""),
        (["sh", "-c", "for i in 1 2 3; do echo item $i; done; exit 3"], ""),
        (["sh", "-c", "x=6; y=7; echo $((x * y)); [ $x -lt $y ] && echo less"], ""),
        (["sh", "-c", "read a b; echo \"got $b then $a\""], "first second\n"),
        (["sh", "-c", "cd data/sub && pwd && cd .. && pwd"], ""),
    ]

    /// Every case runs twice: system calls through VM exits, and through the engine's poller.
    @Test(arguments: cases.indices, [false, true])
    func sameAsNative(index: Int, polled: Bool) throws {
        try compareWithNative(index: index, polled: polled, blankMadeAhead: false)
    }

    /// A blank VM made ahead of time, its vCPU already entered once, runs them the same.
    @Test(arguments: cases.indices)
    func sameAsNativeInBlankVMMadeAhead(index: Int) throws {
        try compareWithNative(index: index, polled: false, blankMadeAhead: true)
    }

    private func compareWithNative(index: Int, polled: Bool, blankMadeAhead: Bool) throws {
        let (arguments, stdin) = Self.cases[index]
        let root = try BusyboxRootfs.make()
        defer { try? FileManager.default.removeItem(at: root) }
        let environment = ["PATH=/bin", "HOME=/", "LANG=C"]
        let native = try BusyboxRootfs.runNatively(arguments, in: root, environment: environment, stdin: Data(stdin.utf8))
        let guest = try GuestRunner.run(["/bin/busybox"] + arguments, rootfs: root, environment: environment,
                                        stdin: Data(stdin.utf8), pollsSystemCalls: polled, blankMadeAhead: blankMadeAhead)
        let nativeOut = native.stdout.replacingOccurrences(of: root.path, with: "")
        #expect(guest.status == native.status, "status for \(arguments)")
        #expect(guest.stdout == nativeOut, "stdout for \(arguments)")
        #expect(guest.vm.missingSyscalls.isEmpty, "unserved system calls: \(guest.vm.missingSyscalls)")
    }
}
