import API
import Engine
import Foundation
import Hummingbird
import NIOCore

/// A container as a table row and as the detail page's fields (every value from the API's
/// container object, as `vmfork ps --json` prints it).
struct ContainerView {
    let id: String
    let shortID: String
    let name: String
    let image: String
    let state: String
    let running: Bool
    let exited: Bool
    let command: String
    let uptime: String
    let exitCode: String
    let exitReason: String
    /// "0 (exited with 0)", or "" while it runs.
    let exitStatus: String
    let hostname: String
    let memoryMiB: Int
    let pool: String
    let vch: String
    let parent: String
    let labels: String
    let created: String
    let started: String
    let finished: String
    let forkLatency: String
    /// "private / shared" of its own VMs while they live, else "".
    let memory: String

    init(_ info: ContainerInfo, now: Double) {
        id = info.id
        shortID = String(info.id.prefix(12))
        name = info.name
        image = info.image
        state = info.state.rawValue
        running = info.state == .running
        exited = info.state == .exited
        command = Format.command(info.arguments)
        if let started = info.startedAt {
            uptime = info.state == .running ? Format.duration(now - started) : Format.duration((info.finishedAt ?? now) - started) + " (ran)"
        } else {
            uptime = ""
        }
        exitCode = info.exitCode.map(String.init) ?? ""
        exitReason = info.exitReason ?? ""
        exitStatus = info.exitCode.map { code in info.exitReason.map { "\(code) (\($0))" } ?? "\(code)" } ?? ""
        hostname = info.hostname
        memoryMiB = info.memoryMiB
        pool = info.pool ?? ""
        vch = info.labels[VCHRegistry.ownerLabel] ?? ""
        parent = info.parent
        labels = info.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
        created = Format.time(info.createdAt)
        started = Format.time(info.startedAt)
        finished = Format.time(info.finishedAt)
        forkLatency = Format.microseconds(info.forkMicroseconds)
        // The kernel's figures of its own VMs (the API's `?memory=true`), while they live.
        memory = info.memory.map { "\(Format.mib(bytes: $0.privateBytes)) / \(Format.mib(bytes: $0.sharedBytes))" } ?? ""
    }
}

struct Option {
    let value: String
    let label: String
    let selected: Bool
}

extension Pages {
    struct ContainersView {
        let rows: [ContainerView]
        let count: Int
        let empty: Bool
        let error: String?
        let message: String?
        let states: [Option]
        let images: [Option]
        let vchs: [Option]
        let label: String
        let liveSource: String
        let after: Int64
    }

    func containers(_ request: Request, actor: String) async -> Response {
        let state = Self.query(request, "state")
        let image = Self.query(request, "image")
        let label = Self.query(request, "label")
        let vch = Self.query(request, "vch")
        var query: [String] = []
        if !state.isEmpty { query.append("state=\(Form.escapeComponent(state))") }
        if !image.isEmpty { query.append("image=\(Form.escapeComponent(image))") }
        if !label.isEmpty { query.append("label=\(Form.escapeComponent(label))") }
        if !vch.isEmpty { query.append("label=\(Form.escapeComponent("\(VCHRegistry.ownerLabel)=\(vch)"))") }
        query.append("memory=true")
        let listed = await get("/v1/containers?" + query.joined(separator: "&"), as: [ContainerInfo].self, actor: actor)
        let now = Date().timeIntervalSince1970
        let rows = ((try? listed.get()) ?? []).sorted { $0.createdAt > $1.createdAt }.map { ContainerView($0, now: now) }
        let images = ((try? await get("/v1/images", as: [ImageRecord].self, actor: actor).get()) ?? []).map(\.name)
        let vchs = ((try? await get("/v1/vchs", as: [VCHInfo].self, actor: actor).get()) ?? []).map(\.name)
        var live = "/ui/containers?fragment=1"
        for (key, value) in [("state", state), ("image", image), ("label", label), ("vch", vch)] where !value.isEmpty {
            live += "&\(key)=\(Form.escapeComponent(value))"
        }
        let view = ContainersView(
            rows: rows, count: rows.count, empty: rows.isEmpty, error: listed.failureMessage, message: Self.query(request, "message").nilIfEmpty,
            states: [Option(value: "", label: "any state", selected: state.isEmpty)] + ["created", "running", "exited"].map { Option(value: $0, label: $0, selected: $0 == state) },
            images: [Option(value: "", label: "any image", selected: image.isEmpty)] + images.map { Option(value: $0, label: $0, selected: $0 == image) },
            vchs: [Option(value: "", label: "any VCH", selected: vch.isEmpty)] + vchs.map { Option(value: $0, label: $0, selected: $0 == vch) },
            label: label, liveSource: live, after: 0)
        if Self.wantsFragment(request) { return ui.fragment("containers-table", view) }
        return ui.render("containers", view, title: "Containers", section: "containers")
    }

    struct ContainerDetailView {
        let container: ContainerView?
        let inspect: String
        let error: String?
        let message: String?
    }

