import Benchmark
import Fork
import Foundation
import HostSystem
import KVM
import ProcessVM
import TestSupport

/// Instant clone against its alternatives, side by side in one run: a fork of a warm
/// busybox parent running `echo hi` to completion (output captured to a file) from a parent
/// stopped at main (the engine's default), at its entry point and at a stdin read; a fork
/// whose program exits at once (fork → the child's command running), the echo again beside
/// 200 idle containers, a cold process VM of the same program, and native posix_spawn of the
/// same static binary; the exits each child made (KVM's count) and this machine's cost of an
/// exit, a polled call and a CPUID, measured in the same run. System calls are polled (the
/// engine's default) unless a name says they go by VM exit, and the program's `mov eax, N;
/// syscall` pairs are rewritten at load (the default) unless a name says "through SYSCALL"
/// (every call then pays PVM's SYSCALL switch), and writes to the captured output are
/// buffered in the program (the default) unless a name says "written at once". Each fork's VM
/// is removed and goes back to the pool, restored, in the background, as in production.
let benchmarks: @Sendable () -> Void = {
    pythonBenchmarks()
    let fixture = ForkFixture()
    let configuration = Benchmark.Configuration(metrics: [.wallClock, .throughput], warmupIterations: 10,
                                                maxDuration: .seconds(5), maxIterations: 5_000)

    // Latency with the pool ready, as a warm parent serves forks arriving no faster than its
    // pool refills; the wait for the pool is outside the measurement.
    let oneAtATime = Benchmark.Configuration(metrics: [.wallClock], warmupIterations: 5, scalingFactor: .one,
                                             maxDuration: .seconds(10), maxIterations: 500)
    func forkFromReadyPool(_ name: String, _ parent: WarmParent, arguments: [String], alongside idle: IdleContainers? = nil) {
        Benchmark(name, configuration: oneAtATime, closure: { benchmark in
            parent.waitUntilPoolIsFull()
            benchmark.startMeasurement()
            let child = try parent.fork(arguments: arguments, streams: fixture.capture.standard)
            blackHole(try child.run())
            benchmark.stopMeasurement()
            child.remove()
        }, setup: { try idle?.start(from: fixture.echoParent, streams: fixture.capture.standard) }, teardown: { idle?.removeAll() })
    }
    forkFromReadyPool("Fork → busybox echo hi finished, output captured (main parent, pool ready, system calls by VM exit)",
                      fixture.exitPathEchoParent, arguments: ["echo", "hi"])
    forkFromReadyPool("Fork → busybox echo hi finished, output captured (main parent, pool ready, polled system calls)",
                      fixture.echoParent, arguments: ["echo", "hi"])
    forkFromReadyPool("Fork → busybox echo hi finished, output captured (main parent, pool ready, system calls by VM exit, through SYSCALL)",
                      fixture.syscallExitPathEchoParent, arguments: ["echo", "hi"])
    forkFromReadyPool("Fork → busybox echo hi finished, output captured (main parent, pool ready, polled system calls, through SYSCALL)",
                      fixture.syscallEchoParent, arguments: ["echo", "hi"])
    forkFromReadyPool("Fork → busybox echo hi finished, output captured (entry-point parent, pool ready, polled system calls)",
                      fixture.entryEchoParent, arguments: ["echo", "hi"])
    Benchmark("Fork → busybox sh 'read x; echo hi' finished, output captured (stdin parent, pool ready, polled system calls)",
              configuration: oneAtATime) { benchmark in
        fixture.stdinEchoParent.waitUntilPoolIsFull()
        benchmark.startMeasurement()
        let child = try fixture.stdinEchoParent.fork(streams: fixture.capture.standard)
        blackHole(try child.run())
        benchmark.stopMeasurement()
        child.remove()
    }

    // Output buffered in the program (the default) against each write made at once, by exit
    // and polled, interleaved in each iteration so that all four see the same machine.
    let outputMetrics = ["1 by exit, buffered µs", "2 by exit, at once µs", "3 polled, buffered µs", "4 polled, at once µs"]
    Benchmark("Interleaved: fork → busybox echo hi, output buffered in the program or written at once (main parent, pool ready)",
              configuration: .init(metrics: outputMetrics.map { .custom($0, polarity: .prefersSmaller) }, warmupIterations: 5,
                                   scalingFactor: .one, maxDuration: .seconds(20), maxIterations: 300)) { benchmark in
        let parents = [fixture.exitPathEchoParent, fixture.unbufferedExitPathEchoParent, fixture.echoParent, fixture.unbufferedEchoParent]
        for (name, parent) in zip(outputMetrics, parents) {
            parent.waitUntilPoolIsFull()
            let start = ContinuousClock.now
            let child = try parent.fork(arguments: ["echo", "hi"], streams: fixture.capture.standard)
            blackHole(try child.run())
            let elapsed = ContinuousClock.now - start
            child.remove()
            benchmark.measurement(.custom(name, polarity: .prefersSmaller), Int(elapsed.components.attoseconds / 1_000_000_000_000) + Int(elapsed.components.seconds) * 1_000_000)
        }
    }

    // What each child made the hypervisor do (KVM's own count: SYSCALL switches, exits to
    // the engine, shadow page faults, emulated instructions).
    let exitsMetric = BenchmarkMetric.custom("exits per child", polarity: .prefersSmaller, useScalingFactor: false)
    for (name, parent) in [("main parent", fixture.echoParent), ("entry-point parent", fixture.entryEchoParent),
                           ("main parent, system calls by VM exit", fixture.exitPathEchoParent),
                           ("main parent, output written at once", fixture.unbufferedEchoParent),
                           ("main parent, system calls by VM exit, output written at once", fixture.unbufferedExitPathEchoParent),
                           ("main parent, through SYSCALL", fixture.syscallEchoParent),
                           ("main parent, system calls by VM exit, through SYSCALL", fixture.syscallExitPathEchoParent)] {
        Benchmark("Exits per child: fork → busybox echo hi (\(name), pool ready)",
                  configuration: .init(metrics: [exitsMetric], warmupIterations: 5, scalingFactor: .one, maxIterations: 50)) { benchmark in
            for _ in benchmark.scaledIterations {
                parent.waitUntilPoolIsFull()
                let child = try parent.fork(arguments: ["echo", "hi"], streams: fixture.capture.standard)
                blackHole(try child.run())
                benchmark.measurement(exitsMetric, Int(child.processVM?.lastRunCounters?.exits ?? 0))
                child.remove()
            }
        }
    }

    // This machine's costs in the same run, so that figures taken on machines of this kind
    // whose exits cost 3-20x more or less compare as ratios.
    let exitCost = BenchmarkMetric.custom("VM exit (ns)", polarity: .prefersSmaller, useScalingFactor: false)
    let polledCost = BenchmarkMetric.custom("polled call (ns)", polarity: .prefersSmaller, useScalingFactor: false)
    let cpuidCost = BenchmarkMetric.custom("emulated CPUID (ns)", polarity: .prefersSmaller, useScalingFactor: false)
    Benchmark("Machine: cost of a VM exit, a polled call and an emulated CPUID",
              configuration: .init(metrics: [exitCost, polledCost, cpuidCost], warmupIterations: 0, scalingFactor: .one, maxIterations: 3)) { benchmark in
        for _ in benchmark.scaledIterations {
            let costs = try MachineCosts.measure(system: fixture.system, calls: 1000, runs: 3)
            benchmark.measurement(exitCost, Int(costs.exitMicroseconds * 1000))
            benchmark.measurement(polledCost, Int(costs.polledMicroseconds * 1000))
            benchmark.measurement(cpuidCost, Int(costs.cpuidMicroseconds * 1000))
        }
    }
    forkFromReadyPool("Fork → child's command running, program exits at once (pool ready)", fixture.exitParent, arguments: [])

    // Density: the same with 200 idle containers alive, each a VM sleeping in nanosleep. Each
    // VM hooks KVM's MMU notifier into the engine's address space, so every mprotect or munmap
    // the engine makes (dropping a child's translations, restoring a VM) visits all of them.
    for (mode, parent) in [("system calls by VM exit", fixture.exitPathEchoParent), ("polled system calls", fixture.echoParent)] {
        forkFromReadyPool("Fork → busybox echo hi finished, 200 idle containers alive (pool ready, \(mode))", parent,
                          arguments: ["echo", "hi"], alongside: IdleContainers(count: 200))
    }

    // Sustained: forks back to back, each removed, its VM going back to the pool meanwhile.
    for (mode, parent) in [("main parent, system calls by VM exit", fixture.exitPathEchoParent), ("main parent, polled system calls", fixture.echoParent),
                           ("main parent, system calls by VM exit, through SYSCALL", fixture.syscallExitPathEchoParent),
                           ("main parent, polled system calls, through SYSCALL", fixture.syscallEchoParent),
                           ("entry-point parent, polled system calls", fixture.entryEchoParent)] {
        Benchmark("Forks sustained: fork, busybox echo hi, remove (\(mode))", configuration: configuration) { benchmark in
            for _ in benchmark.scaledIterations {
                let child = try parent.fork(arguments: ["echo", "hi"], streams: fixture.capture.standard)
                blackHole(try child.run())
                child.remove()
            }
        }
    }

    Benchmark("Cold process VM → busybox echo hi finished (polled system calls)", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            let vm = try ProcessVM(system: fixture.system, configuration: ProcessVMConfiguration(rootfs: fixture.rootfs, memoryBytes: 64 << 20),
                                   executable: "/bin/busybox", arguments: ["busybox", "echo", "hi"], environment: [],
                                   streams: fixture.capture.standard)
            blackHole(try vm.run())
        }
    }

    Benchmark("Native posix_spawn → busybox echo hi finished", configuration: configuration) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(NativeSpawn.run(BusyboxRootfs.hostBusybox, ["busybox", "echo", "hi"], output: fixture.capture.output))
        }
    }

    idleChildMemoryBenchmark("Private memory per idle child (busybox sleep, KiB)", metric: "private KiB per idle child") {
        try fixture.echoParent.fork(arguments: ["sleep", "1000"], streams: fixture.capture.standard)
    }
}

