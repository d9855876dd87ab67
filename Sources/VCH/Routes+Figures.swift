import Engine
import Foundation

/// `top` and `stats`: the agent's figures for one container (its process VMs, and its memory
/// as the host kernel accounts it), in Docker's shapes.
extension VirtualContainerHost {
    /// `GET /containers/{id}/top`: one row per process VM. Only ps's default columns can be
    /// had (there is no ps inside a process VM): other `ps` options are refused by name.
    func top(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        let options = request.string("ps_args") ?? ""
        guard ["", "-ef", "-e", "-f", "aux"].contains(options.trimmingCharacters(in: .whitespaces)) else {
            throw DockerError.badRequest("top with ps options \"\(options)\" is not supported: this VCH shows PID, PPID, STATE and CMD of each process VM")
        }
        let info = try await resolve(reference)
        guard info.state == .running else { throw DockerError.conflict("Container \(info.id) is not running") }
        let processes = try await agent.get("/v1/containers/\(info.id)/processes", as: [ContainerProcess].self)
        struct TopAnswer: Encodable {
            let Titles: [String]
            let Processes: [[String]]
        }
        return try .json(TopAnswer(Titles: ["PID", "PPID", "STATE", "CMD"], Processes: processes.map { process in
            ["\(process.pid)", "\(process.parentPid)", process.state, process.command.joined(separator: " ")]
        }))
    }

    /// `GET /containers/{id}/stats`: CPU (the agent's CPU seconds of the container and of
    /// the host, so that the CLI's CPU % is the container's share of one sample's interval),
    /// memory (`usage`: the pages it owns; `limit`: its guest memory; `stats` has private,
    /// shared and resident bytes) and processes. With `stream=false` one sample, whose
    /// `precpu_stats` are a sample taken a second before as Docker's are (none with
    /// `one-shot`); else one a second until it ends.
    func stats(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        let oneShot = try request.bool("one-shot")
        let stream = try request.bool("stream", default: true) && !oneShot
        let info = try await resolve(reference)
        let (agent, name) = (self.agent, "/" + dockerName(info))
        let first = try await agent.get("/v1/containers/\(info.id)/stats", as: ContainerStats.self)
        let encode: @Sendable (ContainerStats, ContainerStats?) throws -> Data = { now, before in
            try JSONEncoder().encode(DockerStats(now, before: before, name: name)) + Data([0x0A])
        }
        guard stream else {
            guard !oneShot, first.state == .running else {
                return DockerResponse(headers: [("Content-Type", "application/json")], body: .full(try encode(first, nil)))
            }
            try await Task.sleep(for: .seconds(1))
            let second = try await agent.get("/v1/containers/\(info.id)/stats", as: ContainerStats.self)
            return DockerResponse(headers: [("Content-Type", "application/json")], body: .full(try encode(second, first)))
        }
        let body = AsyncThrowingStream<Data, Error> { continuation in
            let task = Task {
                var previous: ContainerStats?
                var current = first
                do {
                    while !Task.isCancelled {
                        continuation.yield(try encode(current, previous))
                        guard current.state == .running else { break }
                        try await Task.sleep(for: .seconds(1))
                        previous = current
                        current = try await agent.get("/v1/containers/\(info.id)/stats", as: ContainerStats.self)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return DockerResponse(headers: [("Content-Type", "application/json")], body: .stream(body))
    }
}

/// Docker's stats object (the fields the docker CLI reads, and zeros where there is nothing).
struct DockerStats: Encodable {
    struct CPUUsage: Encodable {
        var total_usage: UInt64 = 0
        var usage_in_kernelmode: UInt64 = 0
        var usage_in_usermode: UInt64 = 0
    }
    struct CPU: Encodable {
        var cpu_usage = CPUUsage()
        var system_cpu_usage: UInt64 = 0
        var online_cpus: Int = ProcessInfo.processInfo.activeProcessorCount

        init(_ stats: ContainerStats?) {
            guard let stats, let container = stats.cpuSeconds, let host = stats.hostCPUSeconds else { return }
            cpu_usage.total_usage = UInt64(max(container, 0) * 1e9)
            system_cpu_usage = UInt64(max(host, 0) * 1e9)
        }
    }
    struct Memory: Encodable {
        let usage: Int
        let limit: Int
        let stats: [String: Int]
    }
    struct Pids: Encodable { let current: Int }
    struct Blkio: Encodable { let io_service_bytes_recursive: [String] = [] }

    let read: String
    let preread: String
    let pids_stats: Pids
    let blkio_stats = Blkio()
    let num_procs: Int
    let cpu_stats: CPU
    let precpu_stats: CPU
    let memory_stats: Memory
    let name: String
    let id: String

    init(_ now: ContainerStats, before: ContainerStats?, name: String) {
        read = DockerTime.rfc3339(now.readAt)
        preread = before.map { DockerTime.rfc3339($0.readAt) } ?? "0001-01-01T00:00:00Z"
        pids_stats = Pids(current: now.processes)
        cpu_stats = CPU(now)
        precpu_stats = CPU(before)
        num_procs = 0
        let memory = now.memory
        memory_stats = Memory(usage: memory?.privateBytes ?? 0, limit: memory?.limitBytes ?? 0,
                              stats: memory.map { ["private_bytes": $0.privateBytes, "shared_bytes": $0.sharedBytes, "resident_bytes": $0.residentBytes] } ?? [:])
        self.name = name
        id = now.id
    }
}
