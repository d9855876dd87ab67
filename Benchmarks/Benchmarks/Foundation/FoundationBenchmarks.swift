import Benchmark
import Capabilities
import IOEngine

/// Costs paid once per engine start: the capability probe and an io_uring set-up.
let benchmarks: @Sendable () -> Void = {
    Benchmark("Capability probe (KVM, io_uring, NUMA)", configuration: .init(metrics: [.wallClock, .mallocCountTotal], maxIterations: 200)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(CapabilityReport.probe())
        }
    }
    Benchmark("io_uring set-up and tear-down (64 entries)", configuration: .init(metrics: [.wallClock], maxIterations: 2000)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try IOUring(entries: 64))
        }
    }
}
