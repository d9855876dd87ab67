import Foundation
import KVM

/// What this machine's virtualization costs, measured with tiny guests: machines of this kind
/// differ 3-20x in what a VM exit costs, and drift within the hour, so figures are only
/// comparable beside the costs measured with them. Each figure is the difference between a
/// guest making `calls` of the operation and one making none, divided by `calls`: the median
/// of `runs` interleaved pairs, timing only the guest's run (not making its VM).
public struct MachineCosts: Sendable, Codable, Equatable {
    /// A system call served by VM exit (SYSCALL into the stub, its `out`), round trip.
    public var exitMicroseconds: Double
    /// A system call served by the engine's poller, round trip (the SYSCALL entry PVM takes,
    /// the post, the poller's answer).
    public var polledMicroseconds: Double
    /// One CPUID instruction, emulated by PVM.
    public var cpuidMicroseconds: Double

    /// The name of the folder a measurement writes its programs into starts so.
    public static let folderPrefix = "vmfork-costs-"

    /// `under`: where the tiny programs are written for the measurement (the temporary folder
    /// when nil); they are deleted afterwards.
    public static func measure(system: KVMSystem, calls: Int = 2000, runs: Int = 5, under: URL? = nil) throws -> MachineCosts {
        let folder = (under ?? FileManager.default.temporaryDirectory).appendingPathComponent("\(folderPrefix)\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let programs: [(String, [UInt8])] = [
            ("none", MinimalExecutable.exit(0)),
            ("getpid", MinimalExecutable.getpidLoop(count: UInt64(calls))),
            ("cpuid", MinimalExecutable.cpuidLoop(count: UInt64(calls))),
        ]
        for (name, code) in programs {
            let path = folder.appendingPathComponent(name).path
            try Data(MinimalExecutable.build(code: code)).write(to: URL(fileURLWithPath: path))
            chmod(path, 0o755)
        }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        func time(_ name: String, polled: Bool) throws -> Double {
            var configuration = ProcessVMConfiguration(rootfs: folder.path, memoryBytes: 16 << 20, pollsSystemCalls: polled)
            // Calls through SYSCALL, as the figures have always meant: a rewritten call by
            // exit skips one of the two switches such a call costs (`SyscallRewriter`).
            configuration.rewritesSystemCalls = false
            let vm = try ProcessVM(system: system, configuration: configuration, executable: "/\(name)", arguments: [name],
                                   environment: [], streams: StandardStreams(input: null, output: null, error: null))
            let start = ContinuousClock.now
            _ = try vm.run()
            let elapsed = (ContinuousClock.now - start).components
            return Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12
        }
        // Each run's loop less the quickest empty run: an empty run that lost its core (a
        // busy host) would otherwise outweigh a loop of exits, and the median come out 0.
        func perCall(_ name: String, polled: Bool) throws -> Double {
            var bases: [Double] = []
            var loops: [Double] = []
            for _ in 0..<runs {
                bases.append(try time("none", polled: polled))
                loops.append(try time(name, polled: polled))
            }
            let base = bases.min() ?? 0
            return max(0, loops.map { ($0 - base) / Double(calls) }.sorted()[loops.count / 2])
        }
        return MachineCosts(exitMicroseconds: try perCall("getpid", polled: false), polledMicroseconds: try perCall("getpid", polled: true),
                            cpuidMicroseconds: try perCall("cpuid", polled: false))
    }

    /// One line for reports and benchmark logs.
    public var summary: String {
        String(format: "VM exit %.1f µs, polled call %.1f µs, CPUID %.1f µs", exitMicroseconds, polledMicroseconds, cpuidMicroseconds)
    }
}
