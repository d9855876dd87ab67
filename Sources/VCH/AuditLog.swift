import Foundation
import Logging
import Synchronization

/// The docker calls a VCH answered, recorded in the host agent's audit log: `POST /v1/events`
/// (type client.vch.request, subject "METHOD /path", result the HTTP status, detail the VCH,
/// its pool and the time it answered; the agent adds who called and when it wrote it). Records are sent in batches a moment
/// after the first of them, off the calls' own path: one request per batch, not per call.
final class AuditLog: Sendable {
    struct Record: Sendable {
        let call: String
        let status: UInt
        let time: Double
    }

    /// How long a record waits for others to join its batch.
    static let delay = Duration.milliseconds(250)
    static let maxBatch = 1000

    private let agent: AgentBackend
    private let vch: String
    private let pool: String
    private let logger: Logger
    private let pending = Mutex<(records: [Record], scheduled: Bool)>(([], false))

    init(agent: AgentBackend, vch: String, pool: String, logger: Logger) {
        self.agent = agent
        self.logger = logger
        self.vch = vch
        self.pool = pool
    }

    func add(call: String, status: UInt) {
        let record = Record(call: call, status: status, time: Date().timeIntervalSince1970)
        let schedule = pending.withLock { state -> Bool in
            state.records.append(record)
            defer { state.scheduled = true }
            return !state.scheduled
        }
        guard schedule else { return }
        Task {
            try? await Task.sleep(for: Self.delay)
            await flush()
        }
    }

    /// Sends what is pending, in batches of up to `maxBatch`.
    func flush() async {
        let records = pending.withLock { state -> [Record] in
            defer { state = ([], false) }
            return state.records
        }
        var start = 0
        while start < records.count {
            let batch = records[start..<min(start + Self.maxBatch, records.count)]
            start += batch.count
            let events = batch.map { record -> [String: String] in
                let detail = (try? JSONSerialization.data(withJSONObject: ["vch": vch, "pool": pool, "time": record.time] as [String: Any]))
                return ["type": "vch.request", "subject": record.call, "result": "\(record.status)",
                        "detail": detail.map { String(decoding: $0, as: UTF8.self) } ?? ""]
            }
            do {
                try await agent.call("POST", "/v1/events", body: try JSONSerialization.data(withJSONObject: ["events": events]))
            } catch {
                logger.warning("audit records not written", metadata: ["count": "\(batch.count)", "error": "\(error)"])
            }
        }
    }
}
