import Foundation
import ProcessVM
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
        var pending: [UInt64: CheckedContinuation<WorkerFrame, Error>] = [:]
        var closed: String?
        /// The worker's pid, version and poller thread, from its hello.
        var pid: Int32 = 0
        var version = ""
        var pollerThread: Int32?
        /// The image records this connection's worker has taken (a create then names its
        /// image only); a new connection starts empty, so a restarted worker is sent them again.
        var images: [String: ImageRecord] = [:]
        /// The machine's costs last sent to this worker.
        var costsSent: MachineCosts?
        /// Requests sent on this connection, by op.
        var requests: [String: Int] = [:]
    }

    init(shard: Int, socketPath: String) throws(EngineError) {
        self.shard = shard
        fd = try WorkerWire.connect(to: socketPath)
    }

    var pid: Int32 {
        get { state.withLock { $0.pid } }
        set { state.withLock { $0.pid = newValue } }
    }

    var version: String {
        get { state.withLock { $0.version } }
        set { state.withLock { $0.version = newValue } }
    }

    var pollerThread: Int32? {
        get { state.withLock { $0.pollerThread } }
        set { state.withLock { $0.pollerThread = newValue } }
    }

    var costsSent: MachineCosts? {
        get { state.withLock { $0.costsSent } }
        set { state.withLock { $0.costsSent = newValue } }
    }

    /// Whether the worker has this record of the image (sent on this connection before).
    func has(_ image: ImageRecord) -> Bool { state.withLock { $0.images[image.name] == image } }
    func took(_ image: ImageRecord) { state.withLock { $0.images[image.name] = image } }

    var isClosed: Bool { state.withLock { $0.closed != nil } }

    /// Requests sent on this connection so far, by op (the metrics' `vmfork_worker_requests`).
    var requestsSent: [String: Int] { state.withLock { $0.requests } }

    /// Starts reading, with `reader` (on its own duplicate of the socket) or on a thread of
    /// its own: `onEvent` gets each event frame (in order); `onClose` once, with why, when the
    /// stream ends (every call in flight fails first).
    func startReading(with reader: (any WorkerFrameReader)?, onEvent: @escaping @Sendable (String, WorkerFrame) -> Void,
                      onClose: @escaping @Sendable (String) -> Void) async throws {
        let ended = Mutex(false)
        let end = { @Sendable [self] (why: String) in
            guard !ended.withLock({ let was = $0; $0 = true; return was }) else { return }
            finish(why, onClose: onClose)
        }
        guard let reader else {
            let thread = Thread { [self] in
                // Waits in poll for input only: a thread blocked in recv on a Unix stream socket
                // is also woken each time the worker reads (the kernel signals write space on
                // the same wait queue), a wake-up on the worker's core at the start of every request.
                var input = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                while true {
                    input.revents = 0
                    if poll(&input, 1, -1) < 0 {
                        if errno == EINTR { continue }
                        return end("worker socket poll: \(String(cString: strerror(errno)))")
                    }
                    let bytes: Data?
                    do { bytes = try WorkerWire.readFrame(fd) } catch { return end("\(error)") }
                    guard let bytes else { return end("the worker closed its socket") }
                    if let why = take(bytes, onEvent: onEvent) { return end(why) }
                }
            }
            thread.name = "vmfork-worker-\(shard)"
            thread.start()
            return
        }
        let readable = dup(fd)
        guard readable >= 0 else { throw EngineError(.failed, "worker \(shard) socket: dup: \(String(cString: strerror(errno)))") }
        // The reader's end shares the socket's flags: a non-blocking socket is written with a
        // wait for room (`WorkerWire.write`).
        do {
            try await reader.read(from: readable, shard: shard, frame: { [self] bytes in
                if let why = take(bytes, onEvent: onEvent) {
                    disconnect()
                    end(why)
                }
            }, ended: end)
        } catch {
            // Never read: the caller hears it from the throw, not from `onClose`.
            ended.withLock { $0 = true }
            state.withLock { $0.closed = "\(error)" }
            close(fd)
            throw error
        }
    }

    /// One frame from the worker: an event goes to `onEvent`, a reply to its caller; why the
    /// stream must end when it is not a message.
    private func take(_ bytes: Data, onEvent: (String, WorkerFrame) -> Void) -> String? {
        let frame = WorkerFrame(bytes)
        guard let header = frame.header else { return "the worker sent a frame that is not a message" }
        if let event = header.event {
            onEvent(event, frame)
        } else {
            let waiter = state.withLock { $0.pending.removeValue(forKey: header.id) }
            waiter?.resume(returning: frame)
        }
        return nil
    }

    /// The stream ended: every call in flight fails, the socket closes, `onClose` hears why.
    private func finish(_ why: String, onClose: (String) -> Void) {
        let waiters = state.withLock { state in
            state.closed = why
            defer { state.pending = [:] }
            return Array(state.pending.values)
        }
        for waiter in waiters { waiter.resume(throwing: EngineError(.unavailable, "worker \(shard) is gone: \(why)")) }
        close(fd)
        onClose(why)
    }

    /// Sends a request and waits for its reply; a refusal comes back as the worker's EngineError.
    /// `passing`: a descriptor that goes with the frame (SCM_RIGHTS).
    func call<Body: Codable & Sendable, Result: Codable & Sendable>(_ op: String, _ body: Body, as type: Result.Type = Result.self,
                                                                   passing descriptor: Int32? = nil) async throws -> Result {
        let frame = try await exchange(op, passing: descriptor) { id in try JSONEncoder().encode(WorkerRequest(id: id, op: op, body: body)) }
        let reply = try JSONDecoder().decode(WorkerReply<Result>.self, from: frame.data)
        if let fault = reply.error { throw fault.engineError }
        guard let result = reply.result else { throw EngineError(.failed, "worker \(shard) replied to \(op) without a result") }
        return result
    }

    /// A create (and start) in the worker, written and read by hand (`WorkerQuick`); the
    /// image's record goes along only when this worker may not have it.
    /// `passing`: a descriptor that goes with the frame (`WorkerCreate.answerHead`); `sent` is
    /// called as the frame goes (just before its write), `refused` when the reply is the
    /// worker's refusal (an error it sent, not one in reading its reply).
    func create(_ request: WorkerCreate, image: ImageRecord, passing descriptor: Int32? = nil,
                sent: (() -> Void)? = nil, refused: (() -> Void)? = nil) async throws -> (info: ContainerInfo, end: WorkerRunEnd?) {
        var request = request
        let sendsImage = !has(image) || version != Engine.version
        if sendsImage { request.image = image }
        let frame = try await exchange("create", passing: descriptor, sent: sent) { id in
            var body = QuickJSON.Writer()
            guard WorkerQuick.create(request, into: &body) else { return try JSONEncoder().encode(WorkerRequest(id: id, op: "create", body: request)) }
            return Data(WorkerQuick.request(id: id, op: "create") { $0.raw(body.bytes) })
        }
        if let refused, let fault = frame.member("error"), fault != .null { refused() }
        let info = try createResult(frame)
        // Only a create that succeeded shows the worker took the record (a refusal may have
        // come before it did: the next create sends it again).
        if sendsImage { took(image) }
        return (info, try WorkerQuick.runEnd(of: frame, started: info, shard: shard))
    }

    private func createResult(_ frame: WorkerFrame) throws -> ContainerInfo {
        if let result = try WorkerQuick.result(of: frame, shard: shard, op: "create"), let info = ContainerInfo.quick(result) { return info }
        let reply = try JSONDecoder().decode(WorkerReply<ContainerInfo>.self, from: frame.data)
        if let fault = reply.error { throw fault.engineError }
        guard let info = reply.result else { throw EngineError(.failed, "worker \(shard) replied to create without a result") }
        return info
    }

    /// A remove in the worker, written and read by hand.
    func remove(_ request: WorkerRemove) async throws {
        let frame = try await exchange("remove") { id in
            Data(WorkerQuick.request(id: id, op: "remove") { WorkerQuick.remove(request, into: &$0) })
        }
        if try WorkerQuick.result(of: frame, shard: shard, op: "remove") != nil { return }
        let reply = try JSONDecoder().decode(WorkerReply<WorkerNothing>.self, from: frame.data)
        if let fault = reply.error { throw fault.engineError }
    }

    /// Sends the request `encode` writes for its id and waits for the reply's frame.
    private func exchange(_ op: String, passing descriptor: Int32? = nil, sent: (() -> Void)? = nil,
                          _ encode: (UInt64) throws -> Data) async throws -> WorkerFrame {
        try await withCheckedThrowingContinuation { continuation in
            let id = state.withLock { state -> UInt64? in
                guard state.closed == nil else { return nil }
                defer { state.next += 1 }
                state.requests[op, default: 0] += 1
                state.pending[state.next] = continuation
                return state.next
            }
            guard let id else {
                continuation.resume(throwing: EngineError(.unavailable, "worker \(shard) is not connected"))
                return
            }
            do {
                let payload = try encode(id)
                // A Unix socket's send buffer takes a request at once; the worker's reader
                // thread empties it continuously.
                // Before the write, so that whoever hears of a failure after it errs on the side of "it went".
                sent?()
                try writeLock.withLock { _ throws(EngineError) in try WorkerWire.writeFrame(fd, payload, passing: descriptor) }
            } catch {
                if let waiter = state.withLock({ $0.pending.removeValue(forKey: id) }) { waiter.resume(throwing: error) }
            }
        }
    }

    /// Ends the connection (the reader thread sees the end and reports it).
    func disconnect() { shutdown(fd, Int32(SHUT_RDWR)) }
}
