import ArgumentParser
import Engine
import Fork
import Foundation
import HostSystem
import KVM
import ProcessVM

/// `vmfork fork`: start a warm parent of a program, fork children of it that each run with
/// their own arguments, and print their output and status, the fork latencies and the
/// memory the family shares.
struct ForkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fork",
        abstract: "Fork children from a warm parent; print their output, fork latency and memory sharing.",
        discussion: """
            In the child arguments, {i} becomes the child's number. Example:
              vmfork fork --rootfs ROOT --children 5 -- /bin/busybox echo child {i}
            """
    )

    @Option(help: "The image's root filesystem (a host folder).")
    var rootfs: String

    @Option(help: "How many children to fork.")
    var children = 10

    @Option(help: "VMs the parent's pool keeps ready.")
    var pool = 8

    @Option(help: "Guest memory in MiB per VM.")
    var memory = 64

    @Option(help: "Where the parent stops for its children: main (its C library started once, in the parent; each child gets its own arguments there), entry (before the start-up, which each child then runs) or stdin (at its first read of standard input; children read their own, with the parent's arguments).")
    var forkPoint: ForkPointName = .main

    @Flag(help: "Same as --fork-point stdin.")
    var stdinForkPoint = false

    @Flag(inversion: .prefixedNo, help: "Serve system calls that cannot block from the engine's polling thread, without a VM exit (it spins while children make calls); with --no-poll-syscalls every call is a VM exit.")
    var pollSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Rewrite the program's `mov eax, N; syscall` pairs as it is loaded, so that those calls skip PVM's SYSCALL switch (one exit fewer each; none when polled).")
    var rewriteSyscalls = true

    @Flag(inversion: .prefixedNo, help: "Let the program buffer its writes to a standard output or error that is a file, with no VM exit; they go out before its next call, at its end, and within ~100 ms while it computes.")
    var bufferOutput = true

    @Flag(help: "Remove each child as soon as it has finished, as a container engine would: its VM goes back to the pool, restored, for the next child. The sharing report then covers only the parent.")
    var removeEach = false

    @Flag(help: "Do not print each child's output.")
    var quiet = false

    @Argument(parsing: .captureForPassthrough, help: "The program (a path inside the rootfs) and the children's arguments.")
    var command: [String]

    private var program: [String] { command.first == "--" ? Array(command.dropFirst()) : command }

    func validate() throws {
        guard !program.isEmpty else { throw ValidationError("no program given: vmfork fork --rootfs DIR -- PROGRAM [ARGS...]") }
        guard (1...100_000).contains(children) else { throw ValidationError("--children \(children) is out of range (1...100000)") }
        guard (0...1000).contains(pool) else { throw ValidationError("--pool \(pool) is out of range (0...1000)") }
        guard (4...65536).contains(memory) else { throw ValidationError("--memory \(memory) MiB is out of range (4...65536)") }
    }

    func run() throws {
        let forkPoint = stdinForkPoint ? ForkPointName.stdin : self.forkPoint
        let stdinForkPoint = forkPoint == .stdin
        var parent = ParentSpec(name: URL(fileURLWithPath: program[0]).lastPathComponent, rootfs: rootfs, executable: program[0],
                                arguments: stdinForkPoint ? program : nil, memoryBytes: memory << 20,
                                forkPoint: forkPoint.kind, pollsSystemCalls: pollSyscalls)
        parent.rewritesSystemCalls = rewriteSyscalls
        parent.buffersOutput = bufferOutput
        let template = Array(program.dropFirst())
        let series = ForkSeries(parent: parent, children: children, poolSize: pool, removeEach: removeEach) { index in
            stdinForkPoint ? nil : template.map { $0.replacingOccurrences(of: "{i}", with: "\(index)") }
        }
        let report = try series.run { child in
            guard !quiet else { return }
            print("[\(child.name)] \(child.status.description)")
            if !child.output.isEmpty { print(child.output, terminator: child.output.hasSuffix("\n") ? "" : "\n") }
        }
        print("exit statuses: " + report.statuses.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        print(LatencySummary(label: "fork (pooled VM → child ready)", samples: report.forkLatencies).line
              + " (\(report.poolMisses) found the pool empty, \(report.reusedVMs) reused a removed sibling's VM)")
        let finished = LatencySummary(label: "fork → program finished", samples: report.endToEnd)
        print(finished.line)
        print(finished.histogram)
        if let sharing = report.sharing { print(sharing.renderText()) }
        if let secrets = report.startupSecrets { print("start-up secrets: \(secrets)") }
        if let exits = report.exitsPerChild { print(exits.line) }
    }
}

extension ForkPointName: ExpressibleByArgument {}
