import API
import Engine
import Foundation
import Synchronization
import WorkloadProfiles

/// Launches through the host agent: create (charged to the entry's pool with `placement`),
/// start, follow the output for its first bytes, wait, keep it for its lifetime, remove. A
/// container still running when its lifetime ends is killed and removed then. A launch with
/// neither a lifetime nor first-output timing is one call (`runInOneCall`).
final class AgentDriver: LaunchDriver {
    struct Launch: Sendable {
        let spec: ContainerSpec
        let lifetime: Duration?
        let expectedExitStatus: Int
    }

    let client: AgentClient
    let launches: [Launch]
    let firstOutput: Bool
    let runLabel: String
    /// Each entry's spec as the create's body, written once (they do not change per launch).
    private let bodies: [Data]
    private let released = Atomic<Bool>(false)

    init(client: AgentClient, launches: [Launch], firstOutput: Bool, runLabel: String) {
        self.client = client
        self.launches = launches
        bodies = launches.map { $0.spec.quickJSON() }
        self.firstOutput = firstOutput
        self.runLabel = runLabel
    }

    enum Phase { case running, exited, lifetimeOver }

    func launch(_ arrival: LoadSchedule.Arrival, due: ContinuousClock.Instant, recorder: LoadRecorder) {
        let launch = launches[arrival.entry]
        let record = recorder.launched(due: due, entry: arrival.entry)
        func fail(_ kind: LoadErrorKind, _ message: String) { recorder.failed(record, kind, message, at: .now) }
        let refusal = Self.refusal
        let body = bodies[arrival.entry]
        if launch.lifetime == nil, !firstOutput { return runInOneCall(launch, body: body, record: record, recorder: recorder) }
        let id: String
        do {
            let created = try client.send("POST", "/v1/containers", body: body)
            guard created.status == 201 else { return fail(refusal(created).0, "create: " + refusal(created).1) }
            id = try (ContainerInfo.quick(from: created.body) ?? created.decode(ContainerInfo.self)).id
            let started = try client.send("POST", "/v1/containers/\(id)/start")
            guard started.status == 200 else {
                _ = try? client.send("DELETE", "/v1/containers/\(id)?force=true")
                return fail(refusal(started).0, "start: " + refusal(started).1)
            }
        } catch {
            return fail(.transport, "\(error)")
        }
        recorder.running(record, at: .now)
        if firstOutput {
            let client = self.client
            LaunchLoop.spawn {
                _ = try? client.stream("GET", "/v1/containers/\(id)/logs?follow=true") { chunk in
                    guard !chunk.isEmpty else { return true }
                    recorder.firstOutput(record, at: .now)
                    return false
                }
            }
        }
        let phase = Locked(Phase.running)
        let lifetimeEnd = launch.lifetime.map { due + $0 }
        if let lifetimeEnd {
            let client = self.client
            let left = lifetimeEnd - .now
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(max(0, left / .nanoseconds(1))))) {
                let over = phase.withLock { phase -> Bool in
                    guard phase == .running else { return false }
                    phase = .lifetimeOver
                    return true
                }
                if over { _ = try? client.send("POST", "/v1/containers/\(id)/kill?signal=9") }
            }
        }
        do {
            let waited = try client.send("POST", "/v1/containers/\(id)/wait")
            let exitTime = ContinuousClock.now
            guard waited.status == 200 else {
                _ = try? client.send("DELETE", "/v1/containers/\(id)?force=true")
                return fail(refusal(waited).0, "wait: " + refusal(waited).1)
            }
            let exit = try ExitInfo.quick(from: waited.body) ?? waited.decode(ExitInfo.self)
            let ended = phase.withLock { phase -> Phase in
                if phase == .running { phase = .exited }
                return phase
            }
            if ended == .exited && !released.load(ordering: .relaxed) {
                recorder.exited(record, at: exitTime)
                if exit.exitCode != launch.expectedExitStatus {
                    _ = try? client.send("DELETE", "/v1/containers/\(id)")
                    return fail(.unexpectedExit, "exit \(exit.exitCode) (\(exit.reason)), expected \(launch.expectedExitStatus)")
                }
                // Kept for the rest of its lifetime, then removed.
                if let lifetimeEnd { LaunchLoop.sleep(until: lifetimeEnd) }
            }
            let removed = try client.send("DELETE", "/v1/containers/\(id)")
            guard removed.status == 204 else { return fail(refusal(removed).0, "remove: " + refusal(removed).1) }
            recorder.finished(record, at: .now)
        } catch {
            fail(.transport, "\(error)")
        }
    }

    /// A launch with no lifetime and no first-output timing: create, start, wait and remove
    /// in one call (`POST /v1/containers/run`), as a client that only wants the result makes
    /// it. Its running time is placed by the agent's start time (its clock's offset from the
    /// call's sending, kept inside the call); its exit time is the answer's arrival, which
    /// also covers the removal (conservative by the removal's cost).
    private func runInOneCall(_ launch: Launch, body: Data, record: LaunchRecord, recorder: LoadRecorder) {
        func fail(_ kind: LoadErrorKind, _ message: String) { recorder.failed(record, kind, message, at: .now) }
        let sent = ContinuousClock.now, sentWall = Date().timeIntervalSince1970
        let response: AgentClient.Response
        do { response = try client.send("POST", "/v1/containers/run?remove=true", body: body) } catch { return fail(.transport, "\(error)") }
        let answered = ContinuousClock.now
        guard response.status == 200 else { return fail(Self.refusal(response).0, "run: " + Self.refusal(response).1) }
        guard let result = RunResult.quick(from: response.body) ?? (try? response.decode(RunResult.self)) else { return fail(.transport, "run: an answer that is no RunResult") }
        if let started = result.startedAt {
            let offset = Duration.nanoseconds(Int64(max(0, started - sentWall) * 1e9))
            recorder.running(record, at: min(sent + offset, answered))
        }
        guard !released.load(ordering: .relaxed) else { return recorder.finished(record, at: answered) }
        recorder.exited(record, at: answered)
        guard result.exitCode == launch.expectedExitStatus else {
            return fail(.unexpectedExit, "exit \(result.exitCode) (\(result.reason)), expected \(launch.expectedExitStatus)")
        }
        recorder.finished(record, at: answered)
    }

    /// An agent's refusal: its error kind (from the status and the field it names) and text.
    static func refusal(_ response: AgentClient.Response) -> (LoadErrorKind, String) {
        let field = (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any])?["field"] as? String
        return (LoadErrorKind.of(status: response.status, field: field, message: response.errorMessage), "\(response.status): \(response.errorMessage)")
    }

    /// The agent's connections, opened ahead: one opened while launches run waited for the
    /// daemon's accept, and in a burst each new launch opened one more.
    func prepare(launchers: Int) throws {
        try client.openAhead(launchers)
    }

    func releaseAll() {
        released.store(true, ordering: .relaxed)
        guard let response = try? client.send("GET", "/v1/containers?label=vmfork.load.run=\(runLabel)&state=running"),
              let running = try? response.decode([ContainerInfo].self) else { return }
        for container in running { _ = try? client.send("POST", "/v1/containers/\(container.id)/kill?signal=9") }
    }
}
