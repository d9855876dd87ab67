import Foundation

/// The host's memory as the kernel reports it: MemAvailable and MemTotal (/proc/meminfo) and
/// the share of time some task stalled on memory over the last 10 s (/proc/pressure/memory).
public struct MemoryReading: Sendable, Equatable {
    public var availableKiB: Int
    public var totalKiB: Int
    /// "some avg10" in percent; nil where PSI is not available.
    public var stalledPercent: Double?

    public static func current() -> MemoryReading? {
        guard let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        func field(_ name: String) -> Int? {
            meminfo.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") }
        }
        guard let available = field("MemAvailable"), let total = field("MemTotal") else { return nil }
        var stalled: Double?
        if let pressure = try? String(contentsOfFile: "/proc/pressure/memory", encoding: .utf8),
           let some = pressure.split(separator: "\n").first(where: { $0.hasPrefix("some ") }),
           let avg10 = some.split(separator: " ").first(where: { $0.hasPrefix("avg10=") }) {
            stalled = Double(avg10.dropFirst(6))
        }
        return MemoryReading(availableKiB: available, totalKiB: total, stalledPercent: stalled)
    }
}

/// When the host counts as short of memory.
public struct MemoryPressurePolicy: Sendable {
    /// Pressure when MemAvailable falls below this.
    public var minimumAvailableMiB: Int
    /// Pressure when tasks stalled on memory more than this share of the last 10 s.
    public var maximumStalledPercent: Double

    public init(minimumAvailableMiB: Int = 1024, maximumStalledPercent: Double = 10) {
        self.minimumAvailableMiB = minimumAvailableMiB
        self.maximumStalledPercent = maximumStalledPercent
    }

    public func isUnderPressure(_ reading: MemoryReading) -> Bool {
        reading.availableKiB < minimumAvailableMiB * 1024 || (reading.stalledPercent ?? 0) > maximumStalledPercent
    }
}

extension Engine {
    /// One look at the host's memory: under pressure, the ready VMs of idle parents' pools go
    /// first; at the next look still under pressure, idle parents are evicted — never one with
    /// live children. Each change is an event. Returns what was done (for logs and tests).
    @discardableResult
    public func relieveMemoryPressure(_ reading: MemoryReading, policy: MemoryPressurePolicy) -> [String] {
        guard policy.isUnderPressure(reading) else { return [] }
        let families = registry.withLock { Array($0.families.values) }.filter { $0.isReady && $0.liveChildren == 0 }
        let why = "{\"reason\":\"memory pressure\",\"availableMiB\":\(reading.availableKiB / 1024)"
            + (reading.stalledPercent.map { ",\"stalledPercent\":\($0)" } ?? "") + "}"
        var done: [String] = []
        // Pools first: a family whose pools still hold ready VMs gives them up.
        for family in families {
            let freed = family.shrinkPools()
            if freed > 0 {
                record("parent.shrink", subject: family.policy.id, actor: "engine", detail: why)
                done.append("shrank \(family.policy.id) by \(freed) VMs")
            }
        }
        guard done.isEmpty else { return done }
        // Nothing left to shrink: idle parents go (a later container makes them again).
        for family in families {
            evict(family, reason: "memory pressure")
            done.append("evicted \(family.policy.id)")
        }
        if !done.isEmpty { logger.warning("memory pressure", metadata: ["actions": "\(done)", "availableMiB": "\(reading.availableKiB / 1024)"]) }
        return done
    }

    /// Watches the host's memory every `interval` until the task is cancelled.
    public func watchMemoryPressure(policy: MemoryPressurePolicy, interval: Duration = .seconds(2)) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            guard !Task.isCancelled else { return }
            if let workers = workerSet {
                if let reading = MemoryReading.current() { await relievePressureInWorkers(workers, reading, policy: policy) }
                await sendCostsToWorkers(workers)
                continue
            }
            // Reading /proc and dropping VMs are blocking calls: off the cooperative pool.
            _ = try? await onBlockingThread { [self] in
                if let reading = MemoryReading.current() { relieveMemoryPressure(reading, policy: policy) }
            }
        }
    }
}
