import Foundation
import HostSystem
import Histogram
import Synchronization

/// Everything a run records while it goes, from many launch threads at once: the latency
/// histograms, counts of launches and their outcomes, errors by kind, and per-window series.
/// Latencies run from the moment a launch was due (its scheduled arrival in an open loop),
/// not from when it was sent, so a backlog shows as latency (coordinated omission corrected).
public final class LoadRecorder: Sendable {
    public let start: ContinuousClock.Instant
    public let windowSeconds: Double
    /// Whether each launch's moments are kept (`trace()`), a line per launch.
    public let tracing: Bool
    /// Taken four times a launch by every launch thread: a lock whose waiters sleep at once
    /// (`ThreadLock`), since with hundreds of launches in flight there are hundreds of threads.
    private let state = ThreadLock(State())

    struct Window {
        var offered = 0
        var launched = 0
        var finished = 0
        var failed = 0
        var exit = LatencyHistograms.make()
        var running = LatencyHistograms.make()
    }

    struct State {
        var histograms = LatencyHistograms()
        var launched = 0
        var finished = 0
        var failed = 0
        var errors: [LoadErrorKind: Int] = [:]
        var firstErrors: [LoadReport.ErrorSample] = []
        var windows: [Int: Window] = [:]
        var inFlight = 0
        var mostInFlight = 0
        var stalls = 0
        var trace: [LaunchTraceRow] = []
    }

    public init(start: ContinuousClock.Instant = .now, windowSeconds: Double = 1, tracing: Bool = false) {
        self.start = start
        self.windowSeconds = windowSeconds
        self.tracing = tracing
    }

