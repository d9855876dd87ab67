import Fork
import Foundation
import ProcessVM
import TestSupport
import Testing

/// Dynamically linked programs from this host — coreutils and python3 — run in process VMs
/// from a rootfs holding them with their dynamic linker and libraries: the engine loads the
/// program and its PT_INTERP, and ld.so maps the libraries itself. Each against the same
/// program run natively on the same files (relative paths: the rootfs is the VM's "/" and the
/// native run's working directory).
@Suite(.enabled(if: HostFacts.hasKVM && DynamicRootfs.isAvailable, "needs /dev/kvm and ldd"))
final class DynamicProgramTests {
    let root: URL

    init() throws {
        root = try DynamicRootfs.make(programs: ["/usr/bin/echo", "/usr/bin/cat", "/usr/bin/sort", "/usr/bin/ls", "/usr/bin/sha256sum", "/usr/bin/true", "/usr/bin/false"],
                                      name: "coreutils")
        try "pear\napple\nfig\n".write(to: root.appendingPathComponent("words.txt"), atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    func native(_ arguments: [String], environment: [String] = []) throws -> (status: Int32, stdout: String, stderr: String) {
        try HostFacts.run("/usr/bin/env", ["-i"] + environment + arguments, currentDirectory: root)
    }

    @Test(arguments: [
        ["/usr/bin/echo", "hello", "dynamic world"],
        ["/usr/bin/cat", "words.txt"],
        ["/usr/bin/sort", "words.txt"],
        ["/usr/bin/sha256sum", "words.txt"],
        ["/usr/bin/ls", "usr/bin"],
        ["/usr/bin/true"],
        ["/usr/bin/false"],
        ["/usr/bin/cat", "no-such-file"],
    ])
    func coreutilsRunAsNatively(arguments: [String]) throws {
        let guest = try GuestRunner.run(arguments, rootfs: root, environment: ["LC_ALL=C"])
        let host = try native(arguments, environment: ["LC_ALL=C"])
        #expect(guest.status == host.status, "\(arguments): \(guest.stderr)")
        #expect(guest.stdout == host.stdout, "\(arguments)")
        #expect(guest.stderr == host.stderr, "\(arguments)")
    }

    /// A fork at main of a dynamically linked program: ld.so and libc start once, in the
    /// parent; each child prints its own arguments and environment.
    @Test func childrenOfADynamicProgramForkAtMainWithTheirOwnArguments() throws {
        let system = try #require(GuestRunner.system)
        #expect(ProcessVM.mainForkPointRefusal(rootfs: root.path, executable: "/usr/bin/echo") == nil)
        let parent = try WarmParent(system: system, image: ParentSpec(name: "echo", rootfs: root.path, executable: "/usr/bin/echo",
                                                                     memoryBytes: 64 << 20, forkPoint: .main), poolSize: 2)
        var exits: [UInt64] = []
        for index in 0..<5 {
            let streams = try CapturedStreams()
            let child = try parent.fork(arguments: ["child", "\(index)", "of main"], environment: ["LC_ALL=C"], streams: streams.standard)
            #expect(try child.run() == .exited(0))
            #expect(streams.stdout == "child \(index) of main\n")
            if let counted = child.processVM?.lastRunCounters?.exits { exits.append(counted) }
            child.remove()
            parent.waitForTeardown()
        }
        // The start-up (ld.so's relocations, libc's CPU probing) is not run again: a child of
        // main makes a fraction of the exits of an entry point's.
        let entryParent = try WarmParent(system: system, image: ParentSpec(name: "echo-entry", rootfs: root.path, executable: "/usr/bin/echo",
                                                                          memoryBytes: 64 << 20, forkPoint: .entry), poolSize: 1)
        let streams = try CapturedStreams()
        let entryChild = try entryParent.fork(arguments: ["from", "entry"], streams: streams.standard)
        #expect(try entryChild.run() == .exited(0))
        #expect(streams.stdout == "from entry\n")
        let entryExits = try #require(entryChild.processVM?.lastRunCounters?.exits)
        let median = exits.sorted()[exits.count / 2]
        #expect(median * 3 < entryExits, "exits per child: main \(exits), entry \(entryExits)")
        entryChild.remove()
    }

    /// What a program names as its interpreter is checked: one that is missing, one outside
    /// the rootfs, one that is not a position-independent program, a path without its NUL.
    @Test func badInterpretersAreRefusedByName() throws {
        guard HostileGuest.isAvailable else { return }
        let source = root.appendingPathComponent("prog.c")
        try "int main(void) { return 7; }\n".write(to: source, atomically: true, encoding: .utf8)
        func build(_ interpreter: String, as name: String) throws -> String {
            let output = root.appendingPathComponent(name).path
            let result = try HostFacts.run("/usr/bin/gcc", ["-O1", "-Wl,--dynamic-linker=\(interpreter)", "-o", output, source.path])
            #expect(result.status == 0, "\(result.stderr)")
            return "/" + name
        }
        let missing = try build("/lib64/no-such-ld.so", as: "missing-ld")
        let escaping = try build("/../../../../usr/bin/true-ld", as: "escaping-ld")
        let staticLinker = try build("/usr/bin/true", as: "exec-ld")
        for (program, reason) in [(missing, "no-such-ld.so"), (escaping, "true-ld"), (staticLinker, "not a position-independent program")] {
            #expect {
                _ = try GuestRunner.run([program], rootfs: root)
            } throws: { error in
                "\(error)".contains(reason)
            }
        }
        // The PT_INTERP string with its NUL overwritten.
        let good = try build("/lib64/ld-linux-x86-64.so.2", as: "good-ld")
        #expect(try GuestRunner.run([good], rootfs: root).status == 7)
        var bytes = try Data(contentsOf: root.appendingPathComponent("good-ld"))
        let path = Data("/lib64/ld-linux-x86-64.so.2\0".utf8)
        let found = try #require(bytes.range(of: path))
        bytes[found.upperBound - 1] = UInt8(ascii: "x")
        try bytes.write(to: root.appendingPathComponent("unterminated-ld"))
        chmod(root.appendingPathComponent("unterminated-ld").path, 0o755)
        #expect {
            _ = try GuestRunner.run(["/unterminated-ld"], rootfs: root)
        } throws: { error in
            "\(error)".contains("PT_INTERP") && "\(error)".contains("NUL-terminated")
        }
    }
}

