import ArgumentParser
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

    @Flag(help: "Stop the parent at its first read of standard input instead of its entry point; children then read their own (empty) input.")
    var stdinForkPoint = false

    @Flag(inversion: .prefixedNo, help: "Serve system calls that cannot block from the engine's polling thread, without a VM exit (it spins while children make calls); with --no-poll-syscalls every call is a VM exit.")
    var pollSyscalls = true

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
        let system = try KVMSystem()
        let image = ImageSpec(name: URL(fileURLWithPath: program[0]).lastPathComponent, rootfs: rootfs, executable: program[0],
                              arguments: stdinForkPoint ? program : nil, memoryBytes: memory << 20,
                              forkPoint: stdinForkPoint ? .firstStandardInputRead : .entry, pollsSystemCalls: pollSyscalls)
        let parent = try WarmParent(system: system, image: image, poolSize: pool)
        parent.waitUntilPoolIsFull()
        let kernelBefore = KernelMemory.current()
        let output = try TemporaryOutput()
        var containers: [Container] = []
        var forkLatencies: [Duration] = []
        var endToEnd: [Duration] = []
        var statuses: [Int32: Int] = [:]
        var reusedVMs = 0
        for index in 0..<children {
            let arguments = stdinForkPoint ? nil : program.dropFirst().map { $0.replacingOccurrences(of: "{i}", with: "\(index)") }
            try output.reset()
            let started = ContinuousClock.now
            let child = try parent.fork(arguments: arguments, streams: output.streams)
            let status = try child.run()
            endToEnd.append(ContinuousClock.now - started)
            forkLatencies.append(child.forkLatency)
            statuses[status.code, default: 0] += 1
            if !quiet {
                print("[\(child.name)] \(status.description)")
                let text = output.contents
                if !text.isEmpty { print(text, terminator: text.hasSuffix("\n") ? "" : "\n") }
            }
            if child.reusesVM { reusedVMs += 1 }
            if removeEach { child.remove() } else { containers.append(child) }
        }
        let report = SharingReport.measure(parent: parent, containers: containers, kernelBefore: kernelBefore)
        for container in containers { container.remove() }
        print("exit statuses: " + statuses.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
        print(LatencySummary(label: "fork (pooled VM → child ready)", samples: forkLatencies).line
              + " (\(parent.poolMisses) found the pool empty, \(reusedVMs) reused a removed sibling's VM)")
        let finished = LatencySummary(label: "fork → program finished", samples: endToEnd)
        print(finished.line)
        print(finished.histogram)
        print(report.renderText())
        if stdinForkPoint { print("start-up secrets: \(parent.forkPoint.rerandomisation)") }
    }
}

/// p50/p90/p99/max of a set of durations, in microseconds.
struct LatencySummary {
    let label: String
    let samples: [Duration]

    private var microseconds: [Double] {
        samples.map { Double($0.components.attoseconds) / 1e12 + Double($0.components.seconds) * 1e6 }.sorted()
    }

    var line: String {
        let sorted = microseconds
        guard !sorted.isEmpty else { return "\(label): no samples" }
        func at(_ fraction: Double) -> String { String(format: "%.0f", sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) }
        return "\(label): p50 \(at(0.5)) µs, p90 \(at(0.9)) µs, p99 \(at(0.99)) µs, max \(at(1.0)) µs over \(sorted.count)"
    }

    /// The samples in power-of-two buckets of microseconds, one line per bucket from the
    /// first to the last one used, with a bar scaled to the fullest.
    var histogram: String {
        let sorted = microseconds
        guard !sorted.isEmpty else { return "" }
        func bucket(_ value: Double) -> Int { max(0, Int(log2(max(value, 1)))) }
        var counts = [Int](repeating: 0, count: bucket(sorted.last!) + 1)
        for value in sorted { counts[bucket(value)] += 1 }
        let first = bucket(sorted.first!)
        let fullest = counts.max()!
        return (first..<counts.count).map { index in
            let range = String(format: "%7d–%-7d µs", 1 << index, 1 << (index + 1))
            let bar = String(repeating: "#", count: (counts[index] * 40 + fullest - 1) / fullest)
            return "  \(range) \(String(format: "%6d", counts[index])) \(bar)"
        }.joined(separator: "\n")
    }
}

/// One file standing in for a child's stdout and stderr, read after each child.
final class TemporaryOutput {
    private let path: String
    private let fd: Int32
    private let null: Int32

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("vmfork-fork-\(getpid()).out").path
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard fd >= 0, null >= 0 else { throw SystemError(call: "open(\(path))", errno: errno) }
        unlink(path)
    }

    deinit {
        close(fd)
        close(null)
    }

    var streams: StandardStreams { StandardStreams(input: null, output: fd, error: fd) }

    func reset() throws {
        _ = try retryingSyscall("ftruncate") { ftruncate(fd, 0) }
        lseek(fd, 0, SEEK_SET)
    }

    var contents: String {
        let size = Int(lseek(fd, 0, SEEK_END))
        var bytes = [UInt8](repeating: 0, count: size)
        _ = pread(fd, &bytes, size, 0)
        return String(decoding: bytes, as: UTF8.self)
    }
}