/// The memory a child owns once idle: forked by `fork`, started, left 50 ms to reach its
/// sleep (a few milliseconds are plenty), then the kernel's count of its private pages.
func idleChildMemoryBenchmark(_ name: String, metric: String, fork: @escaping @Sendable () throws -> Container) {
    let measured = BenchmarkMetric.custom(metric, polarity: .prefersSmaller)
    Benchmark(name, configuration: .init(metrics: [measured], maxIterations: 20)) { benchmark in
        for _ in benchmark.scaledIterations {
            let child = try fork()
            child.start()
            Thread.sleep(forTimeInterval: 0.05)
            let owned = try child.processVM.map { try $0.memory.usage(in: PageMap()).privateBytes } ?? 0
            benchmark.measurement(measured, owned / 1024)
            child.remove()
        }
    }
}

final class ForkFixture: @unchecked Sendable {
    let system = try! KVMSystem()
    let rootfs: String
    let echoParent: WarmParent
    let entryEchoParent: WarmParent
    let stdinEchoParent: WarmParent
    let exitPathEchoParent: WarmParent
    /// The same two, their output's writes made at once (`ProcessVMConfiguration.buffersOutput` off).
    let unbufferedEchoParent: WarmParent
    let unbufferedExitPathEchoParent: WarmParent
    /// The same two, their programs' system calls left as they are (every one through SYSCALL).
    let syscallEchoParent: WarmParent
    let syscallExitPathEchoParent: WarmParent
    let exitParent: WarmParent
    let capture = try! CapturedStreams()

