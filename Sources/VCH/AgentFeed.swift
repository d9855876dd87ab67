import API
import Engine
import Foundation
import Logging
import Synchronization

/// The host agent's events the VCH acts on, followed on one connection for the VCH's life
/// (`GET /v1/events?follow=true`, on a thread of its own): image events empty the image
/// cache, container removals wake `wait?condition=removed`. While the follow is down the
/// cache is not used, and a removal waiter looks again at least once a second.
final class AgentFeed: Sendable {
    static let types = "image.add,image.remove,image.pull,image.gc,container.remove"
    /// The longest a removal waiter goes without asking the agent itself.
    static let recheck = Duration.seconds(1)

    private struct State {
        var connected = false
        var stopped = false
        /// Bumped by every image event and every (re)connection: an image read under an
        /// older epoch is not cached.
        var epoch = 0
        /// By the Docker reference that found it.
        var images: [String: ImageRecord] = [:]
        var removalWaiters: [String: [UInt64: Waiter]] = [:]
        var nextWaiter: UInt64 = 0
    }

    /// One `wait?condition=removed`: fired before it began waiting, or its continuation.
    private struct Waiter {
        var fired = false
        var continuation: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())
    private let client: AgentClient
    private let logger: Logger

    init(client: AgentClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Starts following (once).
    func start() {
        let thread = Thread { [self] in follow() }
        thread.name = "vch-agent-feed"
        thread.start()
    }

    /// Stops at the next event or reconnection.
    func stop() { state.withLock { $0.stopped = true } }

    private func follow() {
        var since = Date().timeIntervalSince1970 - 1
        var pending = Data()
        while !state.withLock({ $0.stopped }) {
            let began = Date().timeIntervalSince1970
            do {
                let status = try client.stream("GET", "/v1/events?follow=true&type=\(Self.types)&since=\(since)", onStatus: { status in
                    guard status == 200 else { return }
                    self.state.withLock { $0.connected = true; $0.epoch += 1 }
                    self.wakeAllWaiters()  // anything removed while the follow was down
                }) { chunk in
                    pending.append(chunk)
                    while let newline = pending.firstIndex(of: 0x0A) {
                        let line = pending[pending.startIndex..<newline]
                        pending = Data(pending[(newline + 1)...])
                        if let event = try? JSONDecoder().decode(EventBody.self, from: line) { handle(event) }
                    }
                    return !state.withLock { $0.stopped }
                }
                if status != 200 { logger.warning("the agent refused its event follow", metadata: ["status": "\(status)"]) }
            } catch {
                logger.debug("the agent's event follow ended", metadata: ["error": "\(error)"])
            }
            state.withLock { $0.connected = false; $0.epoch += 1; $0.images = [:] }
            pending = Data()
            since = began - 1
            if !state.withLock({ $0.stopped }) { Thread.sleep(forTimeInterval: 0.2) }
        }
    }

    private func handle(_ event: EventBody) {
        if event.type.hasPrefix("image.") {
            state.withLock { $0.epoch += 1; $0.images = [:] }
        } else if event.type == "container.remove", event.result == "ok" {
            fire { $0 == event.subject }
        }
    }

    private func wakeAllWaiters() { fire { _ in true } }

    /// Wakes the waiters of the containers `matching` picks; those not waiting yet return at once when they do.
    private func fire(_ matching: (String) -> Bool) {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            var woken: [CheckedContinuation<Void, Never>] = []
            for id in state.removalWaiters.keys where matching(id) {
                for (token, waiter) in state.removalWaiters[id] ?? [:] {
                    if let continuation = waiter.continuation {
                        woken.append(continuation)
                        state.removalWaiters[id]?[token] = nil
                    } else {
                        state.removalWaiters[id]?[token]?.fired = true
                    }
                }
                if state.removalWaiters[id]?.isEmpty == true { state.removalWaiters[id] = nil }
            }
            return woken
        }
        for continuation in woken { continuation.resume() }
    }

    // MARK: Images

    /// The image a Docker reference named when last looked up, while the follow is up.
    func image(_ reference: String) -> ImageRecord? {
        state.withLock { $0.connected ? $0.images[reference] : nil }
    }

    /// The epoch to pass to `cache` for an image about to be read from the agent.
    var epoch: Int { state.withLock { $0.epoch } }

    /// Keeps the image a reference named, unless an image event came since `epoch`.
    func cache(_ image: ImageRecord, as reference: String, readAt epoch: Int) {
        state.withLock { state in
            guard state.connected, state.epoch == epoch else { return }
            if state.images.count > 1000 { state.images = [:] }
            state.images[reference] = image
        }
    }

    /// Forgets every image (the VCH itself removed or pulled one).
    func forgetImages() { state.withLock { $0.epoch += 1; $0.images = [:] } }

    // MARK: Removals

    /// Registers a wait for container `id`'s removal, before the caller asks the agent whether
    /// it is still there, so that no event falls between the two.
    func expectRemoval(_ id: String) -> UInt64 {
        state.withLock { state in
            state.nextWaiter += 1
            state.removalWaiters[id, default: [:]][state.nextWaiter] = Waiter()
            return state.nextWaiter
        }
    }

    /// Returns once the agent reports the removal (or its follow reconnects), or after
    /// `recheck`: the caller then asks the agent again.
    func awaitRemoval(_ id: String, token: UInt64) async {
        let timer = Task { [self] in
            try? await Task.sleep(for: Self.recheck)
            fire(id, token)
        }
        await withCheckedContinuation { continuation in
            let waiting = state.withLock { state -> Bool in
                guard let waiter = state.removalWaiters[id]?[token], !waiter.fired else {
                    state.removalWaiters[id]?[token] = nil
                    if state.removalWaiters[id]?.isEmpty == true { state.removalWaiters[id] = nil }
                    return false
                }
                state.removalWaiters[id]?[token]?.continuation = continuation
                return true
            }
            if !waiting { continuation.resume() }
        }
        timer.cancel()
    }

    /// Drops a registration no longer needed.
    func cancelRemoval(_ id: String, token: UInt64) {
        state.withLock { state in
            state.removalWaiters[id]?[token] = nil
            if state.removalWaiters[id]?.isEmpty == true { state.removalWaiters[id] = nil }
        }
    }

    private func fire(_ id: String, _ token: UInt64) {
        let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.removalWaiters[id]?[token] else { return nil }
            guard let continuation = waiter.continuation else {
                state.removalWaiters[id]?[token]?.fired = true
                return nil
            }
            state.removalWaiters[id]?[token] = nil
            if state.removalWaiters[id]?.isEmpty == true { state.removalWaiters[id] = nil }
            return continuation
        }
        continuation?.resume()
    }
}