/// python3 from this host, with its standard library, against the same python3 natively.
@Suite(.enabled(if: HostFacts.hasKVM && DynamicRootfs.isAvailable && DynamicRootfs.python != nil, "needs /dev/kvm, ldd and python3"))
final class PythonTests {
    let root: URL
    let python: String

    init() throws {
        python = DynamicRootfs.python!
        let library = "/usr/lib/" + URL(fileURLWithPath: python).lastPathComponent
        root = try DynamicRootfs.make(programs: [python], folders: [library], name: "python")
    }

    deinit { try? FileManager.default.removeItem(at: root) }

    static let script = """
    import sys, os, json, hashlib, re, collections
    counts = collections.Counter("abracadabra")
    print(json.dumps({"argv": sys.argv[1:], "sum": sum(range(1000)), "counts": sorted(counts.items())}))
    print(hashlib.sha256(b"vmfork").hexdigest())
    print(re.sub(r"(\\\\w+)@(\\\\w+)", r"\\\\2 at \\\\1", "user@example"))
    print(os.environ.get("GREETING"), os.getcwd())
    """

    @Test func aScriptRunsAsNatively() throws {
        let arguments = [python, "-S", "-c", Self.script, "one", "two words"]
        let environment = ["GREETING=hello", "LC_ALL=C", "PYTHONHASHSEED=0"]
        let guest = try GuestRunner.run(arguments, rootfs: root, environment: environment, memoryMiB: 256)
        let host = try HostFacts.run("/usr/bin/env", ["-i"] + environment + arguments, currentDirectory: root)
        #expect(guest.status == 0, "\(guest.stderr)")
        #expect(guest.stdout == host.stdout.replacingOccurrences(of: root.path, with: "/"))
    }
}
