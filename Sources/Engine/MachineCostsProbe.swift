import Foundation
import KVM
import Logging
import ProcessVM
import Synchronization

/// Measures what a system call costs on this machine by VM exit and by the poller
/// (`MachineCosts`, small: 300 calls, 3 runs, about 50 ms of one core) and hands the figures
/// to the engine's system-call poller, which from then on keeps polling only while it saves
/// more in exits than it spends (`SyscallPoller.setCosts`). Machines of this kind differ
/// 3-20x in what an exit costs and drift within the hour, so the engine measures its own,
/// at its start and again every `interval`.
///
/// Workers do not measure: confined (seccomp, Landlock), they could not write the probe's
/// programs, and a single measurement at a worker's start, when the host may be busy, would
/// stick. The daemon measures and sends its figures to each worker (`sendCostsToWorkers`).
final class MachineCostsProbe: Sendable {
    static let interval: Duration = .seconds(600)
    /// How soon a measurement that gave nothing worth handing is tried again: soon while
    /// there are no figures yet (the poller polls unjudged meanwhile; a daemon starting its
    /// workers keeps the cores busy for its first measurement), else after a while.
    static let retry: Duration = .seconds(10)
    static let firstRetry: Duration = .seconds(1)
    private static let calls = 300
    private static let runs = 3

    private let system: KVMSystem
    private let poller: SyscallPoller
    private let folder: URL
    private let logger: Logger
    private let state = Mutex<(stopped: Bool, latest: MachineCosts?)>((false, nil))
    /// Signalled by `stop`; waited on between measurements.
    private let wake = DispatchSemaphore(value: 0)
    /// Signalled when the thread ends.
    private let ended = DispatchSemaphore(value: 0)
    private let running = Atomic<Bool>(false)
    /// Told of each measurement handed to the poller (a daemon passes it on to its workers).
    private let listener = Mutex<(@Sendable (MachineCosts) -> Void)?>(nil)

    /// `body` gets each measurement from now on.
    func whenMeasured(_ body: @escaping @Sendable (MachineCosts) -> Void) { listener.withLock { $0 = body } }

    /// `folder`: where the tiny programs are written while measuring (the engine's state folder).
    init(system: KVMSystem, poller: SyscallPoller, folder: URL, logger: Logger) {
        self.system = system
        self.poller = poller
        self.folder = folder
        self.logger = logger
        // A measurement an earlier process did not finish (it was killed) left its programs.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        for name in left where name.hasPrefix(MachineCosts.folderPrefix) {
            try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
        }
    }

    /// The last figures measured, if any.
    var latest: MachineCosts? { state.withLock { $0.latest } }

    /// Measures on the calling thread and hands the figures to the poller; false when there
    /// were none worth handing (a failure, or a polled call no cheaper than an exit, which
    /// says the poller had no core during the measurement, not what polling costs).
    @discardableResult
    func measureNow() -> Bool {
        do {
            let costs = try MachineCosts.measure(system: system, calls: Self.calls, runs: Self.runs, under: folder)
            guard costs.polledMicroseconds < costs.exitMicroseconds else {
                logger.info("machine costs measured while the host was busy: kept the last", metadata: ["costs": "\(costs.summary)"])
                return false
            }
            state.withLock { $0.latest = costs }
            poller.setCosts(costs)
            logger.info("machine costs measured", metadata: ["costs": "\(costs.summary)"])
            listener.withLock { $0 }?(costs)
            return true
        } catch {
            logger.warning("machine costs could not be measured: the poller polls without judging", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Measures now and every `interval` on a thread of its own, until `stop`.
    func start() {
        guard !running.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [self] in
            defer { ended.signal() }
            while !state.withLock({ $0.stopped }) {
                let seconds = Double((measureNow() ? Self.interval : latest == nil ? Self.firstRetry : Self.retry).components.seconds)
                _ = wake.wait(timeout: .now() + seconds)
            }
        }
        thread.name = "vmfork-machine-costs"
        thread.stackSize = 512 << 10
        thread.start()
    }

    /// Ends the measurements and waits for one in progress (its VMs) to end.
    func stop() {
        let wasStopped = state.withLock { state -> Bool in
            defer { state.stopped = true }
            return state.stopped
        }
        guard !wasStopped else { return }
        wake.signal()
        if running.load(ordering: .relaxed) { ended.wait() }
    }
}
