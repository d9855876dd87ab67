import Foundation
import Synchronization

/// Callers' connections the daemon handed to this worker (`WorkerTakeConnection`), after a run
/// the worker answered there: the worker reads their next requests itself. A caller that runs
/// container after container then talks to the process that runs them; through the daemon,
/// each run woke two processes on the way in and cost two frames' work (issue 16's +30 µs).
///
/// A request the worker can serve alone (`Engine.canServeCallerRun`: POST /v1/containers/run
/// of a spec without name, pool or terminal whose warm parent is ready here, removed at its
/// end) it runs on the
/// connection's own thread and answers there. The daemon hears of the run in one message
/// (`callerRun`) as its answer goes, before the caller can have all of it, so its records,
/// events and metrics are those of a run it forked itself; a caller that has the answer and asks
/// the daemon anything finds them, since the daemon syncs with the worker first
/// (`Engine.syncHandedOverConnections`), and a run still going is told at that sync.
/// Anything else goes back to the daemon with the bytes read of it (`connectionEnd` with
/// them), and the daemon hears of the connection's end the same way (without).
///
/// Each connection has a runner thread while the worker holds it (at most `limit`, the daemon
/// hands no more). They close when the daemon goes away or shuts down (`endAll`): a daemon
/// that says hello anew holds none of them.
final class CallerConnections: Sendable {
    private let engine: Engine
    /// Sends a frame to the daemon that handed the connections over; false when none listens.
    private let tell: @Sendable ([UInt8]) -> Bool
    /// The connections held, by key: their descriptors.
    private let open = Mutex<[UInt64: Int32]>([:])
    /// Runs on held connections the daemon has not heard the end of: each as it began, whether
    /// the daemon heard of it yet (`announceRunning`), and its exit once it ended (the exit
    /// observer's, kept for the one message that tells the daemon of the run at its end).
    private let runs = Mutex<[String: (run: WorkerCallerRun, announced: Bool, exit: WorkerExit?)]>([:])
    /// Held around the start of a run's answer and the message that tells the daemon of it,
    /// and by a sync (`announceRunning`): a caller that has its answer and asks the daemon
    /// anything finds the run told first, and the daemon woken once a run, after its answer.
    private let telling = Mutex(())

    /// The most connections a worker holds at once (the daemon keeps to it).
    static let limit = 16
    /// A request head (request line and fields) the worker reads; a longer one goes to the daemon.
    static let maxHeadBytes = 8 << 10
    /// A run's body the worker reads; a longer one goes to the daemon.
    static let maxBodyBytes = 256 << 10
    /// A connection idle this long closes (the daemon's idle timeout, `AgentLimits.idleTimeout`).
    static let idleTimeoutMilliseconds: Int32 = 30_000

    init(engine: Engine, tell: @escaping @Sendable ([UInt8]) -> Bool) {
        self.engine = engine
        self.tell = tell
    }

    /// Serves `fd` (its own descriptor now) from now on, beginning with `leftover`.
    func take(_ fd: Int32, key: UInt64, actor: String, leftover: [UInt8]) {
        open.withLock { $0[key] = fd }
        engine.runners.run { [self] in serve(fd, key: key, actor: actor, leftover: leftover) }
    }

    /// Ends every connection held (a new daemon said hello: the old one's are not its own; or
    /// the daemon shuts down). Each one's thread sees the end (after the run it may be serving)
    /// and closes it. Under the lock: a descriptor is let go of under it before it is closed,
    /// so no number shut down here is another's.
    func endAll() {
        open.withLock { open in for fd in open.values { shutdown(fd, Int32(SHUT_RDWR)) } }
    }

    var count: Int { open.withLock { $0.count } }

    /// The daemon syncs (`Engine.syncHandedOverConnections`): tells it of every run that has
    /// begun on a held connection and not ended, then `reply`, so that the daemon's next answer
    /// knows everything a caller could have heard of from this worker.
    func announceRunning(then reply: () -> Void) {
        telling.withLock { _ in
            let unannounced = runs.withLock { runs -> [WorkerCallerRun] in
                let due = runs.filter { !$0.value.announced }
                for id in due.keys { runs[id]?.announced = true }
                return due.values.map(\.run)
            }
            for run in unannounced { _ = tell(WorkerQuick.callerRun(run)) }
            reply()
        }
    }

