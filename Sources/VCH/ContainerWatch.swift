import API
import Engine
import Foundation
import NIOPosix

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

    /// The agent's waits in flight, and the exits they returned (at most 1,000, with the
    /// output of only the last 64 to end: 4 MiB at most). An attach asks when it begins, so
    /// one that needs the output holds its wait's answer whole however many end meanwhile.
    private var waits: [String: Task<ExitInfo?, Never>] = [:]
    /// Waits in flight whose request has gone to the agent, and those waiting for that.
    private var placed: Set<String> = []
    private var placementWaiters: [String: [CheckedContinuation<Void, Never>]] = [:]
    private var ended: [String: ExitInfo] = [:]
    private var endedOrder: [String] = []

    /// The most output an exit carries (stdout and stderr together): a `docker run`'s is
    /// usually a few lines; more is read from the agent's logs.
    static let exitOutputLimit = 64 << 10

    /// How the container ended, once it has: one agent wait per container, shared by every
    /// caller (the auto-removal, `docker wait`, the attach streams). Nil when the agent cannot say.
    /// The agent's answer carries the container's output when it fits (`exitOutputLimit`), and
    /// with `autoRemove` (a --rm container) the agent has then removed it already (`removed`):
    /// one call at the end where there were four. Every caller passes the container's own flag.
    func exit(_ id: String, agent: AgentBackend, autoRemove: Bool) async -> ExitInfo? {
        if let exit = ended[id] { return exit }
        let exit = await waitTask(id, agent: agent, autoRemove: autoRemove).value
        if waits.removeValue(forKey: id) != nil, let exit { remember(id, exit) }
        placed.remove(id)
        return exit
    }

    /// Starts the agent's wait for `id` (as `exit` does) and returns once its request has gone
    /// to the agent, or failed: from then on the agent ends the wait, and with `autoRemove`
    /// removes the container, whether this VCH still runs or not. A `docker run -d --rm` is
    /// answered only after this, so a VCH stopped right after it leaves no container behind
    /// (its wait had not always gone out: a request in flight of a task not yet run).
    func placeWait(_ id: String, agent: AgentBackend, autoRemove: Bool) async {
        if ended[id] != nil { return }
        _ = waitTask(id, agent: agent, autoRemove: autoRemove)
        if placed.contains(id) { return }
        await withCheckedContinuation { placementWaiters[id, default: []].append($0) }
    }

    /// The agent's wait for `id`, started if none is in flight.
    private func waitTask(_ id: String, agent: AgentBackend, autoRemove: Bool) -> Task<ExitInfo?, Never> {
        if let task = waits[id] { return task }
        let query = "output=\(Self.exitOutputLimit)" + (autoRemove ? "&remove=true" : "")
        let sent: @Sendable () -> Void = { Task { await self.markPlaced(id) } }
        // On an event loop, not this actor: the agent's answer then resumes the task where its
        // connection reads it (`AgentChannelClient`), with no hop to a pool thread and back.
        let task = Task<ExitInfo?, Never>.detached(executorPreference: EventLoopExecutor(MultiThreadedEventLoopGroup.singleton.next())) {
            // Sent or not, once it is over no one waits for its placement.
            defer { sent() }
            guard let response = try? await agent.call("POST", "/v1/containers/\(id)/wait?\(query)", sent: sent) else { return nil }
            return ExitInfo.quick(from: response.body) ?? (try? response.decode(ExitInfo.self))
        }
        waits[id] = task
        return task
    }

    private func markPlaced(_ id: String) {
        guard waits[id] != nil || placementWaiters[id] != nil else { return }
        if waits[id] != nil { placed.insert(id) }
        for waiter in placementWaiters.removeValue(forKey: id) ?? [] { waiter.resume() }
    }

    private func remember(_ id: String, _ exit: ExitInfo) {
        ended[id] = exit
        endedOrder.append(id)
        if endedOrder.count > 64, var old = ended[endedOrder[endedOrder.count - 65]] {
            (old.stdout, old.stderr) = (nil, nil)
            ended[endedOrder[endedOrder.count - 65]] = old
        }
        while endedOrder.count > 1000 { ended[endedOrder.removeFirst()] = nil }
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
        var exit = exit
        (exit.stdout, exit.stderr) = (nil, nil)
        removed[id] = exit
        ended[id] = nil
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
