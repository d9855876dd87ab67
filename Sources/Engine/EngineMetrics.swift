import Metrics

/// The engine's metrics, made through the factory it was given (the daemon's Prometheus
/// registry; tests may pass another), never through a process-wide bootstrap.
struct EngineMetrics: Sendable {
    let factory: any MetricsFactory
    /// From the fork call until the child is ready to run.
    let forkLatency: Metrics.Timer
    let forks: Counter
    let exits: Counter

    init(factory: any MetricsFactory) {
        self.factory = factory
        forkLatency = Metrics.Timer(label: "vmfork_fork_duration_seconds", dimensions: [], factory: factory)
        forks = Counter(label: "vmfork_forks_total", dimensions: [], factory: factory)
        exits = Counter(label: "vmfork_container_exits_total", dimensions: [], factory: factory)
    }

    func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> Gauge {
        Gauge(label: label, dimensions: dimensions, factory: factory)
    }
}
