import Foundation
import HostSystem
import ProcessVM

/// One process of a running container: the first one (pid 1 unless forked from a parent
/// that had others) and every one it forked, each a process VM of its own.
public struct ContainerProcess: Codable, Sendable, Equatable {
    public var pid: Int32
    public var parentPid: Int32
    /// "running", or "zombie" (ended, its parent has not reaped it yet).
    public var state: String
    /// Its argv: the container's program and arguments, or what it last executed.
    public var command: [String]
}

/// A running container's memory as the host kernel accounts it (the page map of each process
/// VM's guest memory: smaps' figures for that memory alone), summed over its processes.
public struct ContainerMemory: Codable, Sendable, Equatable {
    /// Resident bytes of its guest memory.
    public var residentBytes: Int
    /// Pages it owns (copy-on-write copies and fresh pages): what it costs on its own.
    public var privateBytes: Int
    /// Pages still shared with its warm parent.
    public var sharedBytes: Int
    /// Its guest memory size (memoryMiB), summed over its process VMs.
    public var limitBytes: Int
    /// Its VMs counted: one per process.
    public var vms: Int
}

/// What `GET /v1/containers/{id}/stats` reports.
public struct ContainerStats: Codable, Sendable, Equatable {
    public var id: String
    public var state: ContainerState
    /// Processes now (zombies included); 0 once it has ended.
    public var processes: Int
    /// Nil once it has ended (its VMs are gone).
    public var memory: ContainerMemory?
    /// CPU seconds its processes have used (running and ended ones; the system calls the
    /// engine's poller thread served for them are not counted). Nil as `memory` is.
    public var cpuSeconds: Double?
    /// CPU seconds the whole host has used since it started, every CPU, read with
    /// `cpuSeconds` (Docker's system_cpu_usage: CPU % is the ratio of their changes).
    public var hostCPUSeconds: Double?
    /// When the figures were read (seconds since 1970).
    public var readAt: Double
}

extension Engine {
    /// The processes of a running container (409 when it is not running); a worker's are
    /// asked of that worker, which holds its process VMs.
    public func containerProcesses(_ idOrName: String) async throws -> [ContainerProcess] {
        let container = try container(idOrName)
        if let shard = container.shard, let workers = workerSet {
            guard container.info.state == .running else { throw EngineError(.conflict, "container \(container.id) is not running") }
            return try await workers.connection(shard).call("processes", WorkerContainerRef(id: container.id), as: [ContainerProcess].self)
        }
        return try localProcesses(container)
    }

    private func localProcesses(_ container: ManagedContainer) throws -> [ContainerProcess] {
        let info = container.info
        guard info.state == .running, let first = container.vm?.processVM else {
            throw EngineError(.conflict, "container \(info.id) is not running")
        }
        let program = [info.argv0 ?? (try? image(info.image).executable) ?? "?"] + info.arguments
        return first.tree.processes.map { entry in
            ContainerProcess(pid: entry.pid, parentPid: entry.parentPid, state: entry.running ? "running" : "zombie",
                             command: entry.command ?? program)
        }
    }

    /// A container's figures now: its processes and its memory (the kernel's accounting of
    /// each of its process VMs, from the page map of their guest memory).
    /// The page maps are read on a blocking thread; a worker's container is asked of its worker.
    public func containerStats(_ idOrName: String) async throws -> ContainerStats {
        let container = try container(idOrName)
        if let shard = container.shard, let workers = workerSet, container.info.state == .running {
            return try await workers.connection(shard).call("stats", WorkerContainerRef(id: container.id), as: ContainerStats.self)
        }
        return try await onBlockingThread { [self] in localStats(container) }
    }

    private func localStats(_ container: ManagedContainer) -> ContainerStats {
        let info = container.info
        let now = Date().timeIntervalSince1970
        guard info.state == .running, let first = container.vm?.processVM else {
            return ContainerStats(id: info.id, state: info.state, processes: 0, memory: nil, cpuSeconds: nil, hostCPUSeconds: nil, readAt: now)
        }
        let memory = openPageMap().map { Self.memory(of: first, memoryMiB: info.memoryMiB, in: $0) }
        let cpu = first.tree.runningVMs.reduce(first.cpuSeconds + first.tree.endedCPUSeconds) { $0 + $1.cpuSeconds }
        return ContainerStats(id: info.id, state: info.state, processes: first.tree.processCount, memory: memory,
                              cpuSeconds: cpu, hostCPUSeconds: CPUTime.ofHost(), readAt: now)
    }

    /// `infos` with the memory of each running one filled in: this process's own from one page
    /// map reader for all (on a blocking thread), a worker's from that worker, one call each.
    public func withMemory(_ infos: [ContainerInfo]) async -> [ContainerInfo] {
        guard infos.contains(where: { $0.state == .running }) else { return infos }
        var filled = (try? await onBlockingThread { [self] in localMemory(infos) }) ?? infos
        guard let workers = workerSet else { return filled }
        var byShard: [Int: [String]] = [:]
        for info in filled where info.state == .running && info.memory == nil {
            if let shard = registry.withLock({ $0.containers[info.id]?.shard }) { byShard[shard, default: []].append(info.id) }
        }
        var figures: [String: ContainerMemory] = [:]
        for (shard, ids) in byShard {
            guard let connection = try? workers.connection(shard),
                  let answer = try? await connection.call("memory", WorkerMemoryRequest(ids: ids), as: [String: ContainerMemory].self) else { continue }
            figures.merge(answer) { first, _ in first }
        }
        for index in filled.indices { if let memory = figures[filled[index].id] { filled[index].memory = memory } }
        return filled
    }

    /// `withMemory` for the containers whose VMs are in this process.
    func localMemory(_ infos: [ContainerInfo]) -> [ContainerInfo] {
        guard let pageMap = openPageMap() else { return infos }
        return infos.map { info in
            guard info.state == .running, let first = try? container(info.id).vm?.processVM else { return info }
            var filled = info
            filled.memory = Self.memory(of: first, memoryMiB: info.memoryMiB, in: pageMap)
            return filled
        }
    }

    static func memory(of first: ProcessVM, memoryMiB: Int, in pageMap: PageMap) -> ContainerMemory {
        var memory = ContainerMemory(residentBytes: 0, privateBytes: 0, sharedBytes: 0, limitBytes: 0, vms: 0)
        for vm in [first] + first.tree.runningVMs {
            guard let usage = try? vm.memory.usage(in: pageMap) else { continue }
            memory.residentBytes += usage.resident
            memory.privateBytes += usage.privateBytes
            memory.sharedBytes += usage.shared
            memory.limitBytes += memoryMiB << 20
            memory.vms += 1
        }
        return memory
    }
}