    func container(_ id: String, actor: String) async -> Response {
        let answer = await api.call(.get, "/v1/containers/\(Form.escapeComponent(id))?memory=true", actor: actor)
        guard answer.ok, let info = try? answer.decode(ContainerInfo.self) else {
            let view = ContainerDetailView(container: nil, inspect: "", error: answer.error?.message ?? "the container does not decode", message: nil)
            return ui.render("container", view, title: "Container \(id)", section: "containers", status: answer.ok ? .internalServerError : .notFound)
        }
        var inspect = String(decoding: answer.body, as: UTF8.self)
        if let object = try? JSONSerialization.jsonObject(with: answer.body),
           let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) {
            inspect = String(decoding: pretty, as: UTF8.self)
        }
        let view = ContainerDetailView(container: ContainerView(info, now: Date().timeIntervalSince1970),
                                       inspect: inspect, error: nil, message: nil)
        return ui.render("container", view, title: "Container \(info.name)", section: "containers")
    }

    /// The container's output as server-sent events: each piece as one JSON string in a
    /// "data:" line, then an "end" event when the container's output ends.
    func logStream(_ id: String, actor: String) async -> Response {
        let answer = await api.send(.get, "/v1/containers/\(Form.escapeComponent(id))/logs?follow=true", actor: actor)
        guard answer.status == 200 else {
            let message = (try? await answer.collect()).map { String(decoding: $0, as: UTF8.self) } ?? "status \(answer.status)"
            return Self.eventStream(events: [("failed", Self.jsonString(message)), ("end", "\"\"")])
        }
        return Self.forward(answer.body, end: true) { buffer in
            "data: \(Self.jsonString(String(buffer: buffer)))\n\n"
        }
    }

    struct ConfirmView {
        let title: String
        let question: String
        let action: String
        let verb: String
        let back: String
        let fields: [Option]
        let forceOption: Bool
        let error: String?
    }

    func confirmContainer(_ id: String, action: String, actor: String) async -> Response {
        guard ["stop", "kill", "remove"].contains(action) else {
            return ui.render("message", MessageView(text: "Unknown action \(action): choose stop, kill or remove."), title: "Refused",
                             section: "containers", status: .badRequest)
        }
        let info = try? await get("/v1/containers/\(Form.escapeComponent(id))", as: ContainerInfo.self, actor: actor).get()
        let name = info?.name ?? id
        let question = switch action {
        case "stop": "Stop container \(name)? Its program gets SIGTERM, and is powered off after 10 seconds if it has not ended."
        case "kill": "Kill container \(name) with SIGKILL now?"
        default: "Remove container \(name)\(info?.state == .running ? " (it is running: it will be killed first)" : "")? Its logs go with it."
        }
        let view = ConfirmView(title: "\(action.capitalized) \(name)", question: question, action: "/ui/containers/\(Form.escapeComponent(id))/act",
                               verb: action.capitalized, back: "/ui/containers/\(Form.escapeComponent(id))",
                               fields: [Option(value: action, label: "action", selected: true)], forceOption: false, error: nil)
        return ui.render("confirm", view, title: view.title, section: "containers")
    }

    func actOnContainer(_ request: Request, id: String, actor: String) async throws -> Response {
        let form = try await Form.body(request)
        let action = form["action"] ?? ""
        let path = "/v1/containers/\(Form.escapeComponent(id))"
        let answer: LocalAgentAPI.Collected
        switch action {
        case "stop": answer = await api.call(.post, path + "/stop?grace=10", actor: actor)
        case "kill": answer = await api.call(.post, path + "/kill?signal=9", actor: actor)
        case "remove": answer = await api.call(.delete, path + "?force=true", actor: actor)
        default:
            return ui.render("message", MessageView(text: "Unknown action \(action)."), title: "Refused", section: "containers", status: .badRequest)
        }
        let done = switch action {
        case "stop": "stopped"
        case "kill": "killed"
        default: "removed"
        }
        let message = answer.ok ? "Container \(id.prefix(12)) \(done)." : "Could not \(action) \(id.prefix(12)): \(answer.error?.message ?? "status \(answer.status)")"
        return Response.redirect(to: "/ui/containers?message=\(Form.escapeComponent(message))")
    }

    // MARK: Server-sent events

    static func jsonString(_ text: String) -> String {
        let data = (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func eventStream(events: [(name: String, data: String)]) -> Response {
        let text = events.map { "event: \($0.name)\ndata: \($0.data)\n\n" }.joined()
        return Response(status: .ok, headers: sseHeaders, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static let sseHeaders: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-store"]

    /// An API body that streams, as server-sent events: `transform` turns each piece into
    /// event text; with `end`, an "end" event follows the body's end (so the page's
    /// EventSource does not connect again and replay the output). Each piece is written to
    /// the page before the API's stream makes the next (its writes wait for the network),
    /// and a page that leaves fails the write, which ends the API's follow loop.
    static func forward(_ body: ResponseBody, end: Bool, transform: @escaping @Sendable (ByteBuffer) -> String) -> Response {
        Response(status: .ok, headers: sseHeaders, body: ResponseBody { writer in
            try await body.write(EventStreamWriter(page: writer, transform: transform, end: end))
        })
    }
}

/// Writes an API body's pieces to the page as server-sent events; at the body's end, the
/// "end" event (when asked) and the page's own end.
private struct EventStreamWriter: ResponseBodyWriter {
    var page: any ResponseBodyWriter
    let transform: @Sendable (ByteBuffer) -> String
    let end: Bool

    mutating func write(_ buffer: ByteBuffer) async throws {
        try await page.write(ByteBuffer(string: transform(buffer)))
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        if end { try await page.write(ByteBuffer(string: "event: end\ndata: \"\"\n\n")) }
        try await page.finish(nil)
    }
}

struct MessageView {
    let text: String
}

extension Result {
    var failureMessage: String? {
        if case .failure(let error) = self { return "\(error)" }
        return nil
    }
}

extension String {
    var nilIfEmpty: String? { isEmpty ? nil : self }
}
