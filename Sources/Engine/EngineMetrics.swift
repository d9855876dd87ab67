import Metrics

/// The engine's metrics, made through the factory it was given (the daemon's Prometheus
/// registry; tests may pass another), never through a process-wide bootstrap.
struct EngineMetrics: Sendable {
    let factory: any MetricsFactory
    /// From the fork call until the child is ready to run.
    let forkLatency: Metrics.Timer
    let forks: Counter
    let exits: Counter
    /// What finished containers made the hypervisor do (KVM's per-vCPU counts).
    let vmExits: Counter
    let vmExitsPerContainer: Recorder
    let pageFaults: Counter
    let emulatedInstructions: Counter
    /// The system-call poller's calls served without an exit, and its back-offs.
    let polledCalls: Counter
    let pollerBackOffs: Counter
    /// Times polling went off because it cost the poller more CPU than the exits it saved.
    let pollerUnprofitableBackOffs: Counter
    /// Containers run on the thread that asked for them (`create`'s `takeOver`): no hand-off.
    let runsOnCallersThread: Counter
    /// Runs whose HTTP answer their worker wrote to the caller's connection (`RunAnswerHandOff`).
    let answersByWorkers: Counter
    /// Of those, answers the caller's connection could not take whole at once, their rest written by the daemon.
    let answersFinishedByDaemon: Counter
    /// Runs a worker served on a caller's connection it held (`CallerConnections`).
    let runsOnHandedOverConnections: Counter
    /// Callers' connections handed to workers.
    let connectionsHandedOver: Counter

    init(factory: any MetricsFactory) {
        self.factory = factory
        forkLatency = Metrics.Timer(label: "vmfork_fork_duration_seconds", dimensions: [], factory: factory)
        forks = Counter(label: "vmfork_forks_total", dimensions: [], factory: factory)
        exits = Counter(label: "vmfork_container_exits_total", dimensions: [], factory: factory)
        vmExits = Counter(label: "vmfork_vm_exits_total", dimensions: [], factory: factory)
        vmExitsPerContainer = Recorder(label: "vmfork_vm_exits_per_container", dimensions: [], aggregate: true, factory: factory)
        pageFaults = Counter(label: "vmfork_vm_page_faults_total", dimensions: [], factory: factory)
        emulatedInstructions = Counter(label: "vmfork_vm_emulated_instructions_total", dimensions: [], factory: factory)
        polledCalls = Counter(label: "vmfork_poller_calls_served_total", dimensions: [], factory: factory)
        pollerBackOffs = Counter(label: "vmfork_poller_back_offs_total", dimensions: [], factory: factory)
        pollerUnprofitableBackOffs = Counter(label: "vmfork_poller_unprofitable_back_offs_total", dimensions: [], factory: factory)
        runsOnCallersThread = Counter(label: "vmfork_runs_on_callers_thread_total", dimensions: [], factory: factory)
        answersByWorkers = Counter(label: "vmfork_runs_answered_by_workers_total", dimensions: [], factory: factory)
        answersFinishedByDaemon = Counter(label: "vmfork_runs_answered_by_workers_finished_by_daemon_total", dimensions: [], factory: factory)
        runsOnHandedOverConnections = Counter(label: "vmfork_runs_on_handed_over_connections_total", dimensions: [], factory: factory)
        connectionsHandedOver = Counter(label: "vmfork_connections_handed_to_workers_total", dimensions: [], factory: factory)
    }

    func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> Gauge {
        Gauge(label: label, dimensions: dimensions, factory: factory)
    }
}
