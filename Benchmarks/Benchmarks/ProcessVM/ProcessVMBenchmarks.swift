import Benchmark
import Foundation
import KVM
import ProcessVM
import TestSupport

/// A fresh process VM against Linux itself, side by side: `busybox echo hi` in a newly
/// created VM (system calls by VM exit or polled), the same cold start phase by phase, and
/// the same static binary started natively with posix_spawn. The system-call round trip is
/// the difference between a guest making 1,000 getpid calls and one making none.
let benchmarks: @Sendable () -> Void = {
    let fixture = Fixture()
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput], warmupIterations: 5,
                                                maxDuration: .seconds(5), maxIterations: 2_000)

    for polled in [false, true] {
        Benchmark("Cold process VM\(polled ? ", polled system calls" : ""): busybox echo hi", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                let vm = try ProcessVM(system: fixture.system, configuration: fixture.echoConfiguration(polled: polled),
                                       executable: "/bin/busybox", arguments: ["busybox", "echo", "hi"], environment: [],
                                       streams: fixture.nullStreams)
                blackHole(try vm.run())
            }
        }
    }

    let oneAtATime = Benchmark.Configuration(metrics: [.wallClock], warmupIterations: 5, scalingFactor: .one,
                                             maxDuration: .seconds(5), maxIterations: 1_000)

    // Where a cold start's time goes: each phase measured alone, the others run outside the
    // measurement. System calls polled, the default.
    for phase in ColdStartPhase.allCases {
        Benchmark("Cold start phase \(phase.rawValue): busybox echo hi", configuration: oneAtATime) { benchmark in
            let configuration = fixture.echoConfiguration(polled: true)
            var blank: BlankVM? = try phase.measured(.blankVM, by: benchmark) {
                try BlankVM(system: fixture.system, memoryBytes: configuration.memoryBytes, entersOnce: true)
            }
            var vm: ProcessVM? = try phase.measured(.load, by: benchmark) {
                try ProcessVM(blank: blank!, configuration: configuration, executable: "/bin/busybox",
                              arguments: ["busybox", "echo", "hi"], environment: [], streams: fixture.nullStreams)
            }
            blank = nil
            blackHole(try phase.measured(.run, by: benchmark) { try vm!.run() })
            phase.measured(.teardown, by: benchmark) { vm = nil }
        }
    }

    Benchmark("Native posix_spawn: busybox echo hi", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(NativeSpawn.run(BusyboxRootfs.hostBusybox, ["busybox", "echo", "hi"], output: fixture.null))
        }
    }

    for (calls, polled) in [(0, false), (1_000, false), (0, true), (1_000, true)] {
        Benchmark("Process VM running \(calls) getpid calls (\(polled ? "polled" : "exit path"))", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                let vm = try ProcessVM(system: fixture.system,
                                       configuration: ProcessVMConfiguration(rootfs: fixture.rootfs, memoryBytes: 16 << 20, pollsSystemCalls: polled).throughSyscall(),
                                       executable: "/getpid-\(calls)", arguments: ["getpid"], environment: [], streams: fixture.nullStreams)
                blackHole(try vm.run())
            }
        }
    }
}

/// A rootfs with busybox and the getpid loops, /dev/null streams, and native spawning.
final class Fixture: @unchecked Sendable {
    let system = try! KVMSystem()
    let rootfs: String
    let null = open("/dev/null", O_RDWR | O_CLOEXEC)

    init() {
        let root = try! BusyboxRootfs.make()
        for calls in [0, 1_000] {
            let path = root.appendingPathComponent("getpid-\(calls)").path
            try! Data(TinyELF.build(code: TinyELF.getpidLoop(count: UInt64(calls)))).write(to: URL(fileURLWithPath: path))
            chmod(path, 0o755)
        }
        rootfs = root.path
    }


    var nullStreams: StandardStreams { StandardStreams(input: null, output: null, error: null) }

    func echoConfiguration(polled: Bool) -> ProcessVMConfiguration {
        ProcessVMConfiguration(rootfs: rootfs, memoryBytes: 64 << 20, pollsSystemCalls: polled)
    }

}

/// The phases of a cold start, in order.
enum ColdStartPhase: String, CaseIterable {
    case blankVM = "1, blank VM (create VM, memory slot, vCPU, first entry)"
    case load = "2, load the program into it"
    case run = "3, run it to its exit"
    case teardown = "4, tear the VM down"

    /// Runs `body`, measured when it is this phase.
    func measured<T>(_ phase: ColdStartPhase, by benchmark: Benchmark, _ body: () throws -> T) rethrows -> T {
        guard phase == self else { return try body() }
        benchmark.startMeasurement()
        defer { benchmark.stopMeasurement() }
        return try body()
    }
}
