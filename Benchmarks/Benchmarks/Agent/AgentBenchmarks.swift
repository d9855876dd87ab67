import API
import Benchmark
import Engine
import Fork
import Foundation
import KVM
import Logging
import Metrics
import ProcessVM
import TestSupport

/// The host agent against the engine in process and a native spawn, side by side in one
/// run: fork → `busybox echo hi` finished with its output (1) through the daemon's HTTP API
/// over its Unix socket (POST /v1/containers/run: create, start, wait, logs, remove), (2) the
/// same through the Engine in process, without HTTP, (3) a bare fork of a Fork.WarmParent in
/// process with the output in a file, as ForkBenchmarks measures it, and (4) native
/// posix_spawn. Then sustained runs: 16 runs per iteration from 4 clients at once, through
/// the API and in process. The daemon runs in this process (vmfork serve's own code) on a
/// temporary state folder; each latency sample starts with its parent's pool full.
let benchmarks: @Sendable () -> Void = {
    let fixture = AgentFixture()
    let oneAtATime = Benchmark.Configuration(metrics: [.wallClock], warmupIterations: 10, scalingFactor: .one,
                                             maxDuration: .seconds(10), maxIterations: 500)
    let sustained = Benchmark.Configuration(metrics: [.wallClock, .throughput], warmupIterations: 3, scalingFactor: .one,
                                            maxDuration: .seconds(10), maxIterations: 300)
    let runBody = try! JSONEncoder().encode(ContainerSpec(image: "busybox", arguments: ["echo", "hi"]))

    Benchmark("Agent API (Unix socket) → busybox echo hi finished, output returned (pool ready)", configuration: oneAtATime) { benchmark in
        fixture.waitForDaemonPool()
        benchmark.startMeasurement()
        let response = try fixture.client.send("POST", "/v1/containers/run", body: runBody)
        benchmark.stopMeasurement()
        precondition(response.status == 200 && response.text.contains("\"stdout\":\"hi\\n\""), response.text)
    }

    Benchmark("Engine in process → busybox echo hi finished, output returned (pool ready)", configuration: oneAtATime) { benchmark in
        fixture.waitForEnginePool()
        benchmark.startMeasurement()
        let result = try fixture.runInEngine()
        benchmark.stopMeasurement()
        precondition(result == "hi\n")
    }

    // The guest's write path to a container's logs: one write(2) per line, 20,000 of them,
    // to stdout alone and alternating stdout and stderr (the engine's log files).
    let writes = Benchmark.Configuration(metrics: [.wallClock], warmupIterations: 2, scalingFactor: .one,
                                         maxDuration: .seconds(20), maxIterations: 40)
    for (name, line) in [("stdout", "echo x"), ("stdout and stderr alternating", "echo x; echo y >&2")] {
        let lines = name == "stdout" ? 20000 : 10000
        Benchmark("Engine in process → busybox sh writing 20,000 lines to \(name), finished (pool ready)", configuration: writes) { benchmark in
            fixture.waitForEnginePool()
            let script = "i=0; while [ $i -lt \(lines) ]; do \(line); i=$((i+1)); done"
            benchmark.startMeasurement()
            let result = try fixture.runInEngine(["sh", "-c", script])
            benchmark.stopMeasurement()
            precondition(result.stdout.utf8.count == lines * 2 && result.exitCode == 0)
        }
    }

    // The same writes by a bare fork, with and without the log time indexes (what the engine
    // adds to each write to a container's log), in random order in each iteration so that
    // all four see the same machine load.
    let indexMetrics = ["stdout, no index µs", "stdout, with index µs", "alternating, no index µs", "alternating, with index µs"]
    let indexed = Benchmark.Configuration(metrics: indexMetrics.map { .custom($0, polarity: .prefersSmaller) }, warmupIterations: 2,
                                          scalingFactor: .one, maxDuration: .seconds(60), maxIterations: 40)
    Benchmark("Interleaved: fork → busybox sh writing 20,000 lines, without and with log time indexes (pool ready)", configuration: indexed) { benchmark in
        let variants = [("echo x", 20000, false), ("echo x", 20000, true), ("echo x; echo y >&2", 10000, false), ("echo x; echo y >&2", 10000, true)]
        for index in variants.indices.shuffled() {
            let (line, lines, timed) = variants[index]
            fixture.parent.waitUntilPoolIsFull()
            let (output, error) = (fixture.threadOutputs[0], fixture.threadOutputs[1])
            try output.reset()
            try error.reset()
            var streams = StandardStreams(input: output.null, output: output.fd, error: error.fd)
            if timed {
                let timeline = LogTimeline()
                streams.outputTimes = try LogTimeIndex(path: fixture.daemonState.appendingPathComponent("stdout.times").path, stream: 1, timeline: timeline)
                streams.errorTimes = try LogTimeIndex(path: fixture.daemonState.appendingPathComponent("stderr.times").path, stream: 2, timeline: timeline)
            }
            let script = "i=0; while [ $i -lt \(lines) ]; do \(line); i=$((i+1)); done"
            let start = ContinuousClock.now
            let child = try fixture.parent.fork(arguments: ["sh", "-c", script], streams: streams)
            blackHole(try child.run())
            let elapsed = ContinuousClock.now - start
            child.remove()
            precondition(lseek(output.fd, 0, SEEK_END) == off_t(lines * 2))
            benchmark.measurement(.custom(indexMetrics[index], polarity: .prefersSmaller),
                                  Int(elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000))
        }
    }

    Benchmark("Fork in process → busybox echo hi finished, output captured (pool ready)", configuration: oneAtATime) { benchmark in
        fixture.parent.waitUntilPoolIsFull()
        benchmark.startMeasurement()
        let child = try fixture.parent.fork(arguments: ["echo", "hi"], streams: fixture.capture.standard)
        blackHole(try child.run())
        benchmark.stopMeasurement()
        child.remove()
    }

    Benchmark("Native posix_spawn → busybox echo hi finished", configuration: oneAtATime) { benchmark in
        benchmark.startMeasurement()
        blackHole(NativeSpawn.run(BusyboxRootfs.hostBusybox, ["busybox", "echo", "hi"], output: fixture.capture.output))
        benchmark.stopMeasurement()
    }

    // The same four, interleaved in each iteration (so each sees the same machine load), as
    // custom metrics in µs: a shared 2-core machine moves all of them from minute to minute.
    let metricNames = ["1 API µs", "2 Engine µs", "3 Fork µs", "4 posix_spawn µs", "5 API minus Engine µs"]
    let interleaved = Benchmark.Configuration(metrics: metricNames.map { .custom($0, polarity: .prefersSmaller) }, warmupIterations: 5,
                                              scalingFactor: .one, maxDuration: .seconds(20), maxIterations: 300)
    Benchmark("Interleaved: API, Engine, Fork, posix_spawn → busybox echo hi finished (pool ready)", configuration: interleaved) { benchmark in
        func timed(_ body: () throws -> Void) rethrows -> Int {
            let start = ContinuousClock.now
            try body()
            let elapsed = ContinuousClock.now - start
            return Int(elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)
        }
        fixture.waitForDaemonPool()
        let api = try timed {
            let response = try fixture.client.send("POST", "/v1/containers/run", body: runBody)
            precondition(response.status == 200)
        }
        fixture.waitForEnginePool()
        let engine = try timed {
            let output = try fixture.runInEngine()
            precondition(output == "hi\n")
        }
        fixture.parent.waitUntilPoolIsFull()
        var forked: Fork.Container?
        let fork = try timed {
            let child = try fixture.parent.fork(arguments: ["echo", "hi"], streams: fixture.capture.standard)
            blackHole(try child.run())
            forked = child
        }
        forked?.remove()
        let native = timed { blackHole(NativeSpawn.run(BusyboxRootfs.hostBusybox, ["busybox", "echo", "hi"], output: fixture.capture.output)) }
        for (name, value) in zip(metricNames, [api, engine, fork, native, max(0, api - engine)]) {
            benchmark.measurement(.custom(name, polarity: .prefersSmaller), value)
        }
    }

    // Sustained: each iteration is 16 runs, 4 clients at once (4 each), every container removed.
    Benchmark("Sustained through the API: 16 runs per iteration from 4 clients (create, run, output, remove)", configuration: sustained) { _ in
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<4 {
                let response = try? fixture.client.send("POST", "/v1/containers/run", body: runBody)
                precondition(response?.status == 200)
            }
        }
    }
    Benchmark("Sustained in process (Engine): 16 runs per iteration from 4 threads", configuration: sustained) { _ in
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<4 { precondition((try? fixture.runInEngine()) == "hi\n") }
        }
    }
    Benchmark("Sustained in process (Fork): 16 runs per iteration from 4 threads", configuration: sustained) { _ in
        DispatchQueue.concurrentPerform(iterations: 4) { index in
            let output = fixture.threadOutputs[index]
            for _ in 0..<4 {
                try? output.reset()
                guard let child = try? fixture.parent.fork(arguments: ["echo", "hi"], streams: output.streams) else { preconditionFailure() }
                blackHole(try? child.run())
                precondition(output.contents == "hi\n")
                child.remove()
            }
        }
    }
}

