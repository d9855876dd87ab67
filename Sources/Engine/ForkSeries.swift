import Fork
import Foundation
import HostSystem
import KVM
import ProcessVM

/// A series of forks from one warm parent, one child after another, as `vmfork fork` runs
/// them: each child's output and status, the fork latencies, fork → program finished, and
/// the sharing report of the children kept alive. The orchestration lives here; the command
/// only parses and prints.
public struct ForkSeries: Sendable {
    public var parent: ParentSpec
    public var children: Int
    public var poolSize: Int
    /// Children's arguments after argv[0] for child `index` (nil: a stdin fork point's own).
    public var arguments: @Sendable (Int) -> [String]?
    /// Remove each child once it has finished (its VM goes back to the pool).
    public var removeEach: Bool

    public init(parent: ParentSpec, children: Int, poolSize: Int, removeEach: Bool, arguments: @escaping @Sendable (Int) -> [String]?) {
        self.parent = parent
        self.children = children
        self.poolSize = poolSize
        self.removeEach = removeEach
        self.arguments = arguments
    }

    public struct Child: Sendable {
        public let name: String
        public let status: ExitStatus
        public let output: String
    }

    public struct Report: Sendable {
        public var statuses: [Int32: Int] = [:]
        public var forkLatencies: [Duration] = []
        public var endToEnd: [Duration] = []
        public var poolMisses = 0
        public var reusedVMs = 0
        public var sharing: SharingReport?
        /// What the children of a stdin fork point were given afresh of their parent's
        /// start-up secrets (canary, pointer guard, AT_RANDOM), or nil for an entry point.
        public var startupSecrets: String?
        /// What each child made the hypervisor do, counted by KVM.
        public var counters: [VCPUCounters] = []

        /// Exits per child, p50 and max, with their kinds; nil where KVM counts nothing.
        public var exitsPerChild: ExitsSummary? { counters.isEmpty ? nil : ExitsSummary(counters) }
    }

    /// Runs the series on the calling thread (it runs VMs: call it from a thread of its own,
    /// never from an async context). `onChild` sees each child as it finishes.
    public func run(onChild: (Child) -> Void) throws -> Report {
        let system = try KVMSystem()
        let warmParent = try WarmParent(system: system, image: parent, poolSize: poolSize)
        warmParent.waitUntilPoolIsFull()
        let kernelBefore = KernelMemory.current()
        let output = try SeriesOutput()
        var report = Report()
        var kept: [Fork.Container] = []
        for index in 0..<children {
            try output.reset()
            let started = ContinuousClock.now
            let child = try warmParent.fork(arguments: arguments(index), streams: output.streams)
            let status = try child.run()
            report.endToEnd.append(ContinuousClock.now - started)
            report.forkLatencies.append(child.forkLatency)
            if let counters = child.processVM?.lastRunCounters { report.counters.append(counters) }
            report.statuses[status.code, default: 0] += 1
            onChild(Child(name: child.name, status: status, output: output.contents))
            if child.reusesVM { report.reusedVMs += 1 }
            if removeEach { child.remove() } else { kept.append(child) }
        }
        report.sharing = try SharingReport.measure(parent: warmParent, containers: kept, kernelBefore: kernelBefore)
        for container in kept { container.remove() }
        report.poolMisses = warmParent.poolMisses
        if parent.forkPoint != .entry { report.startupSecrets = "\(warmParent.forkPoint.rerandomisation)" }
        return report
    }
}

/// p50/p90/p99/max of a set of durations, in microseconds, and their histogram.
public struct LatencySummary: Sendable {
    public let label: String
    public let samples: [Duration]

    public init(label: String, samples: [Duration]) {
        self.label = label
        self.samples = samples
    }

    private var microseconds: [Double] {
        samples.map { Double($0.components.attoseconds) / 1e12 + Double($0.components.seconds) * 1e6 }.sorted()
    }

    public var line: String {
        let sorted = microseconds
        guard !sorted.isEmpty else { return "\(label): no samples" }
        func at(_ fraction: Double) -> String { String(format: "%.0f", sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) }
        return "\(label): p50 \(at(0.5)) µs, p90 \(at(0.9)) µs, p99 \(at(0.99)) µs, max \(at(1.0)) µs over \(sorted.count)"
    }

    /// The samples in power-of-two buckets of microseconds, one line per bucket from the
    /// first to the last one used, with a bar scaled to the fullest.
    public var histogram: String {
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
final class SeriesOutput {
    private let path: String
    private let fd: Int32
    private let null: Int32

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("vmfork-fork-\(getpid())-\(UUID().uuidString).out").path
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

/// Exits per child over a series: the median and the largest of each kind.
public struct ExitsSummary: Sendable {
    public let children: Int
    public let median: VCPUCounters
    public let maximum: VCPUCounters

    public init(_ counters: [VCPUCounters]) {
        children = counters.count
        func median(_ value: (VCPUCounters) -> UInt64) -> UInt64 {
            let sorted = counters.map(value).sorted()
            return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
        }
        func largest(_ value: (VCPUCounters) -> UInt64) -> UInt64 { counters.map(value).max() ?? 0 }
        var middle = VCPUCounters()
        middle.exits = median(\.exits)
        middle.ioExits = median(\.ioExits)
        middle.pageFaults = median(\.pageFaults)
        middle.emulatedInstructions = median(\.emulatedInstructions)
        self.median = middle
        var top = VCPUCounters()
        top.exits = largest(\.exits)
        top.ioExits = largest(\.ioExits)
        top.pageFaults = largest(\.pageFaults)
        top.emulatedInstructions = largest(\.emulatedInstructions)
        maximum = top
    }

    public var line: String { "exits per child (KVM's count), p50: \(median); max: \(maximum.exits)" }
}
