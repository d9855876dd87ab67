import Engine
import Foundation

/// images, image inspect, rmi, pull. Images belong to the host agent, shared by its VCHs.
extension VirtualContainerHost {
    /// The agent image a Docker reference names; 404 "No such image" (the CLI then pulls).
    /// Images come from the cache while the agent's event follow keeps it (see `AgentFeed`).
    func findImage(_ reference: String) async throws -> ImageRecord {
        if caches, let cached = feed.image(reference) { return cached }
        let epoch = feed.epoch
        for candidate in DockerNames.imageCandidates(reference) {
            do {
                let image = try await agent.get("/v1/images/\(AgentBackend.escape(candidate))", as: ImageRecord.self)
                feed.cache(image, as: reference, readAt: epoch)
                return image
            } catch let error as DockerError where error.status == .notFound || error.status == .badRequest {
                continue
            }
        }
        throw DockerError.notFound("No such image: \(reference)")
    }

    func imagesByName() async throws -> [String: ImageRecord] {
        let images = try await agent.get("/v1/images", as: [ImageRecord].self)
        return Dictionary(images.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }

    func listImages(_ request: DockerRequest) async throws -> DockerResponse {
        let filters = try request.filters()
        if let unknown = filters.keys.sorted().first(where: { $0 != "reference" }) {
            throw DockerError.badRequest("invalid filter '\(unknown)' (this VCH filters images by reference)")
        }
        let images = try await agent.get("/v1/images", as: [ImageRecord].self).filter { image in
            guard let references = filters["reference"] else { return true }
            return references.contains { DockerNames.imageCandidates($0).contains(image.name) || image.name.hasPrefix($0.replacingOccurrences(of: "*", with: "")) && $0.hasSuffix("*") }
        }
        return try .json(images.sorted { $0.createdAt > $1.createdAt }.map { image in
            ImageSummary(Id: DockerNames.imageID(image), ParentId: "", RepoTags: [DockerNames.tag(image.name)], RepoDigests: [],
                         Created: Int(image.createdAt), Size: 0, SharedSize: -1, Labels: [:], Containers: -1)
        })
    }

    func inspectImage(_ reference: String) async throws -> DockerResponse {
        let image = try await findImage(reference)
        // A pulled (or committed) image's config as its registry or commit wrote it; an image
        // added from a folder has only its program, arguments and environment.
        let config: ImageInspect.Config
        if let pulled = image.pulled {
            config = .init(Cmd: pulled.cmd.isEmpty ? nil : pulled.cmd, Entrypoint: pulled.entrypoint.isEmpty ? nil : pulled.entrypoint,
                           Env: pulled.env, WorkingDir: pulled.workingDir, User: pulled.user, Labels: pulled.labels,
                           ExposedPorts: pulled.exposedPorts.map { Dictionary(uniqueKeysWithValues: $0.map { ($0, [:]) }) }, StopSignal: pulled.stopSignal)
        } else {
            config = .init(Cmd: image.arguments, Entrypoint: [image.executable], Env: image.environment)
        }
        return try .json(ImageInspect(Id: DockerNames.imageID(image), RepoTags: [DockerNames.tag(image.name)], RepoDigests: [],
                                      Created: DockerTime.rfc3339(image.createdAt), Os: "linux", Architecture: "amd64", Size: 0,
                                      Config: config, RootFS: .init(Type: "layers")))
    }

    func removeImage(_ reference: String, _ request: DockerRequest) async throws -> DockerResponse {
        if try request.bool("force") { throw DockerError.badRequest("rmi --force is not supported: remove the image's containers first") }
        let image = try await findImage(reference)
        feed.forgetImages()
        try await agent.call("DELETE", "/v1/images/\(AgentBackend.escape(image.name))")
        feed.forgetImages()
        return try .json([["Untagged": DockerNames.tag(image.name)], ["Deleted": DockerNames.imageID(image)]])
    }

    /// `POST /images/create?fromImage=NAME&tag=TAG`: the agent's pull (POST /v1/images/pull),
    /// answered as Docker's JSON progress lines. A failure after the 200 is an error line.
    func pullImage(_ request: DockerRequest) async throws -> DockerResponse {
        if let source = request.string("fromSrc"), !source.isEmpty { throw DockerError.badRequest("docker import is not supported by this VCH") }
        guard let from = request.string("fromImage"), !from.isEmpty else { throw DockerError.badRequest("pull needs fromImage") }
        let tag = request.string("tag").flatMap { $0.isEmpty ? nil : $0 }
        let reference = tag.map { $0.hasPrefix("sha256:") ? "\(from)@\($0)" : "\(from):\($0)" } ?? from
        let (agent, feed) = (self.agent, self.feed)
        let shown = DockerNames.tag(DockerNames.shortReference(reference))
        let body = AsyncThrowingStream<Data, Error> { continuation in
            func line(_ object: [String: Any]) {
                if let data = try? JSONSerialization.data(withJSONObject: object) { continuation.yield(data + Data([0x0A])) }
            }
            let task = Task {
                line(["status": "Pulling from \(from)", "id": tag ?? "latest"])
                do {
                    feed.forgetImages()
                    let response = try await agent.call("POST", "/v1/images/pull", body: try JSONSerialization.data(withJSONObject: ["reference": reference]))
                    let image = try response.decode(ImageRecord.self)
                    line(["status": "Digest: \(DockerNames.imageID(image))"])
                    line(["status": "Status: Downloaded newer image for \(shown)"])
                } catch let error as DockerError where error.status == .conflict && error.message.contains("already exists") {
                    // Up to date only when the agent's image of that name was pulled from this
                    // very reference; an image of the same name from elsewhere (a folder,
                    // another registry) is not this one.
                    let name = DockerNames.imageCandidates(reference).last ?? reference
                    let existing = try? await agent.call("GET", "/v1/images/\(AgentBackend.escape(name))").decode(ImageRecord.self)
                    if let source = existing?.pulled?.reference, source == reference || DockerNames.shortReference(source) == DockerNames.shortReference(reference) {
                        line(["status": "Status: Image is up to date for \(shown)"])
                    } else {
                        let message = "the host agent already has an image named \(name) that was not pulled from \(reference)"
                            + (existing?.pulled.map { " (it came from \($0.reference))" } ?? " (it was added from a folder)") + "; remove it first"
                        line(["errorDetail": ["message": message], "error": message])
                    }
                } catch let error as DockerError {
                    let message = error.status == .notFound && error.message.contains("route")
                        ? "pull is not available: the host agent has no POST /v1/images/pull" : error.message
                    line(["errorDetail": ["message": message], "error": message])
                } catch {
                    line(["errorDetail": ["message": "\(error)"], "error": "\(error)"])
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return DockerResponse(headers: [("Content-Type", "application/json")], body: .stream(body))
    }

    /// `POST /commit?container=ID&repo=REPO[&tag=latest][&comment=M][&author=A][&changes=C]...`
    /// (docker commit): the agent's POST /v1/containers/{id}/commit, which makes an image of an
    /// ended container of a pulled image, its config changed by the `changes` (`--change`, one
    /// Dockerfile instruction each; the agent parses and refuses them), after the config body's
    /// fields when there is one (see `CommitConfig`). The agent names images without tags, by
    /// the repository's last part, as its pull does: a tag other than latest is refused by name.
    func commitContainer(_ request: DockerRequest) async throws -> DockerResponse {
        guard let reference = request.string("container"), !reference.isEmpty else { throw DockerError.badRequest("commit needs a container") }
        let info = try await resolve(reference)
        guard let repository = request.string("repo"), !repository.isEmpty else {
            throw DockerError.badRequest("commit needs a repository name: this VCH's host agent names every image")
        }
        if let tag = request.string("tag"), !tag.isEmpty, tag != "latest" {
            throw DockerError.badRequest("commit tag \(tag) is not supported: the host agent names images without tags (commit as \(repository) or \(repository):latest)")
        }
        var changes = (request.query["changes"] ?? []).filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
        if !request.body.isEmpty {
            guard let object = try? JSONSerialization.jsonObject(with: request.body, options: [.fragmentsAllowed]) else {
                throw DockerError.badRequest("the commit's config body is not JSON")
            }
            if let config = object as? [String: Any] {
                changes = try CommitConfig.changes(config) + changes
            } else if !(object is NSNull) {
                throw DockerError.badRequest("the commit's config body is not a JSON object (a container config)")
            }
        }
        let name = DockerNames.imageCandidates(repository).last ?? repository
        var comment = request.string("comment").flatMap { $0.isEmpty ? nil : $0 }
        if let author = request.string("author"), !author.isEmpty { comment = [comment, "author: \(author)"].compactMap { $0 }.joined(separator: "; ") }
        struct Body: Encodable { var name: String; var comment: String?; var changes: [String]? }
        feed.forgetImages()
        let response = try await agent.call("POST", "/v1/containers/\(AgentBackend.escape(info.id))/commit",
                                            json: Body(name: name, comment: comment, changes: changes.isEmpty ? nil : changes))
        feed.forgetImages()
        let result = try response.decode(CommitResult.self)
        return try .json(["Id": DockerNames.imageID(result.image)], status: .created)
    }
}

/// The config body of Docker's `POST /commit` (a container config): the fields an image
/// config takes, as the Dockerfile instructions that set them (applied before the `changes`,
/// as Docker applies its changes on top of that config). Values are escaped so that the
/// agent's quote and `$` processing gives them back as they are. Any other field set is
/// refused by name.
enum CommitConfig {
    static let fields = ["Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Labels", "ExposedPorts", "StopSignal"]

    static func changes(_ config: [String: Any]) throws -> [String] {
        if let other = config.keys.sorted().first(where: { !fields.contains($0) && UnsupportedOptions.isSet(config[$0]) }) {
            throw DockerError.badRequest("commit config field \(other.prefix(40)) is not supported by this VCH (it takes \(fields.joined(separator: ", ")))")
        }
        var changes: [String] = []
        // ENTRYPOINT first: with no Cmd it drops the image's, as Docker's merge leaves Cmd empty
        // when the config names an Entrypoint.
        for (field, instruction) in [("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")] where UnsupportedOptions.isSet(config[field]) {
            // Docker's strslice: an array of strings, or one string.
            let arguments = try (config[field] as? String).map { [$0] } ?? strings(config[field], field: field)
            let json = try JSONSerialization.data(withJSONObject: arguments, options: [.withoutEscapingSlashes])
            changes.append("\(instruction) " + String(decoding: json, as: UTF8.self))
        }
        let environment = try strings(config["Env"], field: "Env")
        if !environment.isEmpty {
            changes.append("ENV " + (try environment.map { entry -> String in
                guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else {
                    throw DockerError.badRequest("commit config Env entry \"\(entry.prefix(80))\" is not NAME=value")
                }
                return try escaped(String(entry[..<equals]), field: "Env") + "=" + escaped(String(entry[entry.index(after: equals)...]), field: "Env")
            }).joined(separator: " "))
        }
        for (field, instruction) in [("WorkingDir", "WORKDIR"), ("User", "USER"), ("StopSignal", "STOPSIGNAL")] where UnsupportedOptions.isSet(config[field]) {
            guard let value = config[field] as? String else { throw DockerError.badRequest("commit config field \(field) is not a string") }
            changes.append("\(instruction) " + (try escaped(value, field: field)))
        }
        if UnsupportedOptions.isSet(config["Labels"]) {
            guard let labels = config["Labels"] as? [String: Any] else { throw DockerError.badRequest("commit config field Labels is not an object of strings") }
            changes.append("LABEL " + (try labels.keys.sorted().map { key -> String in
                guard let value = labels[key] as? String else { throw DockerError.badRequest("commit config label \(key.prefix(40)) is not a string") }
                return try escaped(key, field: "Labels") + "=" + escaped(value, field: "Labels")
            }).joined(separator: " "))
        }
        if UnsupportedOptions.isSet(config["ExposedPorts"]) {
            guard let ports = config["ExposedPorts"] as? [String: Any] else { throw DockerError.badRequest("commit config field ExposedPorts is not an object") }
            changes.append("EXPOSE " + (try ports.keys.sorted().map { try escaped($0, field: "ExposedPorts") }).joined(separator: " "))
        }
        return changes
    }

    private static func strings(_ value: Any?, field: String) throws -> [String] {
        guard UnsupportedOptions.isSet(value) else { return [] }
        guard let list = value as? [Any], let strings = list as? [String], strings.count == list.count else {
            throw DockerError.badRequest("commit config field \(field) is not an array of strings")
        }
        return strings
    }

    /// `text` with a backslash before each quote, backslash, `$` and blank: one word that the
    /// agent's processing turns back into `text`. Newlines cannot be carried by a change line.
    static func escaped(_ text: String, field: String) throws -> String {
        guard !text.contains(where: \.isNewline) else { throw DockerError.badRequest("commit config field \(field) holds a line break") }
        var result = ""
        for character in text {
            if character == "\\" || character == "$" || character == "\"" || character == "'" || character.isWhitespace { result.append("\\") }
            result.append(character)
        }
        return result
    }
}
