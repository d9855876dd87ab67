import Engine
import Foundation
import Hummingbird

/// `POST /v1/events`: a client records a call it made on someone's behalf (a VCH, each
/// docker request) in the audit log. The agent sets who called (the caller's uid or token)
/// and prefixes the type with "client.", so a client cannot pass for the engine's own events.
extension AgentRoutes {
    func registerAudit(_ on: (HTTPRequest.Method, String, @escaping @Sendable (Request, AgentContext) async throws -> Response) -> Void) {
        let engine = self.engine
        on(.post, "/v1/events") { request, context in
            var request = request
            let body = try await request.decodeStrict(ClientEventRequest.self)
            guard body.type.utf8.count <= 64, let first = body.type.unicodeScalars.first, ("a"..."z").contains(first),
                  body.type.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0) }) else {
                throw APIError.invalid("type \"\(body.type)\" must be 1-64 of a-z, 0-9, '.', '_' or '-', starting with a letter", field: "type")
            }
            guard body.subject.unicodeScalars.count <= 1024 else { throw APIError.invalid("subject is over 1024 characters", field: "subject") }
            guard (body.result ?? "").unicodeScalars.count <= 256 else { throw APIError.invalid("result is over 256 characters", field: "result") }
            guard (body.detail ?? "").unicodeScalars.count <= 4096 else { throw APIError.invalid("detail is over 4096 characters", field: "detail") }
            engine.record("client." + body.type, subject: body.subject, actor: context.actor, result: body.result ?? "ok", detail: body.detail ?? "")
            return Response(status: .noContent)
        }
    }
}

struct ClientEventRequest: StrictBody {
    static let fields: Set<String> = ["type", "subject", "result", "detail"]
    var type: String
    var subject: String
    var result: String?
    var detail: String?
}
