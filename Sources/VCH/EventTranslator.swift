import API
import Engine
import Foundation
import Synchronization

/// The host agent's audit events as Docker's event stream shows them, for this VCH's
/// containers only (and the agent's images, which all VCHs share). The VCH remembers the
/// containers it has seen, so their events still resolve after they are removed.
final class EventTranslator: Sendable {
    struct Known: Sendable {
        let owned: Bool
        let name: String
        let image: String
        let labels: [String: String]
    }

    /// The agent's event (GET /v1/events), as its API shows it.
    typealias AgentEvent = EventBody

    let owner: String
    private let known = Mutex<[String: Known]>([:])

    init(owner: String) { self.owner = owner }

    func remember(_ info: ContainerInfo) {
        let owned = info.labels[VirtualContainerHost.Label.owner] == owner
        let name = info.name.hasPrefix(owner + ".") ? String(info.name.dropFirst(owner.count + 1)) : info.name
        let entry = Known(owned: owned, name: name, image: info.image, labels: VirtualContainerHost.userLabels(info))
        known.withLock { table in
            if table.count > 10_000 { table.removeAll() }
            table[info.id] = entry
        }
    }

    func lookup(_ id: String) -> Known? { known.withLock { $0[id] } }

    func forget(foreign id: String) {
        known.withLock { $0[id] = Known(owned: false, name: "", image: "", labels: [:]) }
    }

    /// The Docker action of an agent event type, nil for those Docker does not show.
    static func action(_ type: String) -> (kind: String, action: String)? {
        switch type {
        case "container.create": ("container", "create")
        case "container.start": ("container", "start")
        case "container.exit": ("container", "die")
        case "container.stop": ("container", "stop")
        case "container.kill": ("container", "kill")
        case "container.remove": ("container", "destroy")
        case "container.commit": ("container", "commit")
        case "image.add": ("image", "tag")
        case "image.pull": ("image", "pull")
        case "image.remove": ("image", "delete")
        default: nil
        }
    }

    func dockerEvent(_ event: AgentEvent, container: Known?) -> DockerEvent? {
        guard event.result == "ok", let (kind, action) = Self.action(event.type) else { return nil }
        var attributes: [String: String] = [:]
        let detail = (try? JSONSerialization.jsonObject(with: Data(event.detail.utf8)) as? [String: Any]) ?? [:]
        if kind == "container" {
            guard let container, container.owned else { return nil }
            attributes = container.labels
            attributes["name"] = container.name
            attributes["image"] = container.image
            if let code = detail["exitCode"] as? Int { attributes["exitCode"] = "\(code)" }
            if let signal = detail["signal"] as? Int { attributes["signal"] = "\(signal)" }
        } else {
            attributes["name"] = DockerNames.tag(event.subject)
        }
        return DockerEvent(status: action, id: event.subject, from: kind == "container" ? container?.image : nil, Type: kind,
                           Action: action, Actor: .init(ID: event.subject, Attributes: attributes), scope: "local",
                           time: Int(event.time), timeNano: Int(event.time * 1e9))
    }

    /// Whether an event passes `docker events --filter`s (type, event, container, image, label).
    static func matches(_ event: DockerEvent, _ filters: [String: [String]]) -> Bool {
        if let types = filters["type"], !types.contains(event.Type) { return false }
        if let actions = filters["event"], !actions.contains(event.Action) { return false }
        if let containers = filters["container"] {
            guard event.Type == "container", containers.contains(where: { event.Actor.ID.hasPrefix($0) || event.Actor.Attributes["name"] == $0 }) else { return false }
        }
        if let images = filters["image"] {
            let image = event.Type == "container" ? event.Actor.Attributes["image"] ?? "" : event.Actor.ID
            guard images.contains(where: { DockerNames.imageCandidates($0).contains(image) }) else { return false }
        }
        for label in filters["label"] ?? [] {
            let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
            guard let value = event.Actor.Attributes[parts[0]], parts.count == 1 || value == parts[1] else { return false }
        }
        return true
    }
}

extension VirtualContainerHost {
    /// `GET /events`: from `since` (default now) until `until` (default: follow for ever), one
    /// JSON object a line, filtered.
    func events(_ request: DockerRequest) async throws -> DockerResponse {
        let filters = try request.filters()
        let known: Set<String> = ["type", "event", "container", "image", "label"]
        if let unknown = filters.keys.sorted().first(where: { !known.contains($0) }) {
            throw DockerError.badRequest("invalid filter '\(unknown)' (this VCH filters events by \(known.sorted().joined(separator: ", ")))")
        }
        func time(_ name: String) throws -> Double? {
            guard let text = request.string(name), !text.isEmpty else { return nil }
            guard let value = Double(text), value.isFinite, value >= 0 else { throw DockerError.badRequest("\(name)=\(text) is not a Unix time") }
            return value
        }
        let now = Date().timeIntervalSince1970
        let since = try time("since") ?? now
        let until = try time("until")
        let types = Self.agentEventTypes.joined(separator: ",")
        var path = "/v1/events?since=\(since)&type=\(types)&limit=10000"
        if let until { path += "&until=\(until)" }
        if until.map({ $0 > now }) ?? true {
            path += "&follow=true"
            if let until { path += "&timeout=\(max(1, Int((until - now).rounded(.up))))" }
        }
        let source = agent.stream(path)
        let (stream, continuation) = AsyncThrowingStream<Data, Error>.makeStream()
        let task = Task { [self] in
            var pending = Data()
            let encoder = JSONEncoder()
            do {
                for try await chunk in source {
                    pending.append(chunk)
                    // A whole answer (not following) is one JSON array; a follow is one object a line.
                    var objects: [AgentEventLine] = []
                    if pending.first == UInt8(ascii: "[") {
                        if let list = try? JSONDecoder().decode([EventTranslator.AgentEvent].self, from: pending) {
                            objects = list.map { .event($0) }
                            pending.removeAll()
                        }
                    } else {
                        while let newline = pending.firstIndex(of: 0x0A) {
                            let line = pending[pending.startIndex..<newline]
                            pending.removeSubrange(pending.startIndex...newline)
                            if let event = try? JSONDecoder().decode(EventTranslator.AgentEvent.self, from: line) { objects.append(.event(event)) }
                        }
                    }
                    for case .event(let event) in objects {
                        let container = event.type.hasPrefix("container.") ? await self.knownContainer(event.subject) : nil
                        guard let docker = self.events.dockerEvent(event, container: container), EventTranslator.matches(docker, filters) else { continue }
                        continuation.yield(try encoder.encode(docker) + Data([0x0A]))
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return DockerResponse(headers: [("Content-Type", "application/json")], body: .stream(stream))
    }

    private enum AgentEventLine { case event(EventTranslator.AgentEvent) }

    static let agentEventTypes = ["container.create", "container.start", "container.exit", "container.stop", "container.kill",
                                  "container.remove", "container.commit", "image.add", "image.pull", "image.remove"]

    /// What the VCH knows of a container an event names, asking the agent once when new.
    func knownContainer(_ id: String) async -> EventTranslator.Known? {
        if let known = events.lookup(id) { return known }
        if let info = try? await agent.get("/v1/containers/\(AgentBackend.escape(id))", as: ContainerInfo.self) {
            events.remember(info)
        } else {
            events.forget(foreign: id)
        }
        return events.lookup(id)
    }
}
