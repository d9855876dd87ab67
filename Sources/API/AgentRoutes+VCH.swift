import Engine
import Foundation
import Hummingbird

/// The body of POST /v1/vchs.
struct VCHRequest: StrictBody {
    static let fields: Set<String> = ["name", "pool", "listen"]
    var name: String
    var pool: String
    var listen: String?
}

extension AgentRoutes {
    /// The agent's Virtual Container Hosts: list, create (recorded and started in the daemon),
    /// inspect, delete (refused while it has containers unless force).
    func registerVCHs(_ on: (HTTPRequest.Method, String, @escaping @Sendable (Request, AgentContext) async throws -> Response) -> Void) {
        let vchs = self.vchs
        on(.get, "/v1/vchs") { _, _ in try json(await vchs.list()) }
        on(.post, "/v1/vchs") { request, context in
            var request = request
            let body = try await request.decodeStrict(VCHRequest.self)
            return try json(try await vchs.create(name: body.name, pool: body.pool, listen: body.listen, by: context.actor), status: .created)
        }
        on(.get, "/v1/vchs/{name}") { _, context in try json(try await vchs.get(try context.parameter("name"))) }
        on(.delete, "/v1/vchs/{name}") { request, context in
            try await vchs.delete(try context.parameter("name"), force: try request.bool("force", default: false), by: context.actor)
            return Response(status: .noContent)
        }
    }
}