    /// A container's end (the engine's exit observer): true when it is a run on a held
    /// connection, whose end goes to the daemon with the run's own message.
    func ended(_ exit: WorkerExit) -> Bool {
        runs.withLock { runs in
            guard runs[exit.info.id] != nil else { return false }
            runs[exit.info.id]?.exit = exit
            return true
        }
    }

    // MARK: One connection

    private func serve(_ fd: Int32, key: UInt64, actor: String, leftover: [UInt8]) {
        let thread = pthread_self()
        var input = leftover
        var dates = HTTPDateCache()
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            switch next(fd, &input, &chunk) {
            case .ended(let why):
                if let why { engine.logger.notice("a caller's connection held here ended", metadata: ["why": "\(why)"]) }
                finish(fd, key: key, returning: nil)
                return
            case .other:
                finish(fd, key: key, returning: input)
                return
            case .run(let spec, let length):
                guard let answer = run(spec, actor: actor, key: key, thread: thread, dates: &dates) else {
                    // Not begun (not one to serve here, its parent went, the worker stops):
                    // the daemon answers it.
                    finish(fd, key: key, returning: input)
                    return
                }
                input.removeFirst(length)
                // What the connection takes at once, then the daemon told, then the rest: the
                // caller cannot have the whole answer before the daemon has the run's end.
                let (sent, failed) = telling.withLock { _ -> (Int, Bool) in
                    let first = CallerSocket.send(answer.bytes, to: fd, waiting: false)
                    if let id = answer.id, let entry = runs.withLock({ $0.removeValue(forKey: id) }) {
                        var run = entry.run
                        run.exit = entry.exit
                        run.removed = answer.removed
                        _ = tell(WorkerQuick.callerRun(run))
                    }
                    return (first.sent, first.failed)
                }
                let whole = !failed && (sent == answer.bytes.count || CallerSocket.send(Array(answer.bytes[sent...]), to: fd, waiting: true).failed == false)
                answer.later()
                guard whole else {
                    finish(fd, key: key, returning: nil)
                    return
                }
            }
        }
    }

    /// Tells the daemon the connection went back to it (with the bytes read of its next
    /// request) or ended, and lets go of it.
    private func finish(_ fd: Int32, key: UInt64, returning leftover: [UInt8]?) {
        open.withLock { _ = $0.removeValue(forKey: key) }
        let told = tell(WorkerQuick.connectionEnd(key: key, leftover: leftover))
        if !told && leftover != nil { shutdown(fd, Int32(SHUT_RDWR)) }
        close(fd)
    }

    /// A run's HTTP answer, and what waits for it to have gone (a VM's return to its pool);
    /// the container's id once it began, and whether it is removed.
    private struct Answer {
        var bytes: [UInt8]
        var later: () -> Void
        var id: String?
        var removed: Bool
    }

    /// Runs `spec` on this thread to its end and makes its answer; nil when it could not begin
    /// here (nothing was made: the request goes to the daemon).
    private func run(_ spec: ContainerSpec, actor: String, key: UInt64, thread: pthread_t, dates: inout HTTPDateCache) -> Answer? {
        guard engine.canServeCallerRun(spec) else { return nil }
        let laterWork = Mutex<[@Sendable () -> Void]>([])
        let begun = Mutex<String?>(nil)
        let outcome = Mutex<Result<RunResult, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let callersThread = CallersThread(later: { work in laterWork.withLock { $0.append(work) } },
                                          isCurrent: { pthread_equal(pthread_self(), thread) != 0 })
        Task.immediate { [engine, self] in
            do {
                // Its create, start and removal are the daemon's to record (from `callerRun`).
                let result = try await engine.runContainer(spec, remove: true, by: actor, callersThread: callersThread, started: { info in
                    begun.withLock { $0 = info.id }
                    self.runs.withLock { $0[info.id] = (WorkerCallerRun(key: key, actor: actor, info: info), false, nil) }
                }, recordsEvents: false)
                outcome.withLock { $0 = .success(result) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        done.wait()
        let later = { for work in laterWork.withLock({ let taken = $0; $0 = []; return taken }) { work() } }
        let id = begun.withLock { $0 }
        switch outcome.withLock({ $0 }) {
        case .success(let result)?:
            if let body = result.quickBytes() {
                return Answer(bytes: Self.answer(status: "200 OK", body: body, date: dates.now()), later: later, id: id, removed: true)
            }
            return Answer(bytes: Self.errorAnswer(EngineError(.failed, "the run's result could not be written"), date: dates.now()),
                          later: later, id: id, removed: true)
        case .failure(let error)?:
            // A refusal before the fork is the daemon's to answer (it names the field); a
            // failure after the container began is this run's answer.
            guard id != nil else {
                later()
                return nil
            }
            return Answer(bytes: Self.errorAnswer(error, date: dates.now()), later: later, id: id, removed: false)
        case nil:
            later()
            return nil
        }
    }

    /// An HTTP answer as the daemon writes a run's: status line, Content-Type, Date, Server,
    /// Content-Length, then the JSON body.
    static func answer(status: String, body: [UInt8], date: String) -> [UInt8] {
        CallerSocket.answer(head: "HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nDate: \(date)\r\nServer: vmfork\r\n", body: body)
    }

    /// The API's error answer for `error` ({code, message, field}, as `APIError` writes it).
    static func errorAnswer(_ error: any Error, date: String) -> [UInt8] {
        let engineError = error as? EngineError ?? EngineError(.failed, "\(error)")
        let (status, code) = switch engineError.kind {
        case .invalid: ("400 Bad Request", "invalid")
        case .notFound: ("404 Not Found", "not_found")
        case .conflict: ("409 Conflict", "conflict")
        case .unavailable: ("503 Service Unavailable", "unavailable")
        case .failed: ("500 Internal Server Error", "failed")
        }
        var writer = QuickJSON.Writer(capacity: 128)
        writer.beginObject()
        writer.key("code"); writer.string(code)
        if let field = engineError.field { writer.key("field"); writer.string(field) }
        writer.key("message"); writer.string(engineError.message)
        writer.endObject()
        return answer(status: status, body: writer.bytes, date: date)
    }

    // MARK: Reading requests

    private enum Next {
        /// A run this worker may serve, `length` bytes of the input.
        case run(ContainerSpec, length: Int)
        /// Anything else, or a run not plain enough: the daemon's (the input holds its bytes read so far).
        case other
        /// The caller closed (nil), or the connection failed or stayed idle too long (why), between requests.
        case ended(String?)
    }

    /// The next request: read whole when it is a run this worker may serve, else as far as
    /// needed to tell.
    private func next(_ fd: Int32, _ input: inout [UInt8], _ chunk: inout [UInt8]) -> Next {
        while true {
            if let headEnd = Self.find(input, "\r\n\r\n") {
                guard let length = Self.runBodyLength(input[..<headEnd]) else { return .other }
                let total = headEnd + 4 + length
                if input.count >= total {
                    // unsafe: the body's bytes are read only inside the closure, within the slice.
                    let body = input[(headEnd + 4)..<total].withUnsafeBytes { QuickJSON.parse($0) }
                    // A field given twice is the daemon's to judge, as anything unusual.
                    guard let members = body?.members, Set(members.map(\.key)).count == members.count,
                          let spec = body.flatMap(ContainerSpec.quick) else { return .other }
                    return .run(spec, length: total)
                }
            } else if input.count > Self.maxHeadBytes {
                return .other
            }
            switch read(fd, into: &input, through: &chunk) {
            case .success(true): continue
            case .success(false): return input.isEmpty ? .ended(nil) : .other
            case .failure(let why): return .ended(why.description)
            }
        }
    }

    /// Reads what has come into `chunk` (the connection's, made once), then onto `input`
    /// (waiting for it up to the idle timeout): true when bytes came, false
    /// at the caller's end of input; a failure when the connection failed or stayed idle.
    private func read(_ fd: Int32, into input: inout [UInt8], through chunk: inout [UInt8]) -> Result<Bool, EngineError> {
        while true {
            // unsafe: reads at most the chunk's count into its own storage.
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) }
            if got > 0 {
                input.append(contentsOf: chunk[..<got])
                return .success(true)
            }
            if got == 0 { return .success(false) }
            if errno == EINTR { continue }
            guard errno == EAGAIN || errno == EWOULDBLOCK else { return .failure(EngineError(.failed, "recv: \(String(cString: strerror(errno)))")) }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let count = poll(&ready, 1, Self.idleTimeoutMilliseconds)
            if count < 0 && errno == EINTR { continue }
            if count == 0 { return .failure(EngineError(.failed, "idle for \(Self.idleTimeoutMilliseconds / 1000) s")) }
            guard count > 0 else { return .failure(EngineError(.failed, "poll: \(String(cString: strerror(errno)))")) }
        }
    }

    /// The body length of a head that is a plain run's (`POST /v1/containers/run`, HTTP/1.1,
    /// kept alive, a Content-Length within `maxBodyBytes`, no transfer coding or expectation);
    /// nil for anything else.
    static func runBodyLength(_ head: ArraySlice<UInt8>) -> Int? {
        let text = String(decoding: head, as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let requestLine = lines.first, requestLine == "POST /v1/containers/run HTTP/1.1" || requestLine == "POST /v1/containers/run?remove=true HTTP/1.1"
        else { return nil }
        lines.removeFirst()
        var length: Int?
        for line in lines {
            guard let colon = line.firstIndex(of: ":"), let first = line.first, first != " " && first != "\t" else { return nil }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch name {
            case "content-length":
                guard length == nil, !value.isEmpty, value.utf8.count <= 7, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let number = Int(value),
                      number <= maxBodyBytes else { return nil }
                length = number
            case "transfer-encoding", "expect", "upgrade":
                return nil
            case "connection":
                guard value.lowercased() == "keep-alive" else { return nil }
            default:
                continue
            }
        }
        return length
    }

    static func find(_ bytes: [UInt8], _ pattern: StaticString) -> Int? {
        let needle = pattern.withUTF8Buffer { Array($0) }
        guard bytes.count >= needle.count else { return nil }
        var index = 0
        while index <= bytes.count - needle.count {
            if bytes[index] == needle[0] && bytes[index..<(index + needle.count)].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}

/// A caller's connection as a worker writes to it: a run's HTTP answer, whole (its head, the
/// length, the body), and its write (`CallerConnections`, and the run answers of
/// `RunAnswerHandOff` that `WorkerServer` writes).
enum CallerSocket {
    /// `head` (status line and fields, each ending in CRLF), Content-Length, the blank line, `body`.
    static func answer(head: String, body: [UInt8]) -> [UInt8] {
        var bytes = Array(head.utf8)
        bytes.reserveCapacity(bytes.count + 32 + body.count)
        bytes.append(contentsOf: "Content-Length: \(body.count)\r\n\r\n".utf8)
        bytes.append(contentsOf: body)
        return bytes
    }

    /// Writes `bytes`, with `waiting` all of them, waiting for room while the caller reads (as
    /// long as it takes, as the daemon's own answers do: the idle timeout counts only between
    /// requests), else what the connection takes at once: how many went, and whether the
    /// connection failed.
    static func send(_ bytes: [UInt8], to fd: Int32, waiting: Bool) -> (sent: Int, failed: Bool) {
        var offset = 0
        while offset < bytes.count {
            // unsafe: offset < count, so the pointer and length stay inside the buffer.
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if sent > 0 {
                offset += sent
                continue
            }
            guard sent < 0, errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK else { return (offset, true) }
            if errno == EINTR { continue }
            guard waiting else { return (offset, false) }
            var room = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&room, 1, -1)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0, room.revents & Int16(POLLOUT) != 0 else { return (offset, true) }
        }
        return (offset, false)
    }
}
