import API
import Foundation
import Logging
import Synchronization

/// The host agent as the VCH uses it: its HTTP API through `AgentClient`, never the engine.
/// The agent's refusals become Docker's (same status, the agent's message).
struct AgentBackend: Sendable {
    let client: AgentClient
    var logger: Logger?

    /// Sends one request; a status of 300 or more is thrown as a `DockerError`.
    @discardableResult
    /// `sent`: told when the request has been written to the agent's socket.
    func call(_ method: String, _ path: String, body: Data? = nil, sent: (@Sendable () -> Void)? = nil) async throws -> AgentClient.Response {
        let response: AgentClient.Response
        let started = logger == nil ? 0 : Timeline.now
        do {
            response = try await client.send(method, path, body: body, sent: sent)
            logger?.debug("agent call", metadata: ["call": "\(method) \(path)", "status": "\(response.status)",
                                                   "t0": .string(String(format: "%.3f", started)), "t": Timeline.stamp()])
        } catch {
            throw DockerError(status: .serviceUnavailable, message: "the host agent cannot be reached: \(error)")
        }
        guard response.status < 300 else {
            throw DockerError(status: .init(statusCode: response.status), message: response.errorMessage)
        }
        return response
    }

    func call<T: Encodable>(_ method: String, _ path: String, json value: T) async throws -> AgentClient.Response {
        try await call(method, path, body: try JSONEncoder().encode(value))
    }

    func get<T: Decodable>(_ path: String, as type: T.Type) async throws -> T {
        let response = try await call("GET", path)
        do {
            return try JSONDecoder().decode(T.self, from: response.body)
        } catch {
            throw DockerError(status: .badGateway, message: "the host agent's answer to GET \(path) does not decode: \(error)")
        }
    }

    /// A streaming GET (logs or events with follow): the body's pieces as they arrive. Over
    /// the agent's Unix socket an event loop reads them (no thread waits while a follow has
    /// nothing new); over TCP the blocking read runs on a thread of its own. When the consumer
    /// goes away its connection to the agent is closed at once (a follow that has nothing new
    /// would otherwise hold it, and a place under the agent's connection limit, until its
    /// next piece).
    func stream(_ path: String) -> AsyncThrowingStream<Data, Error> {
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        // A refusal's body is the agent's error, never a piece of the stream.
        let refusal = Mutex<(status: Int, body: Data)?>(nil)
        let cancel = client.streamOnEventLoop("GET", path, onStatus: { status in
            if status >= 300 { refusal.withLock { $0 = (status, Data()) } }
        }, onPiece: { piece in
            let refused = refusal.withLock { state -> Bool in
                guard var kept = state else { return false }
                kept.body.append(piece.prefix(max(0, 4096 - kept.body.count)))
                state = kept
                return true
            }
            if !refused { continuation.yield(piece) }
        }, onEnd: { error in
            if let error {
                continuation.finish(throwing: error)
            } else if let (status, body) = refusal.withLock({ $0 }) {
                let message = AgentClient.Response(status: status, headers: [:], body: body).errorMessage
                continuation.finish(throwing: DockerError(status: .init(statusCode: status), message: "the host agent refused GET \(path): \(message)"))
            } else {
                continuation.finish()
            }
        })
        if let cancel {
            continuation.onTermination = { _ in cancel() }
            return stream
        }
        return blockingStream(path, continuation: continuation, stream: stream)
    }

    /// `stream` over TCP: the blocking client on a thread of its own.
    private func blockingStream(_ path: String, continuation: AsyncThrowingStream<Data, Error>.Continuation,
                                stream: AsyncThrowingStream<Data, Error>) -> AsyncThrowingStream<Data, Error> {
        let stopped = StopFlag()
        let cancellation = AgentClient.StreamCancellation()
        continuation.onTermination = { _ in
            stopped.stop()
            cancellation.cancel()
        }
        let client = self.client
        let thread = Thread {
            do {
                // A refusal's body is the agent's error, never a piece of the stream.
                var refused = false
                var refusal = Data()
                let status = try client.stream("GET", path, cancellation: cancellation, onStatus: { refused = $0 >= 300 }) { chunk in
                    guard !stopped.isStopped else { return false }
                    if refused { refusal.append(chunk.prefix(4096 - refusal.count)) } else { continuation.yield(chunk) }
                    return true
                }
                if status >= 300 {
                    let message = AgentClient.Response(status: status, headers: [:], body: refusal).errorMessage
                    continuation.finish(throwing: DockerError(status: .init(statusCode: status), message: "the host agent refused GET \(path): \(message)"))
                } else {
                    continuation.finish()
                }
            } catch {
                continuation.finish(throwing: error)
            }
        }
        thread.name = "vch-agent-stream"
        thread.start()
        return stream
    }

    /// Percent-encodes one path segment or query value.
    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// A one-way switch read by a blocking reader's callback.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func stop() { flag.store(true, ordering: .relaxed) }
    var isStopped: Bool { flag.load(ordering: .relaxed) }
}