    init() {
        let root = try! BusyboxRootfs.make()
        let exitPath = root.appendingPathComponent("exit0").path
        try! Data(TinyELF.build(code: TinyELF.exit(0))).write(to: URL(fileURLWithPath: exitPath))
        chmod(exitPath, 0o755)
        rootfs = root.path
        echoParent = try! WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: rootfs, executable: "/bin/busybox",
                                                                   forkPoint: .main), poolSize: 16)
        entryEchoParent = try! WarmParent(system: system, image: ParentSpec(name: "busybox-entry", rootfs: rootfs, executable: "/bin/busybox",
                                                                        forkPoint: .entry), poolSize: 16)
        stdinEchoParent = try! WarmParent(system: system, image: ParentSpec(name: "busybox-stdin", rootfs: rootfs, executable: "/bin/busybox",
                                                                        arguments: ["/bin/busybox", "sh", "-c", "read x; echo hi"],
                                                                        forkPoint: .firstStandardInputRead), poolSize: 16)
        exitPathEchoParent = try! WarmParent(system: system, image: ParentSpec(name: "busybox-exits", rootfs: rootfs, executable: "/bin/busybox",
                                                                           forkPoint: .main, pollsSystemCalls: false), poolSize: 16)
        /// A main-point busybox parent with one setting changed.
        let kvm = system, path = root.path
        func variant(_ name: String, pollsSystemCalls: Bool = true, _ change: (inout ParentSpec) -> Void) -> WarmParent {
            var spec = ParentSpec(name: name, rootfs: path, executable: "/bin/busybox", forkPoint: .main, pollsSystemCalls: pollsSystemCalls)
            change(&spec)
            return try! WarmParent(system: kvm, image: spec, poolSize: 16)
        }
        syscallEchoParent = variant("busybox-syscall") { $0.rewritesSystemCalls = false }
        syscallExitPathEchoParent = variant("busybox-syscall-exits", pollsSystemCalls: false) { $0.rewritesSystemCalls = false }
        exitParent = try! WarmParent(system: system, image: ParentSpec(name: "exit0", rootfs: rootfs, executable: "/exit0"), poolSize: 16)
        unbufferedEchoParent = variant("busybox-unbuffered") { $0.buffersOutput = false }
        unbufferedExitPathEchoParent = variant("busybox-unbuffered-exits", pollsSystemCalls: false) { $0.buffersOutput = false }
        unbufferedEchoParent.waitUntilPoolIsFull()
        unbufferedExitPathEchoParent.waitUntilPoolIsFull()
        syscallEchoParent.waitUntilPoolIsFull()
        syscallExitPathEchoParent.waitUntilPoolIsFull()
        echoParent.waitUntilPoolIsFull()
        entryEchoParent.waitUntilPoolIsFull()
        stdinEchoParent.waitUntilPoolIsFull()
        exitPathEchoParent.waitUntilPoolIsFull()
        exitParent.waitUntilPoolIsFull()
    }

}

/// Containers kept alive and idle (`busybox sleep`) while other benchmarks run beside them.
final class IdleContainers: @unchecked Sendable {
    let count: Int
    private var containers: [Container] = []
    private var parent: WarmParent?

    init(count: Int) {
        self.count = count
    }

    /// Forks them and waits until each has reached its sleep.
    func start(from parent: WarmParent, streams: StandardStreams) throws {
        self.parent = parent
        for _ in 0..<count {
            let container = try parent.fork(arguments: ["sleep", "100000"], streams: streams)
            container.start()
            containers.append(container)
        }
        Thread.sleep(forTimeInterval: 0.5)
        parent.waitUntilPoolIsFull()
    }

    func removeAll() {
        containers.forEach { $0.remove() }
        containers = []
        parent?.waitForTeardown()
    }
}
