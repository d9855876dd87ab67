import Engine
import Foundation
import Images

extension AgentClient {
    /// POST /v1/images/pull: pulls `reference` (e.g. "127.0.0.1:5000/busybox:latest") into the
    /// daemon's datastore and registers it as `name` (default: the repository's last component).
    /// Throws a ClientError with the daemon's message when refused.
    public func pullImage(reference: String, name: String? = nil, credentials: RegistryCredentials? = nil) async throws -> ImageRecord {
        struct Body: Encodable, Sendable { var reference: String; var name: String?; var username: String?; var password: String? }
        let response = try await send("POST", "/v1/images/pull", json: Body(reference: reference, name: name, username: credentials?.username,
                                                                           password: credentials?.password))
        guard response.status == 201 else { throw ClientError(description: "pull \(reference): \(response.errorMessage) (HTTP \(response.status))") }
        return try response.decode(ImageRecord.self)
    }

    /// POST /v1/containers/{id}/commit: an ended container's changes as a new image `name`,
    /// its config changed by `changes` (Dockerfile instructions, as `docker commit --change`).
    public func commitContainer(_ id: String, as name: String, comment: String? = nil, changes: [String] = []) async throws -> CommitResult {
        struct Body: Encodable, Sendable { var name: String; var comment: String?; var changes: [String]? }
        let response = try await send("POST", "/v1/containers/\(id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? id)/commit",
                                      json: Body(name: name, comment: comment, changes: changes.isEmpty ? nil : changes))
        guard response.status == 201 else { throw ClientError(description: "commit \(id): \(response.errorMessage) (HTTP \(response.status))") }
        return try response.decode(CommitResult.self)
    }

    /// POST /v1/images/gc: removes pulled root folders and blobs no image uses.
    public func collectImageGarbage() async throws -> ImagePuller.GarbageReport {
        let response = try await send("POST", "/v1/images/gc")
        guard response.status == 200 else { throw ClientError(description: "image gc: \(response.errorMessage) (HTTP \(response.status))") }
        return try response.decode(ImagePuller.GarbageReport.self)
    }
}
