import Foundation
import Synchronization

/// The daemon's connection to one engine worker: requests matched to their replies by id,
/// events handed to the engine in the order the worker sent them, on a reader thread of its own.
final class WorkerConnection: Sendable {
    let shard: Int
    private let fd: Int32
    private let state = Mutex(State())
    /// Writers take it so that frames never interleave.
    private let writeLock = Mutex(())

    private struct State {
        var next: UInt64 = 1
        var pending: [UInt64: CheckedContinuation<Data, Error>] = [:]
        var closed: String?
        /// The worker's pid, from its hello.
        var pid: Int32 = 0
    }

    init(shard: Int, socketPath: String) throws(EngineError) {
        self.shard = shard
        fd = try WorkerWire.connect(to: socketPath)
    }

    var pid: Int32 {
        get { state.withLock { $0.pid } }
        set { state.withLock { $0.pid = newValue } }
    }

    var isClosed: Bool { state.withLock { $0.closed != nil } }

    /// Starts the reader thread: `onEvent` gets each event frame (on that thread, in order);
    /// `onClose` once, with why, when the stream ends (every call in flight fails first).
    func startReading(onEvent: @escaping @Sendable (String, Data) -> Void, onClose: @escaping @Sendable (String) -> Void) {
        let thread = Thread { [self] in
            let decoder = JSONDecoder()
            var why = "the worker closed its socket"
            while true {
                let frame: Data?
                do { frame = try WorkerWire.readFrame(fd) } catch {
                    why = "\(error)"
                    break
                }
                guard let frame else { break }
                guard let header = try? decoder.decode(WorkerHeader.self, from: frame) else {
                    why = "the worker sent a frame that is not a message"
                    break
                }
                if let event = header.event {
                    onEvent(event, frame)
                } else {
                    let waiter = state.withLock { $0.pending.removeValue(forKey: header.id) }
                    waiter?.resume(returning: frame)
                }
            }
            let waiters = state.withLock { state in
                state.closed = why
                defer { state.pending = [:] }
                return Array(state.pending.values)
            }
            for waiter in waiters { waiter.resume(throwing: EngineError(.unavailable, "worker \(self.shard) is gone: \(why)")) }
            close(fd)
            onClose(why)
        }
        thread.name = "vmfork-worker-\(shard)"
        thread.start()
    }

    /// Sends a request and waits for its reply; a refusal comes back as the worker's EngineError.
    func call<Body: Codable & Sendable, Result: Codable & Sendable>(_ op: String, _ body: Body, as type: Result.Type = Result.self) async throws -> Result {
        let frame: Data = try await withCheckedThrowingContinuation { continuation in
            let id = state.withLock { state -> UInt64? in
                guard state.closed == nil else { return nil }
                defer { state.next += 1 }
                state.pending[state.next] = continuation
                return state.next
            }
            guard let id else {
                continuation.resume(throwing: EngineError(.unavailable, "worker \(shard) is not connected"))
                return
            }
            do {
                let payload = try JSONEncoder().encode(WorkerRequest(id: id, op: op, body: body))
                // A Unix socket's send buffer takes a request at once; the worker's reader
                // thread empties it continuously.
                try writeLock.withLock { _ throws(EngineError) in try WorkerWire.writeFrame(fd, payload) }
            } catch {
                if let waiter = state.withLock({ $0.pending.removeValue(forKey: id) }) { waiter.resume(throwing: error) }
            }
        }
        let reply = try JSONDecoder().decode(WorkerReply<Result>.self, from: frame)
        if let fault = reply.error { throw fault.engineError }
        guard let result = reply.result else { throw EngineError(.failed, "worker \(shard) replied to \(op) without a result") }
        return result
    }

    /// Ends the connection (the reader thread sees the end and reports it).
    func disconnect() { shutdown(fd, Int32(SHUT_RDWR)) }
}
