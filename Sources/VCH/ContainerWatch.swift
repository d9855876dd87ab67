import Engine
import Foundation

/// What the VCH itself must remember about its containers while it runs: the attach streams
/// still reading a container's output from the agent, and the removals it made for `--rm`. A
/// container started with AutoRemove is removed once it has exited and every attach stream
/// has read its output (the log files go with the container), then `wait?condition=removed`
/// answers.
actor ContainerWatch {
    private var attaching: [String: Int] = [:]
    private var drainWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
    private var removed: [String: ExitInfo] = [:]
    private var removedOrder: [String] = []
    private var removalWaiters: [String: [CheckedContinuation<ExitInfo, Never>]] = [:]

    private var exits: [String: Task<ExitInfo?, Never>] = [:]

    /// How the container ended, once it has: one agent wait per container, shared by every
    /// caller (the auto-removal, `docker wait`, the attach streams). Nil when the agent cannot say.
    func exit(_ id: String, agent: AgentBackend) async -> ExitInfo? {
        if let task = exits[id] { return await task.value }
        let task = Task<ExitInfo?, Never> {
            guard let response = try? await agent.call("POST", "/v1/containers/\(id)/wait") else { return nil }
            return try? response.decode(ExitInfo.self)
        }
        exits[id] = task
        let exit = await task.value
        if exits.count > 1000 { exits = exits.filter { $0.key == id } }
        return exit
    }

    func attachBegan(_ id: String) { attaching[id, default: 0] += 1 }

    func attachEnded(_ id: String) {
        let count = (attaching[id] ?? 1) - 1
        attaching[id] = count > 0 ? count : nil
        if count <= 0 { for waiter in drainWaiters.removeValue(forKey: id) ?? [] { waiter.resume() } }
    }

    /// Returns once no attach stream sends the container's output.
    func drained(_ id: String) async {
        guard attaching[id] != nil else { return }
        await withCheckedContinuation { drainWaiters[id, default: []].append($0) }
    }

    func markRemoved(_ id: String, exit: ExitInfo) {
        removed[id] = exit
        exits[id] = nil
        removedOrder.append(id)
        if removedOrder.count > 1000 { removed[removedOrder.removeFirst()] = nil }
        for waiter in removalWaiters.removeValue(forKey: id) ?? [] { waiter.resume(returning: exit) }
    }

    /// How the container ended, once the VCH has removed it (at once if it already has).
    func removal(_ id: String) async -> ExitInfo {
        if let exit = removed[id] { return exit }
        return await withCheckedContinuation { removalWaiters[id, default: []].append($0) }
    }

    func wasRemoved(_ id: String) -> ExitInfo? { removed[id] }
}