final class AgentFixture: @unchecked Sendable {
    // @unchecked: built once before the benchmarks run; its members are thread-safe or used by one thread.
    let rootfs: URL
    let daemonState: URL
    let client: AgentClient
    let engine: Engine
    let system = try! KVMSystem()
    let parent: WarmParent
    let capture = try! CapturedStreams()
    let threadOutputs = (0..<4).map { _ in try! OutputFile() }

    init() {
        rootfs = try! BusyboxRootfs.make()
        daemonState = try! HostFacts.makeTemporaryFolder("bench-agent")
        var logger = Logger(label: "bench") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .warning
        // One KVM system for the daemon, the engine and the bare parent, as in one engine
        // process: one system-call poller serves all three, not three spinning on 2 cores.
        var options = AgentDaemon.Options(stateFolder: daemonState.appendingPathComponent("state"), kvmSystem: system)
        // VMFORK_BENCH_CONNECTION_THREADS=0: every connection on the shared loops, its runs on
        // container threads (as before `vmfork serve --connection-threads`), for side-by-side runs.
        if let threads = ProcessInfo.processInfo.environment["VMFORK_BENCH_CONNECTION_THREADS"].flatMap(Int.init) {
            options.connectionThreads = threads
        }
        let daemon = AgentDaemon(options: options, logger: logger)
        Task.detached { try await daemon.run() }
        client = AgentClient(socketPath: daemonState.appendingPathComponent("state/\(AgentDaemon.socketName)").path)
        var started = false
        for _ in 0..<500 where !started {
            started = (try? client.send("GET", "/v1/_ping"))?.status == 200
            if !started { usleep(10_000) }
        }
        precondition(started, "the daemon did not start")
        let image = #"{"name":"busybox","rootfs":"\#(rootfs.path)","executable":"/bin/busybox"}"#
        precondition((try? client.send("POST", "/v1/images", body: Data(image.utf8)))?.status == 201)
        precondition((try? client.send("POST", "/v1/parents", body: Data(#"{"image":"busybox","readyVMs":16}"#.utf8)))?.status == 201)

        engine = try! Engine(stateFolder: daemonState.appendingPathComponent("engine"), logger: logger, metricsFactory: NOOPMetricsHandler.instance,
                             system: system)
        let engine = self.engine
        let root = rootfs.path
        Self.blocking {
            _ = try await engine.addImage(ImageRecord(name: "busybox", rootfs: root, executable: "/bin/busybox"), by: "bench")
            _ = try await engine.createParents(ParentPolicy(image: "busybox", readyVMs: 16), by: "bench")
        }
        parent = try! WarmParent(system: system, image: ParentSpec(name: "busybox", rootfs: rootfs.path, executable: "/bin/busybox",
                                                                   forkPoint: .main), poolSize: 16)
        parent.waitUntilPoolIsFull()
        waitForDaemonPool()
        waitForEnginePool()
    }

    /// Runs an async call to completion from the benchmark's synchronous closure.
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> T {
        let semaphore = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Task.detached {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            semaphore.signal()
        }
        semaphore.wait()
        return try! box.result!.get()
    }

    func runInEngine() throws -> String {
        try runInEngine(["echo", "hi"]).stdout
    }

    func runInEngine(_ arguments: [String]) throws -> RunResult {
        let engine = self.engine
        return Self.blocking { try await engine.runContainer(ContainerSpec(image: "busybox", arguments: arguments), by: "bench") }
    }

    func waitForDaemonPool() {
        for _ in 0..<1000 {
            if let parents = try? client.send("GET", "/v1/parents?sharing=false").decode([ParentInfo].self),
               parents.allSatisfy({ $0.readyVMsNow >= $0.policy.readyVMs }) { return }
            usleep(1_000)
        }
    }

    func waitForEnginePool() {
        let engine = self.engine
        for _ in 0..<1000 {
            let parents = Self.blocking { try await engine.parents(withSharing: false) }
            if parents.allSatisfy({ $0.readyVMsNow >= $0.policy.readyVMs }) { return }
            usleep(1_000)
        }
    }
}

final class ResultBox<T: Sendable>: @unchecked Sendable {
    // @unchecked: written once by the task before it signals, read after the wait.
    var result: Result<T, Error>?
}

/// One file for a thread's child's stdout and stderr, read after each child.
final class OutputFile: @unchecked Sendable {
    // @unchecked: each is used by one thread at a time.
    let fd: Int32
    let null = open("/dev/null", O_RDONLY | O_CLOEXEC)

    init() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vmfork-bench-\(UUID().uuidString)").path
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        unlink(path)
    }

    var streams: StandardStreams { StandardStreams(input: null, output: fd, error: fd) }

    func reset() throws {
        _ = ftruncate(fd, 0)
        lseek(fd, 0, SEEK_SET)
    }

    var contents: String {
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = pread(fd, &bytes, bytes.count, 0)
        return String(decoding: bytes.prefix(max(0, count)), as: UTF8.self)
    }
}
