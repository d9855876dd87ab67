import Benchmark
import Fork
import Foundation
import HostSystem
import KVM
import ProcessVM
import TestSupport

/// Warm python3 parents against python3 started natively, side by side in one run (issue
/// #14's targets: fork → script finished at least 30× faster than the native start, p50, and
/// at most 256 KiB private memory per idle child). Each parent is this host's python3 stopped
/// at its first read of standard input, the interpreter initialised; the child's script is
/// what follows that read (the children's standard input is empty, so each runs the script the
/// parent's command gives for an empty line). "os._exit" parents end the child with
/// `os._exit(0)` after flushing, as a zygote does, leaving out the interpreter's finalisation;
/// the "interpreter exit" parent ends it as `python3 -c` does. "Through SYSCALL": the same
/// parent with its programs' system calls left as they are, every one paying PVM's SYSCALL
/// switch (the others have them rewritten at load, libc's as ld.so maps it).
func pythonBenchmarks() {
    guard let python = DynamicRootfs.python else { return }
    let fixture = PythonFixture.shared(python)
    let oneAtATime = Benchmark.Configuration(metrics: [.wallClock], warmupIterations: 5, scalingFactor: .one,
                                             maxDuration: .seconds(10), maxIterations: 300)
    for (name, parent) in [("print('hi'), os._exit parent", \PythonFixture.zygote),
                           ("print('hi'), interpreter exit", \PythonFixture.plain),
                           ("print('hi'), interpreter exit, through SYSCALL", \PythonFixture.plainThroughSyscall),
                           ("json + hashlib script, os._exit parent with both imported", \PythonFixture.zygoteWithModules)] {
        Benchmark("Fork → python3 \(name) finished (stdin parent, pool ready)", configuration: oneAtATime) { benchmark in
            let warm = fixture[keyPath: parent]
            warm.waitUntilPoolIsFull()
            benchmark.startMeasurement()
            let child = try warm.fork(streams: fixture.capture.standard)
            blackHole(try child.run())
            benchmark.stopMeasurement()
            child.remove()
        }
    }
    let exitsMetric = BenchmarkMetric.custom("exits per python3 child", polarity: .prefersSmaller, useScalingFactor: false)
    for (name, parent) in [("interpreter exit", \PythonFixture.plain), ("interpreter exit, through SYSCALL", \PythonFixture.plainThroughSyscall)] {
        Benchmark("Exits per child: fork → python3 print('hi') (\(name), stdin parent, pool ready)",
                  configuration: .init(metrics: [exitsMetric], warmupIterations: 5, scalingFactor: .one, maxIterations: 50)) { benchmark in
            let warm = fixture[keyPath: parent]
            for _ in benchmark.scaledIterations {
                warm.waitUntilPoolIsFull()
                let child = try warm.fork(streams: fixture.capture.standard)
                blackHole(try child.run())
                benchmark.measurement(exitsMetric, Int(child.processVM?.lastRunCounters?.exits ?? 0))
                child.remove()
            }
        }
    }
    for (name, script) in [("print('hi')", PythonFixture.printScript), ("json + hashlib script", PythonFixture.modulesScript)] {
        Benchmark("Native python3 -c \(name) finished", configuration: oneAtATime) { benchmark in
            benchmark.startMeasurement()
            blackHole(NativeSpawn.run(python, [python, "-c", script], output: fixture.capture.output))
            benchmark.stopMeasurement()
        }
    }
    idleChildMemoryBenchmark("Private memory per idle python3 child (stdin parent, KiB)", metric: "private KiB per idle python3 child") {
        try fixture.sleeper.fork(streams: fixture.capture.standard)
    }
}

/// The python3 rootfs (the host's interpreter, its libraries and standard library) and its
/// warm parents, made once for the run.
/// `@unchecked Sendable`: every field is a constant set in `init`; the parents lock for themselves.
final class PythonFixture: @unchecked Sendable {
    static let printScript = "print('hi')"
    static let modulesScript = "import json, hashlib; print(json.dumps({'h': hashlib.sha256(b'x').hexdigest()[:8]}))"
    /// Sound: read and written only under `lock`.
    nonisolated(unsafe) private static var made: PythonFixture?
    private static let lock = NSLock()

    let system: KVMSystem
    let capture = try! CapturedStreams()
    let zygote: WarmParent
    let plain: WarmParent
    let plainThroughSyscall: WarmParent
    let zygoteWithModules: WarmParent
    let sleeper: WarmParent

    static func shared(_ python: String) -> PythonFixture {
        lock.withLock {
            if let made { return made }
            let fixture = PythonFixture(python)
            made = fixture
            return fixture
        }
    }

    private init(_ python: String) {
        let system = try! KVMSystem()
        self.system = system
        let library = "/usr/lib/" + URL(fileURLWithPath: python).lastPathComponent
        let root = try! DynamicRootfs.make(programs: [python], folders: [library], name: "python-bench").path
        func parent(_ name: String, _ program: String, rewrites: Bool = true) -> WarmParent {
            var spec = ParentSpec(name: name, rootfs: root, executable: python, arguments: [python, "-c", program],
                                  environment: ["LC_ALL=C"], memoryBytes: 256 << 20, forkPoint: .firstStandardInputRead)
            spec.rewritesSystemCalls = rewrites
            return try! WarmParent(system: system, image: spec, poolSize: 8)
        }
        func zygoteProgram(imports: String, script: String) -> String {
            "import sys, os\(imports); line = sys.stdin.readline(); exec(line or \(String(reflecting: script))); sys.stdout.flush(); os._exit(0)"
        }
        zygote = parent("python-zygote", zygoteProgram(imports: "", script: Self.printScript))
        let plainProgram = "import sys; line = sys.stdin.readline(); exec(line or \(String(reflecting: Self.printScript)))"
        plain = parent("python-plain", plainProgram)
        plainThroughSyscall = parent("python-plain-syscall", plainProgram, rewrites: false)
        zygoteWithModules = parent("python-modules", zygoteProgram(imports: ", json, hashlib", script: Self.modulesScript))
        sleeper = parent("python-sleeper", "import sys, time; line = sys.stdin.readline(); time.sleep(1000)")
        for warm in [zygote, plain, plainThroughSyscall, zygoteWithModules, sleeper] { warm.waitUntilPoolIsFull() }
    }
}
