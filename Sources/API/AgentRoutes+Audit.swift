import Engine
import Foundation
import Hummingbird

/// `POST /v1/events`: a client records calls it made on someone's behalf (a VCH, its docker
/// requests) in the audit log, several at once. The agent sets who called (the caller's uid
/// or token) and prefixes each type with "client.", so a client cannot pass for the engine's
/// own events.
extension AgentRoutes {
    func registerAudit(_ on: (HTTPRequest.Method, String, @escaping @Sendable (Request, AgentContext) async throws -> Response) -> Void) {
        let engine = self.engine
        on(.post, "/v1/events") { request, context in
            var request = request
            let body = try await request.decodeStrict(ClientEventsRequest.self)
            guard (1...1000).contains(body.events.count) else { throw APIError.invalid("events needs 1-1000 entries", field: "events") }
            for (index, event) in body.events.enumerated() { try event.check(field: "events[\(index)]") }
            for event in body.events {
                engine.record("client." + event.type, subject: event.subject, actor: context.actor, result: event.result ?? "ok", detail: event.detail ?? "")
            }
            return Response(status: .noContent)
        }
    }
}

struct ClientEventsRequest: StrictBody {
    static let fields: Set<String> = ["events"]
    var events: [ClientEvent]
}

/// One call a client records. Its fields are checked by name, as a strict body's are.
struct ClientEvent: Decodable {
    static let fields: Set<String> = ["type", "subject", "result", "detail"]
    var type: String
    var subject: String
    var result: String?
    var detail: String?

    private enum Key: String, CodingKey { case type, subject, result, detail }
    init(from decoder: any Decoder) throws {
        let all = try decoder.container(keyedBy: AnyKey.self)
        if let unknown = all.allKeys.map(\.stringValue).sorted().first(where: { !Self.fields.contains($0) }) {
            throw APIError.invalid("unknown field \"\(unknown)\" in an event (allowed: \(Self.fields.sorted().joined(separator: ", ")))", field: unknown)
        }
        let container = try decoder.container(keyedBy: Key.self)
        type = try container.decode(String.self, forKey: .type)
        subject = try container.decode(String.self, forKey: .subject)
        for key in [Key.result, .detail] where container.contains(key) {
            if try container.decodeNil(forKey: key) { throw APIError.invalid("field \"\(key.rawValue)\" is null; leave it out instead", field: key.rawValue) }
        }
        result = try container.decodeIfPresent(String.self, forKey: .result)
        detail = try container.decodeIfPresent(String.self, forKey: .detail)
    }

    func check(field: String) throws {
        guard type.unicodeScalars.count <= 64, let first = type.unicodeScalars.first, ("a"..."z").contains(first),
              type.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }) else {
            throw APIError.invalid("\(field).type \"\(type.prefix(100))\" must be 1-64 of a-z, 0-9, '.', '_' or '-', starting with a letter", field: "\(field).type")
        }
        guard subject.unicodeScalars.count <= 1024 else { throw APIError.invalid("\(field).subject is over 1024 characters", field: "\(field).subject") }
        guard (result ?? "").unicodeScalars.count <= 256 else { throw APIError.invalid("\(field).result is over 256 characters", field: "\(field).result") }
        guard (detail ?? "").unicodeScalars.count <= 4096 else { throw APIError.invalid("\(field).detail is over 4096 characters", field: "\(field).detail") }
    }
}
