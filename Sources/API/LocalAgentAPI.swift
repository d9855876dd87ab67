import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The API called from inside the daemon: a request goes through the same router, middleware
/// and handlers as one on the socket or on TCP, without a connection, on behalf of the caller
/// the front end signed in. The web UI reads and acts only through it, so what it shows is
/// what the API answers.
public struct LocalAgentAPI: Sendable {
    /// An answer: its status, headers and body (a stream for logs and events that follow).
    public struct Answer: Sendable {
        public let status: Int
        public let headers: HTTPFields
        public let body: ResponseBody

        /// The whole body (for answers that end).
        public func collect(upTo limit: Int = 64 << 20) async throws -> Data {
            let sink = CollectingWriter.Sink(limit: limit)
            try await body.write(CollectingWriter(sink: sink))
            return sink.data
        }
    }

    /// An answer collected whole.
    public struct Collected: Sendable {
        public let status: Int
        public let body: Data

        public var ok: Bool { (200..<300).contains(status) }

        public func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: body) }

        /// The API's error body {code, message, field}, when it refused.
        public var error: (message: String, field: String?)? {
            guard !ok else { return nil }
            guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any], let message = object["message"] as? String else {
                return (String(decoding: body, as: UTF8.self), nil)
            }
            return (message, object["field"] as? String)
        }
    }

    let responder: RouterResponder<AgentContext>
    let logger: Logger

    /// Sends one request as `actor` (recorded in the event log as the API records callers).
    public func send(_ method: HTTPRequest.Method, _ path: String, body: Data? = nil, actor: String) async -> Answer {
        var head = HTTPRequest(method: method, scheme: nil, authority: "vmfork", path: path)
        if body != nil { head.headerFields[.contentType] = "application/json" }
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer(bytes: body ?? Data())))
        let context = AgentContext(localCallBy: actor, logger: logger)
        let response: Response
        do {
            response = try await responder.respond(to: request, context: context)
        } catch {
            response = APIError(error).response
        }
        return Answer(status: Int(response.status.code), headers: response.headers, body: response.body)
    }

    /// Sends one request and collects its whole answer.
    public func call(_ method: HTTPRequest.Method, _ path: String, body: Data? = nil, actor: String) async -> Collected {
        let answer = await send(method, path, body: body, actor: actor)
        do {
            return Collected(status: answer.status, body: try await answer.collect())
        } catch {
            return Collected(status: 500, body: Data("{\"code\":\"failed\",\"message\":\"reading the answer failed: \(error)\"}".utf8))
        }
    }

    /// Sends `value` as JSON.
    public func call<T: Encodable>(_ method: HTTPRequest.Method, _ path: String, json value: T, actor: String) async -> Collected {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else {
            return Collected(status: 400, body: Data("{\"code\":\"invalid\",\"message\":\"the request could not be encoded\"}".utf8))
        }
        return await call(method, path, body: data, actor: actor)
    }
}

/// Collects a response body in memory, up to a limit.
private struct CollectingWriter: ResponseBodyWriter {
    final class Sink: @unchecked Sendable {
        // @unchecked: one body writes into it, sequentially (ResponseBody.write awaits each
        // write before the next), and it is read only after the write returned.
        var data = Data()
        let limit: Int
        init(limit: Int) { self.limit = limit }
    }

    let sink: Sink

    mutating func write(_ buffer: ByteBuffer) async throws {
        guard sink.data.count + buffer.readableBytes <= sink.limit else {
            throw APIError(status: .contentTooLarge, code: "too_large", message: "the answer is over \(sink.limit) bytes")
        }
        sink.data.append(contentsOf: buffer.readableBytesView)
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}
