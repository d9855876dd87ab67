import Benchmark
import CShims
import Foundation
import KVM
import ProcessVM
import TestSupport

/// The system-call round trip as the guest program itself measures it: rdtsc before and
/// after each SYSCALL of a getpid loop, so that neither VM creation nor the engine's own
/// bookkeeping blurs the figure. Side by side in one run: the exit path and the polled path,
/// with one VM busy and with several busy at once (each on a thread of its own, all served
/// by the engine's one poller). Every call is one sample of the metric.
let benchmarks: @Sendable () -> Void = {
    let fixture = SyscallFixture()
    let roundTrip = BenchmarkMetric.custom("round trip (ns)", polarity: .prefersSmaller, useScalingFactor: false)
    let configuration = Benchmark.Configuration(metrics: [roundTrip], warmupIterations: 1, scalingFactor: .one,
                                                maxDuration: .seconds(10), maxIterations: 10)
    for machines in [1, 3] {
        for polled in [false, true] {
            let name = "System call round trip, guest-timed, \(machines) VM\(machines == 1 ? "" : "s") busy (\(polled ? "polled" : "exit path"))"
            Benchmark(name, configuration: configuration) { benchmark in
                for sample in try fixture.roundTrips(machines: machines, polled: polled) {
                    benchmark.measurement(roundTrip, sample)
                }
            }
        }
    }
}

final class SyscallFixture: @unchecked Sendable {
    let system = try! KVMSystem()
    let rootfs: String
    static let calls: UInt64 = 2_000
    /// Time-stamp counter ticks per nanosecond, measured against the monotonic clock.
    let ticksPerNanosecond: Double

    init() {
        let root = try! HostFacts.makeTemporaryFolder("syscall-bench")
        let path = root.appendingPathComponent("timed-getpid").path
        try! Data(TinyELF.build(code: TinyELF.timedGetpidLoop(count: Self.calls))).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o755)
        rootfs = root.path
        let clock = ContinuousClock()
        let startTicks = cshims_read_timestamp_counter()
        let elapsed = clock.measure { Thread.sleep(forTimeInterval: 0.05) }
        let ticks = Double(cshims_read_timestamp_counter() - startTicks)
        ticksPerNanosecond = ticks / (Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9)
    }


    /// Runs `machines` timed loops at once; every call's round trip in nanoseconds.
    func roundTrips(machines: Int, polled: Bool) throws -> [Int] {
        let streams = try (0..<machines).map { _ in try CapturedStreams() }
        let vms = try streams.map { stream in
            try ProcessVM(system: system, configuration: ProcessVMConfiguration(rootfs: rootfs, memoryBytes: 16 << 20, pollsSystemCalls: polled).throughSyscall(),
                          executable: "/timed-getpid", arguments: ["timed-getpid"], environment: [], streams: stream.standard)
        }
        let finished = DispatchGroup()
        for vm in vms {
            finished.enter()
            Thread.detachNewThread {
                _ = try? vm.run()
                finished.leave()
            }
        }
        finished.wait()
        guard streams.allSatisfy({ $0.stdoutBytes.count == Int(Self.calls) * 4 }) else { throw BenchmarkFailure.missingSamples }
        return streams.flatMap { stream in
            stream.stdoutBytes.withUnsafeBytes { bytes in
                bytes.bindMemory(to: UInt32.self).map { Int(Double($0) / ticksPerNanosecond) }
            }
        }
    }
}

enum BenchmarkFailure: Error {
    /// A timed loop did not write all its samples: it ended early.
    case missingSamples
}
