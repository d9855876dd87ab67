import Engine
import Foundation
import Hummingbird
import Images

/// The body of POST /v1/images/pull.
struct ImagePullRequest: StrictBody {
    static let fields: Set<String> = ["reference", "name", "username", "password"]
    var reference: String
    var name: String?
    var username: String?
    var password: String?
}

/// The body of POST /v1/containers/{id}/commit.
struct CommitRequest: StrictBody {
    static let fields: Set<String> = ["name", "comment", "changes"]
    var name: String
    var comment: String?
    /// Dockerfile instructions for the new image's config (`docker commit --change`).
    var changes: [String]?
}

extension AgentRoutes {
    /// Pulling images from registries and collecting what no image uses.
    func registerImagePull(_ on: (HTTPRequest.Method, String, @escaping @Sendable (Request, AgentContext) async throws -> Response) -> Void) {
        let engine = self.engine
        on(.post, "/v1/images/pull") { request, context in
            var request = request
            let body = try await request.decodeStrict(ImagePullRequest.self)
            guard body.reference.utf8.count <= 1024 else { throw APIError.invalid("reference is over 1024 characters", field: "reference") }
            if let name = body.name { try Bounds.name(name, "name") }
            let credentials: RegistryCredentials?
            switch (body.username, body.password) {
            case (nil, nil): credentials = nil
            case (let username?, let password?):
                guard username.utf8.count <= 256, password.utf8.count <= 4096, !username.contains(":") else {
                    throw APIError.invalid("username must be at most 256 characters without ':', password at most 4096", field: "username")
                }
                credentials = RegistryCredentials(username: username, password: password)
            default: throw APIError.invalid("give both username and password, or neither", field: body.username == nil ? "username" : "password")
            }
            return try json(try await engine.pullImage(reference: body.reference, name: body.name, credentials: credentials, by: context.actor),
                            status: .created)
        }
        on(.get, "/v1/pulls") { _, _ in try json(engine.pullsInProgress()) }
        on(.post, "/v1/images/gc") { _, context in try json(try await engine.collectImageGarbage(by: context.actor)) }
        on(.post, "/v1/containers/{id}/commit") { request, context in
            var request = request
            let body = try await request.decodeStrict(CommitRequest.self)
            try Bounds.name(body.name, "name")
            if let comment = body.comment, comment.utf8.count > 4096 { throw APIError.invalid("comment is over 4096 characters", field: "comment") }
            if let changes = body.changes {
                guard changes.count <= 64 else { throw APIError.invalid("changes holds \(changes.count) entries, at most 64", field: "changes") }
                if let long = changes.first(where: { $0.unicodeScalars.count > 4096 }) {
                    throw APIError.invalid("change \"\(long.prefix(40))…\" is over 4096 characters", field: "changes")
                }
            }
            return try json(try await engine.commitContainer(try context.parameter("id"), as: body.name, comment: body.comment,
                                                             changes: body.changes ?? [], by: context.actor),
                            status: .created)
        }
    }
}
