import Foundation
import NIOHTTP1

/// Which handler answers a request: Docker's paths, after the `/v1.NN` prefix. Anything
/// else is 404 with Docker's JSON error body.
extension VirtualContainerHost {
    /// Answers one request; every error becomes Docker's `{"message": ...}` with its status.
    /// Each one but the ping is recorded in the agent's audit log (see `audit`).
    func handle(_ request: DockerRequest) async -> DockerResponse {
        let response = await answer(request)
        if request.path != "/_ping" { audit("\(request.method.rawValue) \(request.path)", status: response.status.code) }
        return response
    }

    /// Records a docker call in the host agent's audit log (see `AuditLog`).
    func audit(_ call: String, status: UInt) {
        auditLog.add(call: call, status: status)
    }

    private func answer(_ request: DockerRequest) async -> DockerResponse {
        do {
            if let version = request.version, Self.compare(version, Self.apiVersion) > 0 {
                throw DockerError.badRequest("client version \(version) is too new. Maximum supported API version is \(Self.apiVersion)")
            }
            if let version = request.version, Self.compare(version, Self.minimumAPIVersion) < 0 {
                throw DockerError.badRequest("client version \(version) is too old. Minimum supported API version is \(Self.minimumAPIVersion)")
            }
            let started = ContinuousClock.now
            var response = try await route(request)
            logger.debug("answered", metadata: ["method": "\(request.method.rawValue)", "path": "\(request.path)",
                                                "ms": "\(Self.milliseconds(ContinuousClock.now - started))"])
            if request.path == "/_ping" { return response }
            response.headers.append(("API-Version", Self.apiVersion))
            return response
        } catch let error as DockerError {
            if error.status.code >= 500 { logger.warning("request failed", metadata: ["path": "\(request.path)", "error": "\(error.message)"]) }
            return error.response
        } catch {
            logger.error("request failed", metadata: ["path": "\(request.path)", "error": "\(error)"])
            return DockerError(status: .internalServerError, message: "\(error)").response
        }
    }

    private func route(_ request: DockerRequest) async throws -> DockerResponse {
        let segments = request.path.split(separator: "/").map { $0.removingPercentEncoding ?? String($0) }
        let method = request.method
        switch segments.first {
        case "_ping" where segments.count == 1 && (method == .GET || method == .HEAD):
            return ping(head: method == .HEAD)
        case "version" where segments.count == 1 && method == .GET:
            return try await version()
        case "info" where segments.count == 1 && method == .GET:
            return try await info()
        case "events" where segments.count == 1 && method == .GET:
            return try await events(request)
        case "commit" where segments.count == 1 && method == .POST:
            return try await commitContainer(request)
        case "containers":
            return try await routeContainer(request, Array(segments.dropFirst()))
        case "images":
            return try await routeImage(request, Array(segments.dropFirst()))
        default:
            throw DockerError.notFound("page not found")
        }
    }

    private func routeContainer(_ request: DockerRequest, _ rest: [String]) async throws -> DockerResponse {
        let method = request.method
        if rest == ["json"], method == .GET { return try await listContainers(request) }
        if rest == ["create"], method == .POST { return try await createContainer(request) }
        if rest == ["prune"], method == .POST { return try await pruneContainers(request) }
        if rest.count == 1, method == .DELETE { return try await removeContainer(rest[0], request) }
        guard rest.count == 2 else { throw DockerError.notFound("page not found") }
        let (id, action) = (rest[0], rest[1])
        switch (method, action) {
        case (.GET, "json"): return try await inspectContainer(id)
        case (.POST, "start"): return try await startContainer(id)
        case (.POST, "stop"): return try await stopContainer(id, request)
        case (.POST, "kill"): return try await killContainer(id, request)
        case (.POST, "wait"): return try await waitContainer(id, request)
        case (.GET, "logs"): return try await logs(id, request)
        case (.POST, "resize"): return try await resizeContainer(id, request)
        case (.POST, "attach"):
            let info = try await resolve(id)
            if info.state == .exited, try !request.bool("logs") { throw DockerError.conflict("You cannot attach to a stopped container, start it first") }
            throw DockerError.badRequest("attach needs the connection upgrade (Connection: Upgrade, Upgrade: tcp)")
        case (.GET, "top"): return try await top(id, request)
        case (.GET, "stats"): return try await stats(id, request)
        case (.GET, "changes"), (.GET, "export"), (.POST, "pause"), (.POST, "unpause"),
             (.POST, "restart"), (.POST, "update"), (.POST, "rename"), (.POST, "exec"), (.GET, "archive"), (.PUT, "archive"),
             (.HEAD, "archive"):
            _ = try await resolve(id)
            throw DockerError.notImplemented("\(action) is not supported by this VCH (the host agent has no such operation)")
        default:
            throw DockerError.notFound("page not found")
        }
    }

    private func routeImage(_ request: DockerRequest, _ rest: [String]) async throws -> DockerResponse {
        let method = request.method
        if rest == ["json"], method == .GET { return try await listImages(request) }
        if rest == ["create"], method == .POST { return try await pullImage(request) }
        guard !rest.isEmpty else { throw DockerError.notFound("page not found") }
        // Image names may hold slashes: /images/{name}/json, DELETE /images/{name}.
        if method == .GET, rest.count >= 2, rest.last == "json" { return try await inspectImage(rest.dropLast().joined(separator: "/")) }
        if method == .DELETE { return try await removeImage(rest.joined(separator: "/"), request) }
        if method == .POST, rest.last == "push" || rest.last == "tag" {
            throw DockerError.notImplemented("image \(rest.last!) is not supported by this VCH")
        }
        throw DockerError.notFound("page not found")
    }

    /// Compares dotted version numbers ("1.43" < "1.50").
    static func compare(_ a: String, _ b: String) -> Int {
        let left = a.split(separator: ".").map { Int($0) ?? 0 }
        let right = b.split(separator: ".").map { Int($0) ?? 0 }
        for index in 0..<max(left.count, right.count) {
            let (x, y) = (index < left.count ? left[index] : 0, index < right.count ? right[index] : 0)
            if x != y { return x < y ? -1 : 1 }
        }
        return 0
    }
}