    func seconds(_ instant: ContinuousClock.Instant) -> Double {
        let d = instant - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private func window(_ instant: ContinuousClock.Instant) -> Int { Swift.max(0, Int(seconds(instant) / windowSeconds)) }

    /// The schedule's arrivals, counted into the windows they are due in (what was offered).
    func offered(_ offsets: [Double]) {
        state.withLock { state in
            for offset in offsets { state.windows[Swift.max(0, Int(offset / windowSeconds)), default: Window()].offered += 1 }
        }
    }

    /// A launch begins: the record its driver reports its moments and its end with.
    func launched(due: ContinuousClock.Instant, entry: Int) -> LaunchRecord {
        let w = window(due)
        state.withLock { state in
            state.launched += 1
            state.inFlight += 1
            state.mostInFlight = Swift.max(state.mostInFlight, state.inFlight)
            state.windows[w, default: Window()].launched += 1
        }
        return LaunchRecord(due: due, entry: entry)
    }

    /// An arrival found every thread busy and no room for one more (the in-flight cap): it went late, its latency shows it.
    func stalled() { state.withLock { $0.stalls += 1 } }

    func running(_ launch: LaunchRecord, at instant: ContinuousClock.Instant) {
        let due = launch.due
        let w = window(due)
        if tracing { launch.moments.withLock { $0.running = instant } }
        state.withLock { state in
            LatencyHistograms.record(&state.histograms.running, instant - due)
            LatencyHistograms.record(&state.windows[w, default: Window()].running, instant - due)
        }
    }

    func firstOutput(_ launch: LaunchRecord, at instant: ContinuousClock.Instant) {
        if tracing { launch.moments.withLock { $0.firstOutput = $0.firstOutput ?? instant } }
        state.withLock { LatencyHistograms.record(&$0.histograms.firstOutput, instant - launch.due) }
    }

    func exited(_ launch: LaunchRecord, at instant: ContinuousClock.Instant) {
        let due = launch.due
        let w = window(due)
        if tracing { launch.moments.withLock { $0.exit = instant } }
        state.withLock { state in
            LatencyHistograms.record(&state.histograms.exit, instant - due)
            LatencyHistograms.record(&state.windows[w, default: Window()].exit, instant - due)
        }
    }

    /// The launch is over and counts as finished (ran, ended as expected or lived its lifetime).
    func finished(_ launch: LaunchRecord, at instant: ContinuousClock.Instant) {
        let w = window(instant)
        let row = tracing ? traceRow(launch, ended: instant, outcome: "finished") : nil
        state.withLock { state in
            state.finished += 1
            state.inFlight -= 1
            state.windows[w, default: Window()].finished += 1
            if let row { state.trace.append(row) }
        }
    }

    func failed(_ launch: LaunchRecord, _ kind: LoadErrorKind, _ message: String, at instant: ContinuousClock.Instant) {
        let w = window(instant)
        let offset = seconds(instant)
        let row = tracing ? traceRow(launch, ended: instant, outcome: kind.rawValue) : nil
        state.withLock { state in
            state.failed += 1
            state.inFlight -= 1
            state.errors[kind, default: 0] += 1
            state.windows[w, default: Window()].failed += 1
            if state.firstErrors.count < 20 || !state.firstErrors.contains(where: { $0.kind == kind }) {
                state.firstErrors.append(LoadReport.ErrorSample(kind: kind, message: String(message.prefix(300)), atSeconds: offset))
            }
            if let row { state.trace.append(row) }
        }
    }

    private func traceRow(_ launch: LaunchRecord, ended: ContinuousClock.Instant, outcome: String) -> LaunchTraceRow {
        let moments = launch.moments.withLock { $0 }
        return LaunchTraceRow(entry: launch.entry, due: seconds(launch.due), taken: seconds(launch.taken), running: moments.running.map(seconds),
                              firstOutput: moments.firstOutput.map(seconds), exit: moments.exit.map(seconds), ended: seconds(ended), outcome: outcome)
    }

    /// Each ended launch's line, in the order they ended (empty unless `tracing`).
    public func trace() -> [LaunchTraceRow] { state.withLock { $0.trace } }

    /// What the progress line shows.
    public struct Progress: Sendable {
        public var seconds: Double
        public var launched: Int
        public var finished: Int
        public var failed: Int
        public var inFlight: Int
        public var exitP99Micros: Double
    }

    public func progress() -> Progress {
        let now = seconds(.now)
        return state.withLock { state in
            Progress(seconds: now, launched: state.launched, finished: state.finished, failed: state.failed, inFlight: state.inFlight,
                     exitP99Micros: Double(state.histograms.exit.totalCount > 0 ? state.histograms.exit.valueAtPercentile(99) : 0))
        }
    }

    /// The recorded part of a side's report.
    func side(name: String, offeredRate: Double?, elapsed: Double) -> LoadReport.Side {
        state.withLock { state in
            let windows = state.windows.keys.sorted().map { k -> LoadReport.WindowFigures in
                let w = state.windows[k]!
                return LoadReport.WindowFigures(
                    startSeconds: Double(k) * windowSeconds, offeredPerSecond: Double(w.offered) / windowSeconds,
                    launchedPerSecond: Double(w.launched) / windowSeconds, achievedPerSecond: Double(w.finished) / windowSeconds,
                    failedPerSecond: Double(w.failed) / windowSeconds, exit: LatencySummary(w.exit), running: LatencySummary(w.running))
            }
            return LoadReport.Side(
                name: name, offeredPerSecond: offeredRate, elapsedSeconds: elapsed,
                achievedPerSecond: elapsed > 0 ? Double(state.finished) / elapsed : 0,
                launched: state.launched, finished: state.finished, failed: state.failed,
                errors: Dictionary(uniqueKeysWithValues: state.errors.map { ($0.key.rawValue, $0.value) }),
                errorSamples: state.firstErrors, mostInFlight: state.mostInFlight, schedulerStalls: state.stalls,
                running: LatencySummary(state.histograms.running), firstOutput: LatencySummary(state.histograms.firstOutput),
                exit: LatencySummary(state.histograms.exit), windows: windows, memory: [], engine: nil, runnerCPUSeconds: nil)
        }
    }
}
